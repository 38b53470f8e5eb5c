//! A connection's outbound queue: what the router and the connection's own reader hand
//! to its writer. The queue is bounded in bytes (`outbound_queue_bytes`), not messages;
//! going over the bound disconnects the connection as a slow consumer at once, so no
//! sender ever waits on a client that does not read.

use std::net::Shutdown as SocketShutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_channel::{Receiver, Sender, TrySendError};

use crate::metrics::DropReason;
use crate::runtime::Conn;

/// One line queued for a client.
pub enum Out {
    /// A delivery `from X: text`: a range of a buffer shared by every recipient of the
    /// messages of one read; counted as delivered once written.
    Delivery(Shared),
    /// A line the server originates (`error: ...`), not counted as a delivery.
    Server(Vec<u8>),
}

impl Out {
    /// Bytes this item keeps alive while it is queued (see [`Queue`]'s `pinned`).
    pub fn pinned(&self) -> usize {
        match self {
            Out::Delivery(line) => line.backing_len(),
            Out::Server(_) => 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Out::Delivery(line) => line.bytes(),
            Out::Server(line) => line,
        }
    }
}

/// A range of a shared buffer: one delivery line without a copy per recipient.
#[derive(Clone)]
pub struct Shared {
    buf: Arc<[u8]>,
    start: u32,
    end: u32,
}

impl Shared {
    /// `buf[range]`, which must be in bounds.
    pub fn new(buf: Arc<[u8]>, range: std::ops::Range<usize>) -> Shared {
        assert!(range.start <= range.end && range.end <= buf.len());
        Shared {
            buf,
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    /// Bytes of the buffer this line keeps alive (its own and its neighbours').
    pub fn backing_len(&self) -> usize {
        self.buf.len()
    }

    /// The same line in a buffer of its own, which keeps nothing else alive.
    pub fn detached(&self) -> Shared {
        let bytes = self.bytes();
        Shared {
            buf: bytes.into(),
            start: 0,
            end: bytes.len() as u32,
        }
    }
}

/// State shared by every handle of one connection's queue and its writer.
pub struct Queue {
    /// Bytes queued or being written, not yet on the socket.
    queued: AtomicUsize,
    /// The bound on `queued`.
    limit: usize,
    /// Bytes of shared read buffers that queued deliveries keep alive, counted once per
    /// delivery. Kept within `limit` by queueing copies instead, so that a client that
    /// does not read cannot keep whole reads alive through one short line in each.
    pinned: AtomicUsize,
    /// Set once the connection was cut off as a slow consumer.
    kicked: AtomicBool,
    /// The socket, so that a slow consumer's blocked write fails at once.
    stream: Conn,
}

/// A handle to put lines into a connection's queue. The queue closes when the last
/// handle is dropped; the writer then flushes what is queued and closes the socket.
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Out>,
    queue: Arc<Queue>,
}

/// The writer's end of the queue.
pub struct Inbox {
    pub rx: Receiver<Out>,
    pub queue: Arc<Queue>,
}

/// A new queue for `stream`, holding at most `limit` bytes.
pub fn new(stream: Conn, limit: usize) -> (Outbox, Inbox) {
    let (tx, rx) = async_channel::unbounded();
    let queue = Arc::new(Queue {
        queued: AtomicUsize::new(0),
        limit,
        pinned: AtomicUsize::new(0),
        kicked: AtomicBool::new(false),
        stream,
    });
    (
        Outbox {
            tx,
            queue: queue.clone(),
        },
        Inbox { rx, queue },
    )
}

impl Outbox {
    /// Queues a line. Over the byte bound, the connection is cut off as a slow consumer.
    pub fn send(&self, out: Out) -> Result<(), DropReason> {
        let out = match out {
            // Only the router queues deliveries, so this check and the add below do not race.
            Out::Delivery(line)
                if self.queue.pinned.load(Ordering::Acquire) + line.backing_len()
                    > self.queue.limit =>
            {
                Out::Delivery(line.detached())
            }
            out => out,
        };
        let n = out.bytes().len();
        let before = self.queue.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.queue.limit {
            self.queue.queued.fetch_sub(n, Ordering::AcqRel);
            self.queue.kick();
            return Err(DropReason::SlowConsumer);
        }
        let pinned = out.pinned();
        self.queue.pinned.fetch_add(pinned, Ordering::AcqRel);
        match self.tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_) | TrySendError::Full(_)) => {
                self.queue.unpin(pinned);
                self.queue.queued.fetch_sub(n, Ordering::AcqRel);
                if self.queue.is_kicked() {
                    Err(DropReason::SlowConsumer)
                } else {
                    Err(DropReason::RecipientGone)
                }
            }
        }
    }
}

impl Queue {
    /// Cuts the connection off as a slow consumer: its socket is shut down (a blocked
    /// write fails, the reader sees the end) and nothing more is queued.
    pub fn kick(&self) {
        if !self.kicked.swap(true, Ordering::AcqRel) {
            let _ = self.stream.shutdown(SocketShutdown::Both);
        }
    }

    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Marks `n` bytes as written (or dropped).
    pub fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Marks an item taken out of the queue: `n` is its [`Out::pinned`].
    pub fn unpin(&self, n: usize) {
        self.pinned.fetch_sub(n, Ordering::AcqRel);
    }
}

//! A connection's outbound queue: what the router and the connection's own reader hand
//! to its writer. The queue is bounded in bytes (`outbound_queue_bytes`), not messages;
//! going over the bound disconnects the connection as a slow consumer at once, so no
//! sender ever waits on a client that does not read.
//!
//! The writer is woken only when the queue goes from empty to non-empty, and an empty
//! queue holds no memory: an idle connection's queue is a few words.

use std::collections::VecDeque;
use std::future::Future;
use std::net::Shutdown as SocketShutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

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
    /// The lines themselves, and what the writer needs to know to wait for them.
    lines: Mutex<Lines>,
    /// Live [`Outbox`] handles: the queue closes when the last one is dropped.
    senders: AtomicUsize,
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

/// The part of the queue behind its lock.
#[derive(Default)]
struct Lines {
    /// Lines not yet taken by the writer, oldest first; unallocated while empty.
    items: VecDeque<Out>,
    /// The writer, when it waits for the queue to become non-empty.
    waiting: Option<Waker>,
    /// No more lines will come: every handle is gone, or the writer gave up.
    closed: bool,
}

/// A handle to put lines into a connection's queue. The queue closes when the last
/// handle is dropped; the writer then flushes what is queued and closes the socket.
pub struct Outbox {
    queue: Arc<Queue>,
}

/// The writer's end of the queue.
pub struct Inbox {
    pub queue: Arc<Queue>,
}

/// A new queue for `stream`, holding at most `limit` bytes.
pub fn new(stream: Conn, limit: usize) -> (Outbox, Inbox) {
    let queue = Arc::new(Queue {
        lines: Mutex::default(),
        senders: AtomicUsize::new(1),
        queued: AtomicUsize::new(0),
        limit,
        pinned: AtomicUsize::new(0),
        kicked: AtomicBool::new(false),
        stream,
    });
    (
        Outbox {
            queue: queue.clone(),
        },
        Inbox { queue },
    )
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.queue.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            queue: self.queue.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.queue.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waiting = {
                let mut lines = self.queue.lock();
                lines.closed = true;
                lines.waiting.take()
            };
            if let Some(writer) = waiting {
                writer.wake();
            }
        }
    }
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
        let mut lines = self.queue.lock();
        if lines.closed {
            drop(lines);
            self.queue.unpin(pinned);
            self.queue.queued.fetch_sub(n, Ordering::AcqRel);
            return if self.queue.is_kicked() {
                Err(DropReason::SlowConsumer)
            } else {
                Err(DropReason::RecipientGone)
            };
        }
        lines.items.push_back(out);
        // Only a writer that found the queue empty waits: this wakes it once per burst.
        let waiting = lines.waiting.take();
        drop(lines);
        if let Some(writer) = waiting {
            writer.wake();
        }
        Ok(())
    }
}

impl Inbox {
    /// The next line, waiting while the queue is empty; `None` once it is closed and empty.
    pub fn recv(&self) -> impl Future<Output = Option<Out>> + '_ {
        futures::future::poll_fn(move |cx| {
            let mut lines = self.queue.lock();
            if let Some(out) = lines.items.pop_front() {
                Poll::Ready(Some(out))
            } else if lines.closed {
                Poll::Ready(None)
            } else {
                lines.items = VecDeque::new();
                lines.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Hands queued lines to `take` without waiting, until the queue is empty or `take`
    /// returns false.
    pub fn take_more(&self, mut take: impl FnMut(Out) -> bool) {
        let mut lines = self.queue.lock();
        while let Some(out) = lines.items.pop_front() {
            if !take(out) {
                break;
            }
        }
    }

    /// Closes the queue (senders get an error from now on) and returns what was left in it.
    pub fn close(&self) -> VecDeque<Out> {
        let mut lines = self.queue.lock();
        lines.closed = true;
        std::mem::take(&mut lines.items)
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        // A panic never happens while the lock is held (it only pushes and pops); should
        // one ever, the lines are still consistent.
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime;

    /// A queue on a real (loopback) socket, as the server makes them.
    fn queue(limit: usize) -> (Outbox, Inbox, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let conn = Conn::from_accepted(accepted.into()).unwrap();
        let (outbox, inbox) = new(conn, limit);
        (outbox, inbox, client)
    }

    fn server(line: &str) -> Out {
        Out::Server(line.as_bytes().to_vec())
    }

    fn text(out: Option<Out>) -> Option<String> {
        out.map(|out| String::from_utf8(out.bytes().to_vec()).unwrap())
    }

    #[test]
    fn lines_come_out_in_order_and_the_queue_closes_with_its_last_handle() {
        let (outbox, inbox, _client) = queue(1000);
        let other = outbox.clone();
        outbox.send(server("a\n")).unwrap();
        other.send(server("b\n")).unwrap();
        drop(outbox);
        runtime::block_on(async {
            assert_eq!(text(inbox.recv().await).as_deref(), Some("a\n"));
            assert_eq!(text(inbox.recv().await).as_deref(), Some("b\n"));
            // One handle is left: the writer waits, and a line sent later wakes it.
            let later = async {
                other.send(server("c\n")).unwrap();
                drop(other);
            };
            let (got, ()) = futures::join!(inbox.recv(), later);
            assert_eq!(text(got).as_deref(), Some("c\n"));
            assert!(
                inbox.recv().await.is_none(),
                "closed once every handle is gone"
            );
        });
    }

    #[test]
    fn take_more_stops_when_asked() {
        let (outbox, inbox, _client) = queue(1000);
        for line in ["1\n", "2\n", "3\n"] {
            outbox.send(server(line)).unwrap();
        }
        let mut taken = Vec::new();
        inbox.take_more(|out| {
            taken.push(out.bytes().to_vec());
            taken.len() < 2
        });
        assert_eq!(taken, vec![b"1\n".to_vec(), b"2\n".to_vec()]);
        let left: Vec<_> = inbox
            .close()
            .into_iter()
            .map(|o| o.bytes().to_vec())
            .collect();
        assert_eq!(left, vec![b"3\n".to_vec()]);
        // A closed queue takes nothing more.
        assert_eq!(outbox.send(server("4\n")), Err(DropReason::RecipientGone));
    }

    #[test]
    fn going_over_the_byte_bound_kicks_the_client() {
        let (outbox, inbox, mut client) = queue(10);
        outbox.send(server("12345678\n")).unwrap();
        assert_eq!(outbox.send(server("9\n")), Err(DropReason::SlowConsumer));
        assert!(inbox.queue.is_kicked());
        // The socket was shut down: the client sees the end.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
        assert!(rest.is_empty());
        // What was queued before stays for the writer to account for.
        assert_eq!(inbox.close().len(), 1);
    }
}

//! A connection's outbound queue: what the router and the connection's own reader hand
//! to its writer. The queue is bounded in bytes and judged over time (ARCHITECTURE §4b): it
//! may pass `outbound_queue_bytes` for `slow_consumer_grace`, never
//! `outbound_queue_hard_bytes`, and all queues together stay within
//! `outbound_total_bytes` (see [`Budget`]). Going past a bound cuts the connection off as
//! a slow consumer at once, so no sender ever waits on a client that does not read.
//!
//! The writer is woken only when the queue goes from empty to non-empty, and an empty
//! queue holds no memory: an idle connection's queue is a few words.

use std::collections::VecDeque;
use std::future::Future;
use std::net::Shutdown as SocketShutdown;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::metrics::{CloseReason, DropReason, SlowReason};
use crate::protocol;
use crate::runtime::Conn;
pub use crate::server::badlines::BadLine;
use crate::server::badlines::BadLines;
use crate::server::budget::{self, Held};

/// The memory bound every queue is measured against (see [`budget::Budget`]).
pub type Budget = budget::Budget<Queue>;
pub use crate::server::conninfo::Closing;
use crate::server::conninfo::ConnInfo;
pub use crate::server::line::{Out, Shared};

/// State shared by every handle of one connection's queue and its writer.
pub struct Queue {
    /// The lines themselves, and what the writer needs to know to wait for them.
    lines: Mutex<Lines>,
    /// Live [`Outbox`] handles: the queue closes when the last one is dropped.
    senders: AtomicUsize,
    /// Bytes queued or being written, not yet on the socket.
    queued: AtomicUsize,
    /// When `queued` went above the soft bound (a [`Budget::now`] stamp); 0 while it is
    /// not above it. The grace runs from here.
    over_since: AtomicU64,
    /// Bytes of shared read buffers that queued deliveries keep alive beyond their own
    /// (the other lines of the reads they came from), counted once per item and bounded
    /// by [`Out::within_pinned_share`], so that a client that does not read cannot keep
    /// whole reads alive through one short line in each.
    pinned: AtomicUsize,
    /// Why the connection was cut off as a slow consumer (a [`SlowReason`]); 0 while it
    /// was not.
    cut: AtomicU8,
    /// The bounds, and the total this queue's bytes count against.
    budget: Arc<Budget>,
    /// The socket, so that a slow consumer's blocked write fails at once.
    stream: Conn,
    /// Who the connection is and what it did, for its close line and `/connections`.
    pub info: ConnInfo,
    /// What the wakers of the connection's reader and writer share: the two halves of the
    /// connection's one task (`runtime::join_halves`) wake apart through it. The drain
    /// and a kick wake the reader here ([`Queue::wake_reader`]): no waker is registered
    /// (nor a listener on the drain signal allocated) by every read. In an `Arc` of its
    /// own, not in the queue: a waker left in the socket's readiness slot must not keep
    /// the queue, and through it the socket, alive once the connection has ended.
    pub(super) halves: Arc<crate::runtime::Wakes>,
}

/// The part of the queue behind its lock.
#[derive(Default)]
struct Lines {
    /// Lines not yet taken by the writer, oldest first; unallocated while empty.
    items: VecDeque<Out>,
    /// The writer, when it waits for the queue to become non-empty.
    waiting: Option<Waker>,
    /// The writer, when a write of it is blocked (the client reads nothing) and the queue
    /// is not yet over the soft bound: the push that takes it over wakes the writer, so
    /// that the grace is enforced from then on whatever the socket does.
    blocked: Option<Waker>,
    /// No more lines will come: every handle is gone, the writer gave up, or the
    /// connection was cut off.
    closed: bool,
    /// Deliveries thrown away when the connection was cut off, for the writer to report.
    cut_dropped: u64,
    /// The rate of refused lines this connection sends (answers cost queue space).
    bad: BadLines,
    /// Set once the connection went over the bad-line rate: it is being closed.
    too_many_bad: bool,
    /// Since when the writer has owed the lines queued (a [`Budget::now`] stamp): set
    /// when a line arrives in an empty queue, and when the writer leaves lines behind.
    /// `achat_delivery_queue_wait_seconds` measures from here to the write.
    owed_since: u64,
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

/// A new queue for `stream`, measured against `budget`.
pub fn new(stream: Conn, budget: Arc<Budget>, info: ConnInfo) -> (Outbox, Inbox) {
    let queue = Arc::new(Queue {
        lines: Mutex::default(),
        senders: AtomicUsize::new(1),
        queued: AtomicUsize::new(0),
        over_since: AtomicU64::new(0),
        pinned: AtomicUsize::new(0),
        cut: AtomicU8::new(0),
        budget,
        stream,
        info,
        halves: Arc::default(),
    });
    queue
        .budget
        .register(queue.info.conn, Arc::downgrade(&queue));
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
    /// Queues a line. Past a bound (see the module's comment), the connection is cut off
    /// as a slow consumer.
    pub fn send(&self, out: Out) -> Result<(), DropReason> {
        let queue = &*self.queue;
        let budget = &*queue.budget;
        // Only the router queues deliveries, so this check and the add below do not race.
        let out = out.within_pinned_share(queue.pinned.load(Ordering::Acquire), budget.soft());
        let n = out.bytes().len();
        let now_queued = queue.queued.fetch_add(n, Ordering::AcqRel) + n;
        if now_queued > budget.soft() {
            let over = if now_queued > budget.hard() {
                Some(SlowReason::Hard)
            } else if !queue.within_grace() {
                Some(SlowReason::Grace)
            } else {
                None
            };
            if let Some(why) = over {
                queue.queued.fetch_sub(n, Ordering::AcqRel);
                queue.cut(why);
                return Err(DropReason::SlowConsumer);
            }
        }
        let pinned = out.pinned();
        queue.pinned.fetch_add(pinned, Ordering::AcqRel);
        let mut lines = queue.lock();
        if lines.closed {
            drop(lines);
            queue.unpin(pinned);
            queue.queued.fetch_sub(n, Ordering::AcqRel);
            return if queue.is_cut() {
                Err(DropReason::SlowConsumer)
            } else {
                Err(DropReason::RecipientGone)
            };
        }
        if lines.items.is_empty() {
            lines.owed_since = budget.now();
        }
        lines.items.push_back(out);
        // Only a writer that found the queue empty waits: this wakes it once per burst.
        let waiting = lines.waiting.take();
        drop(lines);
        if let Some(writer) = waiting {
            writer.wake();
        }
        if budget.add(n) {
            budget.enforce();
        }
        Ok(())
    }

    /// Counts one refused line of this connection against the bad-line rate (see
    /// `badlines`), before its answer is built.
    pub fn bad_line(&self) -> BadLine {
        let mut lines = self.queue.lock();
        if lines.too_many_bad {
            return BadLine::Closing;
        }
        if lines.bad.allow(Instant::now()) {
            return BadLine::Answer;
        }
        lines.too_many_bad = true;
        BadLine::TooMany
    }
}

impl Outbox {
    /// The connection's figures.
    pub fn info(&self) -> &ConnInfo {
        &self.queue.info
    }

    /// The connection's socket (its reader reads it through here).
    pub fn stream(&self) -> &Conn {
        self.queue.stream()
    }

    /// Closes the connection for `why` with a last notice ([`Queue::close_for`]).
    pub fn close_for(&self, why: CloseReason, notice: &str) -> Closing {
        self.queue.close_for(why, notice)
    }

    /// Ends the connection's reading side: its reader sees the end of input and the
    /// connection closes once the writer has sent what is queued.
    pub fn stop_reading(&self) {
        let _ = self.queue.stream.shutdown(SocketShutdown::Read);
        self.queue.wake_reader();
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

    /// When `more`, hands queued lines to `take` without waiting, until the queue is
    /// empty or `take` returns false. Returns since when the writer has owed the lines it
    /// took (see `owed_since`).
    pub fn take_more(&self, more: bool, mut take: impl FnMut(Out) -> bool) -> u64 {
        let mut lines = self.queue.lock();
        if more {
            while let Some(out) = lines.items.pop_front() {
                if !take(out) {
                    break;
                }
            }
        }
        let since = lines.owed_since;
        if !lines.items.is_empty() {
            lines.owed_since = self.queue.budget.now();
        }
        since
    }

    /// Closes the queue (senders get an error from now on) and returns what was left in
    /// it, with the count of deliveries thrown away earlier when it was cut off.
    pub fn close(&self) -> (VecDeque<Out>, u64) {
        let mut lines = self.queue.lock();
        lines.closed = true;
        (
            std::mem::take(&mut lines.items),
            std::mem::take(&mut lines.cut_dropped),
        )
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

    /// Whether the queue, now above the soft bound, may stay there: true within the
    /// grace (which starts now if it just went over).
    fn within_grace(&self) -> bool {
        let now = self.budget.now();
        match self
            .over_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                let blocked = self.lock().blocked.take();
                if let Some(writer) = blocked {
                    writer.wake();
                }
                true
            }
            Err(since) => now.saturating_sub(since) <= self.budget.grace_ns(),
        }
    }

    /// While the queue is above the soft bound, the grace it has left.
    pub fn grace_left(&self) -> Option<Duration> {
        match self.over_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(self.budget.grace_left(since)),
        }
    }

    /// Resolves once the queue is above the soft bound (at once if it is): a writer whose
    /// write is blocked waits for this beside the write, and then for the grace left.
    pub fn went_over(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.over_since.load(Ordering::Acquire) != 0 {
                return Poll::Ready(());
            }
            self.lock().blocked = Some(cx.waker().clone());
            // Went over between the first look and the registration: nobody will wake us.
            if self.over_since.load(Ordering::Acquire) != 0 {
                return Poll::Ready(());
            }
            Poll::Pending
        })
    }

    /// Cuts the connection off as a slow consumer: what is queued is thrown away (its
    /// bytes leave the budget at once), its socket is shut down (a blocked write fails,
    /// the reader sees the end) and nothing more is queued. False if it already was.
    pub fn cut(&self, why: SlowReason) -> bool {
        if self
            .cut
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        // Before the socket is shut down: the reader, seeing the end, would otherwise record
        // `client_closed` first, and the close line would not say why the connection ended.
        self.info.ending(why.close_reason());
        let (items, waiting) = {
            let mut lines = self.lock();
            lines.closed = true;
            let items = std::mem::take(&mut lines.items);
            lines.cut_dropped += items.iter().map(Out::deliveries).sum::<u64>();
            (items, lines.waiting.take())
        };
        for out in items {
            self.release(out.bytes().len());
            self.unpin(out.pinned());
        }
        let _ = self.stream.shutdown(SocketShutdown::Both);
        if let Some(writer) = waiting {
            writer.wake();
        }
        true
    }

    /// Queues `out` as the connection's last line and ends its reading side: the reader
    /// sees the end of input, and the writer sends what is queued, this line last, then
    /// closes. False when the queue was closed already (the connection is ending).
    pub fn finish_with(&self, out: Out) -> bool {
        let n = out.bytes().len();
        let mut lines = self.lock();
        if lines.closed {
            return false;
        }
        self.queued.fetch_add(n, Ordering::AcqRel);
        if lines.items.is_empty() {
            lines.owed_since = self.budget.now();
        }
        lines.items.push_back(out);
        let waiting = lines.waiting.take();
        drop(lines);
        if let Some(writer) = waiting {
            writer.wake();
        }
        // One short line: the total may pass its bound by that much until the next check.
        self.budget.add(n);
        let _ = self.stream.shutdown(SocketShutdown::Read);
        // A WebSocket session's reader is not woken by the socket (see Conn::shutdown).
        self.wake_reader();
        true
    }

    /// Closes the connection for `why`: records it as the close reason unless one is
    /// recorded already, and then (only then) queues `notice: <notice>` as its last line
    /// and stops its reader; its writer sends what is queued and closes. Closing twice
    /// does nothing more the second time.
    pub fn close_for(&self, why: CloseReason, notice: &str) -> Closing {
        let conn = self.info.conn;
        if !self.info.ending(why) {
            return Closing::Already {
                conn,
                reason: self.info.reason(),
            };
        }
        self.finish_with(Out::Server(protocol::format_notice(notice)));
        Closing::Now {
            conn,
            login: self.info.login.get().cloned(),
        }
    }

    /// The connection's socket (its writer writes it through here).
    pub fn stream(&self) -> &Conn {
        &self.stream
    }

    /// Wakes the reader if it waits for input (the drain has begun, or its reads were
    /// stopped: it must look): the reading half of the connection's task is polled again.
    pub fn wake_reader(&self) {
        self.halves.wake_first();
    }

    /// Why the connection was cut off, if it was.
    pub fn cut_reason(&self) -> Option<SlowReason> {
        SlowReason::from_u8(self.cut.load(Ordering::Acquire))
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire) != 0
    }

    /// Nanoseconds from `since` (a stamp of `owed_since`) to now.
    pub fn waited_ns(&self, since: u64) -> u64 {
        self.budget.now().saturating_sub(since)
    }

    /// Bytes queued or being written now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Marks `n` bytes as written (or dropped). Back at or under the soft bound, the
    /// grace is reset: a burst worked off in time is forgotten.
    pub fn release(&self, n: usize) {
        let left = self.queued.fetch_sub(n, Ordering::AcqRel) - n;
        self.budget.sub(n);
        if left <= self.budget.soft() && self.over_since.load(Ordering::Relaxed) != 0 {
            self.over_since.store(0, Ordering::Release);
        }
    }

    /// Marks an item taken out of the queue: `n` is its [`Out::pinned`].
    pub fn unpin(&self, n: usize) {
        self.pinned.fetch_sub(n, Ordering::AcqRel);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Whatever was still counted (lines left when a writer ended early) leaves the total.
        self.budget.sub(*self.queued.get_mut());
        self.budget.forget(self.info.conn);
    }
}

impl Held for Queue {
    fn queued(&self) -> usize {
        Queue::queued(self)
    }
    fn is_cut(&self) -> bool {
        Queue::is_cut(self)
    }
    fn cut(&self, why: SlowReason) -> bool {
        Queue::cut(self, why)
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;

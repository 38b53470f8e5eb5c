//! A connection's outbound queue: what the router and the connection's own reader hand
//! to its writer. The queue is bounded in bytes and judged over time (DESIGN §4b): it
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

use crate::metrics::{DropReason, SlowReason};
use crate::runtime::Conn;
use crate::server::badlines::BadLines;
use crate::server::budget::Budget;

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
    /// When `queued` went above the soft bound (a [`Budget::now`] stamp); 0 while it is
    /// not above it. The grace runs from here.
    over_since: AtomicU64,
    /// Bytes of shared read buffers that queued deliveries keep alive, counted once per
    /// delivery. Kept within the soft bound by queueing copies instead, so that a client
    /// that does not read cannot keep whole reads alive through one short line in each.
    pinned: AtomicUsize,
    /// Why the connection was cut off as a slow consumer (a [`SlowReason`]); 0 while it
    /// was not.
    cut: AtomicU8,
    /// The bounds, and the total this queue's bytes count against.
    budget: Arc<Budget>,
    /// This queue's entry in the budget's list of queues.
    id: u64,
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
    /// No more lines will come: every handle is gone, the writer gave up, or the
    /// connection was cut off.
    closed: bool,
    /// Deliveries thrown away when the connection was cut off, for the writer to report.
    cut_dropped: u64,
    /// The rate of refused lines this connection sends (answers cost queue space).
    bad: BadLines,
    /// Set once the connection went over the bad-line rate: it is being closed.
    too_many_bad: bool,
}

/// What [`Outbox::bad_line`] decided about one refused line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    /// Within the rate: answer it.
    Answer,
    /// This line went over the rate: answer `error: too many bad lines` and close.
    TooMany,
    /// The connection is already being closed for it: answer nothing.
    Closing,
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
pub fn new(stream: Conn, budget: Arc<Budget>) -> (Outbox, Inbox) {
    let queue = Arc::new_cyclic(|me| Queue {
        lines: Mutex::default(),
        senders: AtomicUsize::new(1),
        queued: AtomicUsize::new(0),
        over_since: AtomicU64::new(0),
        pinned: AtomicUsize::new(0),
        cut: AtomicU8::new(0),
        id: budget.register(me.clone()),
        budget,
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
    /// Queues a line. Past a bound (see the module's comment), the connection is cut off
    /// as a slow consumer.
    pub fn send(&self, out: Out) -> Result<(), DropReason> {
        let queue = &*self.queue;
        let budget = &*queue.budget;
        let out = match out {
            // Only the router queues deliveries, so this check and the add below do not race.
            Out::Delivery(line)
                if queue.pinned.load(Ordering::Acquire) + line.backing_len() > budget.soft() =>
            {
                Out::Delivery(line.detached())
            }
            out => out,
        };
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
    /// Ends the connection's reading side: its reader sees the end of input and the
    /// connection closes once the writer has sent what is queued.
    pub fn stop_reading(&self) {
        let _ = self.queue.stream.shutdown(SocketShutdown::Read);
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
            Ok(_) => true,
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
        let (items, waiting) = {
            let mut lines = self.lock();
            lines.closed = true;
            let items = std::mem::take(&mut lines.items);
            lines.cut_dropped += items
                .iter()
                .filter(|out| matches!(out, Out::Delivery(_)))
                .count() as u64;
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

    /// Why the connection was cut off, if it was.
    pub fn cut_reason(&self) -> Option<SlowReason> {
        SlowReason::from_u8(self.cut.load(Ordering::Acquire))
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire) != 0
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
        self.budget.forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime;

    use crate::config::Limits;
    use crate::metrics::Metrics;

    /// A budget with these bounds (bytes: soft, hard, total).
    fn budget(soft: usize, hard: usize, total: usize, grace: Duration) -> Arc<Budget> {
        let limits = Limits {
            outbound_queue_bytes: soft,
            outbound_queue_hard_bytes: hard,
            outbound_total_bytes: total,
            slow_consumer_grace: grace,
            ..Limits::default()
        };
        Budget::new(&limits, &Metrics::new())
    }

    /// A queue on a real (loopback) socket, as the server makes them.
    fn queue_in(budget: &Arc<Budget>) -> (Outbox, Inbox, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let conn = Conn::from_accepted(accepted.into()).unwrap();
        let (outbox, inbox) = new(conn, budget.clone());
        (outbox, inbox, client)
    }

    /// A queue whose every bound is `limit`.
    fn queue(limit: usize) -> (Outbox, Inbox, std::net::TcpStream) {
        queue_in(&budget(limit, limit, limit, Duration::from_secs(5)))
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
            .0
            .into_iter()
            .map(|o| o.bytes().to_vec())
            .collect();
        assert_eq!(left, vec![b"3\n".to_vec()]);
        // A closed queue takes nothing more.
        assert_eq!(outbox.send(server("4\n")), Err(DropReason::RecipientGone));
    }

    fn delivery(line: &str) -> Out {
        let buf: Arc<[u8]> = line.as_bytes().into();
        Out::Delivery(Shared::new(buf, 0..line.len()))
    }

    #[test]
    fn passing_the_hard_bound_cuts_the_client_at_once() {
        let b = budget(10, 20, 1000, Duration::from_secs(60));
        let (outbox, inbox, mut client) = queue_in(&b);
        outbox.send(delivery("12345678\n")).unwrap();
        outbox.send(delivery("12345678\n")).unwrap(); // 18: over soft, within the grace
        assert!(!inbox.queue.is_cut());
        assert_eq!(outbox.send(server("123\n")), Err(DropReason::SlowConsumer));
        assert_eq!(inbox.queue.cut_reason(), Some(SlowReason::Hard));
        // The socket was shut down: the client sees the end.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
        assert!(rest.is_empty());
        // What was queued was thrown away at once and left the total; the writer is told
        // how many deliveries that was.
        assert_eq!(b.total(), 0);
        assert_eq!(inbox.queue.queued(), 0);
        let (left, dropped) = inbox.close();
        assert!(left.is_empty());
        assert_eq!(dropped, 2);
        assert_eq!(outbox.send(server("x\n")), Err(DropReason::SlowConsumer));
    }

    #[test]
    fn a_queue_may_stay_over_the_soft_bound_for_the_grace_only() {
        let b = budget(10, 1000, 10_000, Duration::from_millis(50));
        let (outbox, inbox, _client) = queue_in(&b);
        for _ in 0..5 {
            outbox.send(server("12345678\n")).unwrap();
        }
        assert!(inbox.queue.grace_left().is_some(), "over the soft bound");
        // Worked off below the soft bound within the grace: forgotten.
        inbox.take_more(|out| {
            inbox.queue.release(out.bytes().len());
            true
        });
        assert_eq!(inbox.queue.grace_left(), None);
        // Over again, and still over after the grace: cut.
        for _ in 0..5 {
            outbox.send(server("12345678\n")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(inbox.queue.grace_left(), Some(Duration::ZERO));
        assert_eq!(outbox.send(server("1\n")), Err(DropReason::SlowConsumer));
        assert_eq!(inbox.queue.cut_reason(), Some(SlowReason::Grace));
    }

    #[test]
    fn over_the_total_the_largest_queues_are_cut_first() {
        let b = budget(100, 10_000, 1000, Duration::from_secs(60));
        let (small, small_in, _c1) = queue_in(&b);
        let (big, big_in, _c2) = queue_in(&b);
        let (mid, mid_in, _c3) = queue_in(&b);
        let line = "x".repeat(99) + "\n";
        for _ in 0..2 {
            small.send(server(&line)).unwrap();
        }
        for _ in 0..5 {
            big.send(server(&line)).unwrap();
        }
        for _ in 0..3 {
            mid.send(server(&line)).unwrap();
        }
        assert_eq!(b.total(), 1000);
        // One more line passes the total: the biggest queue goes, and that is enough.
        small.send(server(&line)).unwrap();
        assert_eq!(big_in.queue.cut_reason(), Some(SlowReason::Total));
        assert!(!mid_in.queue.is_cut() && !small_in.queue.is_cut());
        assert_eq!(b.total(), 600);
        drop((small_in, mid_in));
    }

    #[test]
    fn bad_lines_are_answered_up_to_the_rate_then_the_connection_closes() {
        let (outbox, _inbox, _client) = queue(1000);
        let answers = std::iter::repeat_with(|| outbox.bad_line())
            .take(100)
            .collect::<Vec<_>>();
        let allowed = answers.iter().filter(|&&a| a == BadLine::Answer).count();
        assert_eq!(allowed, crate::server::badlines::BURST as usize);
        assert_eq!(answers[allowed], BadLine::TooMany);
        assert!(answers[allowed + 1..]
            .iter()
            .all(|&a| a == BadLine::Closing));
    }

    #[test]
    fn a_dropped_queue_leaves_the_total_and_the_list() {
        let b = budget(100, 100, 1000, Duration::from_secs(60));
        let (outbox, inbox, _client) = queue_in(&b);
        outbox.send(server("hello\n")).unwrap();
        assert_eq!(b.total(), 6);
        drop((outbox, inbox));
        assert_eq!(b.total(), 0);
        assert!(b.is_empty());
    }
}

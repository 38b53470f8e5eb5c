//! The writing half of each connection's task, the only code that writes to its socket: it takes every
//! line queued for the client, writes them in as few `write` calls as possible, and
//! closes the connection cleanly when the queue closes (sending the drain notice when
//! the daemon is shutting down).

use std::future::Future;
use std::net::Shutdown as SocketShutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt as _;
use tracing::{debug, warn};

use crate::metrics::{DropReason, Metrics, SlowReason};
use crate::protocol;
use crate::runtime::{self, Conn};
use crate::server::conninfo::ConnInfo;
use crate::server::outbox::{Inbox, Out, Queue};

/// Most bytes gathered into one `write`.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Largest write buffer kept between writes; a larger one is given back.
const WRITE_KEEP_BYTES: usize = 4 * 1024;
/// After the last line, how long the writer keeps reading (and discarding) what the client
/// still sends, so that closing does not reset the connection before the client has read
/// our last lines (closing with unread input sends a reset, and the kernel then discards
/// what it still had to send, our last lines included).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering after the daemon closed a connection for breaking
/// a rule (a line too long, a bad login, a timeout): such a client may lose our last line
/// to a reset rather than keep the daemon reading its flood. During a drain only time
/// bounds the linger: a client that was still sending when its reader stopped may have
/// megabytes in flight, and must still get its deliveries and the notice.
pub const LINGER_BYTES: usize = 64 * 1024;

/// Everything the writer needs.
///
/// The socket is its queue's (`inbox.queue.stream()`), and `write_timeout` is in the
/// limits of its context.
pub struct Writer {
    pub inbox: Inbox,
    /// The metrics, the limits and the drain signal.
    pub ctx: Arc<crate::server::context::Context>,
}

/// Writes all of `buf`, waiting while the socket's buffer is full: a timer is armed only
/// then.
/// The wait ends the connection when it passes `write_timeout`, or when the queue has
/// stayed above `outbound_queue_bytes` for the whole grace meanwhile (nobody else may be
/// queueing to notice it). A queue that goes over the bound during the wait wakes it
/// ([`Queue::went_over`]), so the grace is enforced from that moment, not from the next
/// time the write's own timer fires.
async fn write_within(
    stream: &Conn,
    queue: &Queue,
    buf: &[u8],
    limit: Duration,
) -> Result<std::io::Result<()>, SlowReason> {
    let mut write = std::pin::pin!(stream.write_all(buf));
    if let std::task::Poll::Ready(result) = futures::poll!(write.as_mut()) {
        return Ok(result);
    }
    /// What ended one wait of a blocked write.
    enum Waited {
        Written(std::io::Result<()>),
        /// The queue went over the soft bound: its grace runs from now.
        WentOver,
    }
    let started = Instant::now();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let grace = queue.grace_left();
        let wait = grace.map_or(left, |grace| grace.min(left));
        let written = async { Waited::Written(write.as_mut().await) };
        let waited = if grace.is_some() {
            runtime::timeout(wait.max(Duration::from_millis(1)), written).await
        } else {
            let over = async {
                queue.went_over().await;
                Waited::WentOver
            };
            runtime::timeout(wait.max(Duration::from_millis(1)), written.or(over)).await
        };
        match waited {
            Ok(Waited::Written(result)) => return Ok(result),
            Ok(Waited::WentOver) => {}
            Err(runtime::Elapsed) if started.elapsed() >= limit => {
                return Err(SlowReason::WriteTimeout)
            }
            Err(runtime::Elapsed) if queue.grace_left() == Some(Duration::ZERO) => {
                return Err(SlowReason::Grace)
            }
            Err(runtime::Elapsed) => {}
        }
    }
}

/// What one write takes from the queue.
struct Gathered {
    /// The first item, when it is written alone (nearly always: a run of one sender's
    /// lines), from where it lies; `None` when the items were gathered into the buffer.
    alone: Option<Out>,
    /// Deliveries in what was taken: counted as written when the write ends, as dropped
    /// when it fails.
    deliveries: u64,
    /// Since when the writer has owed these lines (see `Inbox::take_more`).
    since: u64,
}

impl Gathered {
    /// Takes `first` and, while there is room, what else is queued; more than one item
    /// is copied into `buf`.
    fn take(inbox: &Inbox, first: Out, buf: &mut Vec<u8>) -> Gathered {
        buf.clear();
        let queue = &*inbox.queue;
        let mut deliveries = first.deliveries();
        let room = first.bytes().len() < WRITE_BATCH_BYTES;
        let mut alone = Some(first);
        let since = inbox.take_more(room, |out| {
            if let Some(first) = alone.take() {
                gather(queue, first, buf);
            }
            deliveries += out.deliveries();
            gather(queue, out, buf);
            buf.len() < WRITE_BATCH_BYTES
        });
        Gathered {
            alone,
            deliveries,
            since,
        }
    }

    /// The bytes to write.
    fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match &self.alone {
            Some(out) => out.bytes(),
            None => buf,
        }
    }
}

/// Moves one queued item into the write buffer.
fn gather(queue: &Queue, out: Out, buf: &mut Vec<u8>) {
    buf.extend_from_slice(out.bytes());
    queue.unpin(out.pinned());
}

/// How a write ended: written, failed, or given up as a slow consumer's.
type Written = Result<std::io::Result<()>, SlowReason>;

/// What the writer does after a write.
enum Step {
    Next,
    /// The connection failed: the writer is done.
    Stop,
}

/// How a batch write ended.
enum Failure {
    Io(std::io::Error),
    /// The write waited past a bound: the connection is a slow consumer.
    Slow(SlowReason),
}

impl Writer {
    /// Writes until the queue closes. An `async` block that uses the writer where it was
    /// moved to, not an `async fn`, which would keep it twice in every idle connection.
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl Future<Output = ()> + Send {
        async move { self.write_all_queued().await }
    }

    async fn write_all_queued(&mut self) {
        let mut buf = Vec::new();
        loop {
            let first = match self.inbox.recv().await {
                Some(out) => out,
                // Every handle is gone and the queue is empty: a normal close, unless the
                // connection was cut off (its queue was thrown away then).
                None if self.inbox.queue.is_cut() => {
                    self.fail(Failure::Io(std::io::ErrorKind::BrokenPipe.into()), 0);
                    return;
                }
                None => break,
            };
            let gathered = Gathered::take(&self.inbox, first, &mut buf);
            let step = match self.write(gathered, &mut buf) {
                Ok(step) => step,
                Err(blocked) => blocked.await,
            };
            if let Step::Stop = step {
                return;
            }
        }
        // Boxed: closing needs its futures once, and an idle connection's writer should not
        // keep room for them for the rest of its life.
        Box::pin(self.close()).await;
    }

    /// Writes what was gathered. A write the socket takes at once (nearly all of them) is
    /// made without waiting and starts no timer; the rest of one that has to wait comes
    /// back as a box that writes it with `write_within`, so that an idle writer keeps no
    /// room for that wait nor for what it writes.
    fn write<'a>(
        &'a self,
        gathered: Gathered,
        buf: &'a mut Vec<u8>,
    ) -> Result<Step, Pin<Box<impl Future<Output = Step> + Send + 'a>>> {
        let queue = &*self.inbox.queue;
        let taken = match queue.stream().write_now(gathered.bytes(buf)) {
            Ok((_, true)) => return Ok(self.written(gathered, Ok(Ok(())), buf)),
            Ok((taken, false)) => taken,
            Err(e) => return Ok(self.written(gathered, Ok(Err(e)), buf)),
        };
        let limit = self.ctx.limits.write_timeout;
        Err(Box::pin(async move {
            let rest = &gathered.bytes(buf)[taken..];
            let result = write_within(queue.stream(), queue, rest, limit).await;
            self.written(gathered, result, buf)
        }))
    }

    /// Counts a write that ended, or ends the connection if it failed.
    fn written(&self, gathered: Gathered, result: Written, buf: &mut Vec<u8>) -> Step {
        let queue = &*self.inbox.queue;
        let len = gathered.bytes(buf).len();
        let (deliveries, since) = (gathered.deliveries, gathered.since);
        if let Some(out) = gathered.alone {
            queue.unpin(out.pinned());
        }
        queue.release(len);
        let failure = match result {
            Ok(Ok(())) => {
                let waited = queue.waited_ns(since);
                self.ctx.metrics.queue_wait.observe(waited, deliveries);
                self.ctx.metrics.messages_delivered.inc_by(deliveries);
                self.ctx.metrics.bytes_out.inc_by(len as u64);
                ConnInfo::count(&queue.info.messages_out, deliveries);
                ConnInfo::add(&queue.info.bytes_out, len as u64);
                if buf.capacity() > WRITE_KEEP_BYTES {
                    // A burst is over: an idle connection keeps no large buffer.
                    *buf = Vec::new();
                }
                return Step::Next;
            }
            Ok(Err(e)) => Failure::Io(e),
            Err(why) => Failure::Slow(why),
        };
        self.fail(failure, deliveries);
        Step::Stop
    }

    /// The socket failed or the client stopped reading: drop what is left and close.
    fn fail(&self, failure: Failure, in_flight: u64) {
        let queue = &self.inbox.queue;
        if let Failure::Slow(why) = failure {
            queue.cut(why);
        }
        let (left, cut_dropped) = self.inbox.close();
        let mut dropped = in_flight + cut_dropped;
        for out in left {
            queue.release(out.bytes().len());
            queue.unpin(out.pinned());
            dropped += out.deliveries();
        }
        let _ = self.inbox.queue.stream().shutdown(SocketShutdown::Both);
        match queue.cut_reason() {
            Some(why) => {
                self.ctx.metrics.slow_consumer(why);
                self.ctx.metrics.dropped(DropReason::SlowConsumer, dropped);
                match why {
                    SlowReason::WriteTimeout => {
                        warn!(reason = why.label(), dropped, timeout = ?self.ctx.limits.write_timeout, "{}", why.explain())
                    }
                    _ => warn!(reason = why.label(), dropped, "{}", why.explain()),
                }
            }
            None => {
                self.ctx.metrics.dropped(DropReason::RecipientGone, dropped);
                if let Failure::Io(e) = failure {
                    debug!(error = %e, dropped, "write failed");
                }
            }
        }
    }

    /// Everything queued was written: say goodbye if draining, then close without
    /// resetting the connection.
    async fn close(&mut self) {
        if self.ctx.shutdown.is_draining() {
            let notice = protocol::format_notice("server shutting down");
            let sent = runtime::timeout(
                self.ctx.limits.write_timeout,
                self.inbox.queue.stream().write_all(&notice),
            )
            .await;
            if let Ok(Ok(())) = sent {
                self.ctx.metrics.bytes_out.inc_by(notice.len() as u64);
            }
        }
        let _ = self.inbox.queue.stream().shutdown(SocketShutdown::Write);
        let cap = if self.ctx.shutdown.is_draining() {
            usize::MAX
        } else {
            LINGER_BYTES
        };
        linger(self.inbox.queue.stream(), cap, &self.ctx.metrics).await;
    }
}

/// After the daemon's last line and its half-close: reads and discards what the client
/// still sends (at most `cap` bytes, for at most [`LINGER`]) until it closes, so that our
/// last lines are not lost to a reset.
pub async fn linger(stream: &Conn, cap: usize, metrics: &Metrics) {
    // Allocated only now, so that an idle connection's writer stays small.
    let mut sink = vec![0u8; 4096];
    let mut discarded = 0;
    let linger = async {
        while discarded < cap {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    discarded += n;
                    metrics.bytes_in.inc_by(n as u64);
                }
            }
        }
    };
    let _ = runtime::timeout(LINGER, linger).await;
}

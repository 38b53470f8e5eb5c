//! The writing half of each connection's task, the only code that writes to its socket: it takes every
//! line queued for the client, writes them in as few `write` calls as possible, and
//! closes the connection cleanly when the queue closes (sending the drain notice when
//! the daemon is shutting down).

use std::future::Future;
use std::net::Shutdown as SocketShutdown;
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

/// Moves one queued line into the write buffer.
fn take(queue: &Queue, out: Out, buf: &mut Vec<u8>, deliveries: &mut u64) {
    buf.extend_from_slice(out.bytes());
    queue.unpin(out.pinned());
    *deliveries += out.deliveries();
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
            buf.clear();
            let mut deliveries = 0u64;
            take(&self.inbox.queue, first, &mut buf, &mut deliveries);
            let room = buf.len() < WRITE_BATCH_BYTES;
            let since = self.inbox.take_more(room, |out| {
                take(&self.inbox.queue, out, &mut buf, &mut deliveries);
                buf.len() < WRITE_BATCH_BYTES
            });
            // A write the socket takes at once (nearly all of them) is made without waiting
            // and starts no timer; only the rest of one that has to wait is written by
            // `write_within`, boxed, so that an idle writer keeps no room for it.
            let written = match self.inbox.queue.stream().write_now(&buf) {
                Ok((_, true)) => Ok(Ok(())),
                Ok((taken, false)) => {
                    let rest = &buf[taken..];
                    let queue = &self.inbox.queue;
                    Box::pin(write_within(
                        self.inbox.queue.stream(),
                        queue,
                        rest,
                        self.ctx.limits.write_timeout,
                    ))
                    .await
                }
                Err(e) => Ok(Err(e)),
            };
            self.inbox.queue.release(buf.len());
            let failure = match written {
                Ok(Ok(())) => {
                    let waited = self.inbox.queue.waited_ns(since);
                    self.ctx.metrics.queue_wait.observe(waited, deliveries);
                    self.ctx.metrics.messages_delivered.inc_by(deliveries);
                    self.ctx.metrics.bytes_out.inc_by(buf.len() as u64);
                    let info = &self.inbox.queue.info;
                    ConnInfo::count(&info.messages_out, deliveries);
                    ConnInfo::add(&info.bytes_out, buf.len() as u64);
                    if buf.capacity() > WRITE_KEEP_BYTES {
                        // A burst is over: an idle connection keeps no large buffer.
                        buf = Vec::new();
                    }
                    continue;
                }
                Ok(Err(e)) => Failure::Io(e),
                Err(why) => Failure::Slow(why),
            };
            self.fail(failure, deliveries);
            return;
        }
        // Boxed: closing needs its futures once, and an idle connection's writer should not
        // keep room for them for the rest of its life.
        Box::pin(self.close()).await;
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

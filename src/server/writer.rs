//! One task per connection, the only code that writes to its socket: it takes every
//! line queued for the client, writes them in as few `write` calls as possible, and
//! closes the connection cleanly when the queue closes (sending the drain notice when
//! the daemon is shutting down).

use std::net::Shutdown as SocketShutdown;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::metrics::{DropReason, Metrics};
use crate::protocol;
use crate::runtime::{self, Conn};
use crate::server::outbox::{Inbox, Out, Queue};
use crate::server::shutdown::Shutdown;

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
const LINGER_BYTES: usize = 1 << 20;

/// Everything the writer needs.
pub struct Writer {
    pub stream: Conn,
    pub inbox: Inbox,
    pub metrics: Arc<Metrics>,
    pub write_timeout: Duration,
    pub shutdown: Shutdown,
}

/// Writes all of `buf`, failing with `Elapsed` if that takes longer than `limit`. A write
/// the socket takes at once (nearly all of them) starts no timer: the timer is armed only
/// when the socket's buffer is full and the write has to wait.
async fn write_within(
    stream: &Conn,
    buf: &[u8],
    limit: Duration,
) -> Result<std::io::Result<()>, runtime::Elapsed> {
    let mut write = std::pin::pin!(stream.write_all(buf));
    match futures::poll!(write.as_mut()) {
        std::task::Poll::Ready(result) => Ok(result),
        std::task::Poll::Pending => runtime::timeout(limit, write).await,
    }
}

/// Moves one queued line into the write buffer.
fn take(queue: &Queue, out: Out, buf: &mut Vec<u8>, deliveries: &mut u64) {
    buf.extend_from_slice(out.bytes());
    queue.unpin(out.pinned());
    if let Out::Delivery(_) = out {
        *deliveries += 1;
    }
}

/// How a batch write ended.
enum Failure {
    Io(std::io::Error),
    Timeout,
}

impl Writer {
    pub async fn run(mut self) {
        let mut buf = Vec::new();
        loop {
            let first = match self.inbox.recv().await {
                Some(out) => out,
                // Every handle is gone and the queue is empty: a normal close, unless the
                // connection was cut off while nothing was queued (a line bigger than the
                // whole queue bound, or a kick racing the last write).
                None if self.inbox.queue.is_kicked() => {
                    let _ = self.stream.shutdown(SocketShutdown::Both);
                    self.metrics.slow_consumers.inc();
                    warn!("slow consumer disconnected: outbound queue over outbound_queue_bytes");
                    return;
                }
                None => break,
            };
            buf.clear();
            let mut deliveries = 0u64;
            take(&self.inbox.queue, first, &mut buf, &mut deliveries);
            if buf.len() < WRITE_BATCH_BYTES {
                self.inbox.take_more(|out| {
                    take(&self.inbox.queue, out, &mut buf, &mut deliveries);
                    buf.len() < WRITE_BATCH_BYTES
                });
            }
            let written = write_within(&self.stream, &buf, self.write_timeout).await;
            self.inbox.queue.release(buf.len());
            let failure = match written {
                Ok(Ok(())) => {
                    self.metrics.messages_delivered.inc_by(deliveries);
                    self.metrics.bytes_out.inc_by(buf.len() as u64);
                    if buf.capacity() > WRITE_KEEP_BYTES {
                        // A burst is over: an idle connection keeps no large buffer.
                        buf = Vec::new();
                    }
                    continue;
                }
                Ok(Err(e)) => Failure::Io(e),
                Err(runtime::Elapsed) => Failure::Timeout,
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
        if let Failure::Timeout = failure {
            self.inbox.queue.kick();
        }
        let mut dropped = in_flight;
        for out in self.inbox.close() {
            self.inbox.queue.release(out.bytes().len());
            self.inbox.queue.unpin(out.pinned());
            if let Out::Delivery(_) = out {
                dropped += 1;
            }
        }
        let _ = self.stream.shutdown(SocketShutdown::Both);
        if self.inbox.queue.is_kicked() {
            self.metrics.slow_consumers.inc();
            self.metrics.dropped(DropReason::SlowConsumer, dropped);
            match failure {
                Failure::Timeout => warn!(
                    dropped,
                    timeout = ?self.write_timeout,
                    "slow consumer disconnected: a write blocked past write_timeout"
                ),
                Failure::Io(_) => warn!(
                    dropped,
                    "slow consumer disconnected: outbound queue over outbound_queue_bytes"
                ),
            }
        } else {
            self.metrics.dropped(DropReason::RecipientGone, dropped);
            if let Failure::Io(e) = failure {
                debug!(error = %e, dropped, "write failed");
            }
        }
    }

    /// Everything queued was written: say goodbye if draining, then close without
    /// resetting the connection.
    async fn close(&mut self) {
        if self.shutdown.is_draining() {
            let notice = protocol::format_notice("server shutting down");
            let sent = runtime::timeout(self.write_timeout, self.stream.write_all(&notice)).await;
            if let Ok(Ok(())) = sent {
                self.metrics.bytes_out.inc_by(notice.len() as u64);
            }
        }
        let _ = self.stream.shutdown(SocketShutdown::Write);
        // The reader has finished; read what the client still sends until it closes,
        // so that our last lines are not lost to a reset.
        // Allocated only now, so that an idle connection's writer stays small.
        let mut sink = vec![0u8; 4096];
        let cap = if self.shutdown.is_draining() {
            usize::MAX
        } else {
            LINGER_BYTES
        };
        let mut discarded = 0;
        let linger = async {
            while discarded < cap {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        discarded += n;
                        self.metrics.bytes_in.inc_by(n as u64);
                    }
                }
            }
        };
        let _ = runtime::timeout(LINGER, linger).await;
    }
}

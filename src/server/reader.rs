//! One task per connection that reads what the client sends: the login first, then
//! message lines, each parsed and handed to the router in batches (one batch per read).
//! It answers bad input itself through the connection's own queue.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_channel::Sender;
use futures_lite::future::FutureExt as _;
use tracing::{debug, info, warn};

use crate::auth::Auth;
use crate::config::Limits;
use crate::metrics::{CloseReason, LineRefusal, Metrics};
use crate::protocol::{self, FrameError, LineFramer};
use crate::runtime::{self, Conn};
use crate::server::badlines;
use crate::server::conninfo::ConnInfo;
use crate::server::outbox::{BadLine, Out, Outbox};
use crate::server::router::{Batch, ConnId, Event, Item};
use crate::server::shutdown::Shutdown;

mod authenticate;
mod login;

/// Bytes asked of one `read`. Reads go into a buffer shared by every connection that its
/// thread serves (see [`SCRATCH`]), so a connection waiting for input holds no read
/// buffer at all, and one that keeps a partial line holds just that line.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// The buffer every read on this thread goes into. A read and the copy of what it
    /// got into the connection's framer happen in one poll, so no two connections ever
    /// use it at once.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}
/// Reads taken in after the drain begins, at most (what the kernel already holds), and
/// the size of each: at most 256 KiB per connection, so that the drain's work stays
/// bounded however much a client had sent ahead.
const DRAIN_READS: usize = 64;
const DRAIN_READ: usize = 4096;

/// The answer that closes a connection sending bad lines faster than the rate of
/// `badlines`; counted and logged once per connection.
fn too_many_bad_lines(metrics: &Metrics) -> Vec<u8> {
    metrics.bad_line_disconnects.inc();
    info!(
        burst = badlines::BURST,
        per_second = badlines::PER_SECOND,
        "closing connection: too many bad lines"
    );
    protocol::format_error("too many bad lines")
}

/// The `reason` label a refused message line is counted under.
fn refusal_of(e: &protocol::MessageError) -> LineRefusal {
    match e {
        protocol::MessageError::NoColon => LineRefusal::NoColon,
        protocol::MessageError::NoRecipients => LineRefusal::NoRecipients,
        protocol::MessageError::TooManyRecipients => LineRefusal::TooManyRecipients,
        protocol::MessageError::ControlCharacter => LineRefusal::ControlCharacter,
    }
}

/// Everything the reader needs.
pub struct Reader {
    pub conn: ConnId,
    pub stream: Conn,
    pub outbox: Outbox,
    pub events: Sender<Event>,
    pub limits: Arc<Limits>,
    /// With `[auth] users_file` set: the users the login line's password is checked
    /// against. `None` means open logins, as in the book.
    pub auth: Option<Arc<Auth>>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// When the connection was accepted: the login is due `login_timeout` later.
    pub accepted: std::time::Instant,
    /// The connection's span, which gets the `login` field once it is granted.
    pub span: tracing::Span,
    /// The last read took less than it asked for, so the socket was emptied: wait for
    /// readiness before reading again rather than pay a read that can only say "would
    /// block".
    pub emptied: bool,
    /// The client's message rate (unused when `messages_per_second` is 0).
    pub rate: super::rate::Bucket,
    /// The client was told `notice: slow down` already (once per connection).
    pub slowed: bool,
    /// The login must be a name of the client's certificate (`[tls] client_identity`).
    pub identity: bool,
}

/// Most message lines one connection routes in one turn of its task. A 64 KiB read of
/// ordinary messages holds far fewer; a read of `a:` lines holds over 20 000, and routing
/// them all at once would keep every other connection on the thread waiting.
const LINES_PER_TURN: usize = 1024;
/// Most deliveries (a line times its recipients) one connection routes in one turn: a
/// read of lines naming 64 recipients each costs the router (and, in a cluster, the
/// other nodes) 64 times a plain one, and is cut into turns by this instead.
const DELIVERIES_PER_TURN: usize = 2048;

/// Whether the framer still held complete lines when a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Done,
    More,
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The drain began: the login stays registered until the router finishes.
    Drain,
    /// The client closed, broke a rule, or timed out: its login is released.
    Closed,
}

/// What one wait for input gave.
enum Input {
    Read(std::io::Result<usize>),
    Drain,
    Timeout,
}

impl Reader {
    /// Reads until the client leaves, breaks a rule, or the drain begins; says how it
    /// ended and whether the connection ever logged in.
    pub async fn run(mut self) -> (End, bool) {
        let mut framer = LineFramer::new(self.limits.max_line_bytes);
        // Boxed: the login's futures are needed once, and an idle connection should not
        // keep room for them for the rest of its life.
        let login = match Box::pin(self.login(&mut framer)).await {
            Ok(login) => login,
            Err(end) => return (end, false),
        };
        (self.chat(login, framer).await, true)
    }

    /// After the login: routes what the client sends.
    async fn chat(&mut self, login: Arc<str>, mut framer: LineFramer) -> End {
        let idle = self.limits.idle_timeout;
        loop {
            // Lines that arrived with the login, or in the last read.
            let allowed = self.allowance().await;
            let turn = self.route_lines(&login, &mut framer, allowed).await;
            if let Ok((_, deliveries)) = &turn {
                self.rate.spend(*deliveries);
            }
            match turn.map(|(turn, _)| turn) {
                Err(end) => return end,
                Ok(Turn::More) if !self.shutdown.is_draining() => {
                    // A read of tiny lines can hold tens of thousands: the rest waits for
                    // this connection's next turn, without reading more meanwhile.
                    futures_lite::future::yield_now().await;
                    continue;
                }
                Ok(_) => {}
            }
            framer.shrink_if_idle();
            if !self.emptied {
                // The last read filled the buffer, so more is likely waiting: let the other
                // connections on this thread have a turn first. A client that always has
                // data ready gets one read per turn, however fast it sends.
                futures_lite::future::yield_now().await;
            }
            // A client that always has data ready must not keep the reader from the drain.
            let input = if self.shutdown.is_draining() {
                Input::Drain
            } else {
                self.read(&mut framer, idle).await
            };
            match input {
                Input::Read(Ok(0)) => {
                    debug!("client closed the connection");
                    self.outbox.info().ending(CloseReason::ClientClosed);
                    return End::Closed;
                }
                Input::Read(Ok(_)) => {}
                Input::Read(Err(e)) => {
                    debug!(error = %e, "read failed");
                    self.outbox.info().ending(read_error_reason(&e));
                    return End::Closed;
                }
                Input::Timeout => {
                    self.outbox.info().ending(CloseReason::IdleTimeout);
                    info!(timeout = ?idle, "idle timeout");
                    self.say(protocol::format_notice("idle timeout"));
                    return End::Closed;
                }
                Input::Drain => {
                    self.take_in_received(&mut framer);
                    while let Ok((Turn::More, _)) =
                        self.route_lines(&login, &mut framer, usize::MAX).await
                    {
                    }
                    return End::Drain;
                }
            }
        }
    }

    /// How many deliveries the client may cause now (no bound when the rate is off or
    /// the drain has begun). Past its rate, waits until it may cause one: meanwhile its
    /// socket is not read (TCP slows the client) and what it sent waits in the framer,
    /// lost to no one. The first wait tells it `notice: slow down`.
    async fn allowance(&mut self) -> usize {
        loop {
            // Off: no clock read, nothing counted.
            if self.limits.messages_per_second == 0 || self.shutdown.is_draining() {
                return usize::MAX;
            }
            let wait = match self.rate.allowance(&self.limits, self.accepted.elapsed()) {
                Ok(allowed) => return allowed,
                Err(wait) => wait,
            };
            self.metrics.operator.rate_limited.inc();
            if !self.slowed {
                self.slowed = true;
                debug!(wait = ?wait, "over messages_per_second: not reading for a while");
                self.say(protocol::format_notice("slow down"));
            }
            let drain = self.shutdown.clone();
            runtime::sleep(wait)
                .or(async move { drain.wait().await })
                .await;
        }
    }

    /// Parses every complete line in the buffer and hands the messages to the router
    /// as one batch, and says how many deliveries they asked for. A framing error is
    /// answered and ends the connection, after the lines before it were routed.
    /// At most `allowed` deliveries are routed (a line is routed whole, so the first may
    /// pass it); the rest stay in the framer for the next turn.
    async fn route_lines(
        &self,
        login: &Arc<str>,
        framer: &mut LineFramer,
        allowed: usize,
    ) -> Result<(Turn, usize), End> {
        let mut lines = Vec::new();
        let mut names = String::new();
        let mut items = Vec::new();
        let mut deliveries = 0usize;
        let mut failure = None;
        let mut too_many_bad = false;
        let mut turn = Turn::Done;
        while let Some(line) = framer.next_line() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            match protocol::parse_message(line, self.limits.max_recipients) {
                Ok(msg) => {
                    self.metrics.messages_received.inc();
                    ConnInfo::count(&self.outbox.info().messages_in, 1);
                    let (line_start, names_start) = (lines.len(), names.len());
                    protocol::write_delivery(&mut lines, login, msg.text);
                    for name in msg.recipients() {
                        names.push_str(name);
                        names.push('\n');
                        deliveries += 1;
                    }
                    items.push(Item::Message {
                        line: line_start..lines.len(),
                        names: names_start..names.len(),
                    });
                    if items.len() == LINES_PER_TURN
                        || deliveries >= DELIVERIES_PER_TURN.min(allowed)
                    {
                        turn = Turn::More;
                        break;
                    }
                }
                Err(e) => {
                    self.metrics.line_refused(refusal_of(&e));
                    // Counted before the answer is built: a flood of bad lines costs a
                    // bounded number of answers, then the connection.
                    match self.outbox.bad_line() {
                        BadLine::Answer => {
                            debug!(error = %e, "line refused");
                            items.push(Item::Reply(protocol::format_error(e)));
                        }
                        BadLine::TooMany => {
                            items.push(Item::Reply(too_many_bad_lines(&self.metrics)));
                            too_many_bad = true;
                            break;
                        }
                        BadLine::Closing => {
                            too_many_bad = true;
                            break;
                        }
                    }
                }
            }
        }
        if !items.is_empty() {
            let batch = Batch {
                lines: lines.into(),
                names,
                items,
            };
            let routed = self.events.send(Event::Messages {
                from: login.clone(),
                batch,
            });
            if routed.await.is_err() {
                return Err(End::Drain);
            }
        }
        if too_many_bad {
            self.outbox.info().ending(CloseReason::TooManyBadLines);
            return Err(End::Closed);
        }
        match failure {
            Some(e) => Err(self.frame_error(e)),
            None => Ok((turn, deliveries)),
        }
    }

    fn frame_error(&self, e: FrameError) -> End {
        self.outbox.info().ending(match e {
            FrameError::LineTooLong => CloseReason::LineTooLong,
            _ => CloseReason::InvalidUtf8,
        });
        warn!(error = %e, "closing connection");
        self.say(protocol::format_error(e));
        End::Closed
    }

    /// Waits for input, the drain, or `limit` (zero means no limit).
    ///
    /// A plain function returning a combinator, not an `async fn`, so that the waiting
    /// futures are stored once in every idle connection, not twice.
    fn read<'a>(
        &'a mut self,
        framer: &'a mut LineFramer,
        limit: Duration,
    ) -> impl Future<Output = Input> + 'a {
        // Disjoint borrows of the reader's fields, so that waiting for the drain needs no
        // clone of the shutdown handle on every read.
        let Reader {
            stream,
            metrics,
            shutdown,
            emptied,
            outbox,
            ..
        } = self;
        let drain = async move {
            shutdown.wait().await;
            Input::Drain
        };
        let timeout = async move {
            if limit.is_zero() {
                futures_lite::future::pending::<()>().await;
            }
            runtime::sleep(limit).await;
            Input::Timeout
        };
        let read = async move {
            if *emptied {
                if let Err(e) = stream.readable().await {
                    return Input::Read(Err(e));
                }
            }
            let result = futures::future::poll_fn(|cx| {
                SCRATCH.with(|scratch| {
                    let scratch = &mut *scratch.borrow_mut();
                    let result = std::task::ready!(stream.poll_read(cx, scratch));
                    if let Ok(n) = result {
                        framer.push(&scratch[..n]);
                    }
                    Poll::Ready(result)
                })
            })
            .await;
            let n = *result.as_ref().unwrap_or(&0);
            if n > 0 {
                metrics.bytes_in.inc_by(n as u64);
                ConnInfo::add(&outbox.info().bytes_in, n as u64);
            }
            // A TLS session may hold decrypted bytes the socket no longer shows as
            // readable: only a plain socket is waited on after a short read.
            *emptied = n < READ_SIZE && !stream.is_tls();
            Input::Read(result)
        };
        read.or(drain).or(timeout)
    }

    /// After the drain began: takes in what the kernel has already received, without waiting.
    fn take_in_received(&mut self, framer: &mut LineFramer) {
        SCRATCH.with(|scratch| {
            let scratch = &mut scratch.borrow_mut()[..DRAIN_READ];
            for _ in 0..DRAIN_READS {
                let n = self.stream.read_now(scratch).unwrap_or(0);
                if n == 0 {
                    break;
                }
                framer.push(&scratch[..n]);
                self.metrics.bytes_in.inc_by(n as u64);
            }
        })
    }

    /// Queues a line from the server to this client.
    fn say(&self, line: Vec<u8>) {
        let _ = self.outbox.send(Out::Server(line));
    }
}

/// The close line's reason for a read that failed: ETIMEDOUT is the kernel saying the peer
/// vanished (keepalive probes or sent data went unanswered for `dead_peer_timeout`).
fn read_error_reason(e: &std::io::Error) -> CloseReason {
    match e.kind() {
        std::io::ErrorKind::TimedOut => CloseReason::PeerVanished,
        _ => CloseReason::Reset,
    }
}

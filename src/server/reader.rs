//! The reading half of each connection's task: it reads what the client sends, the login
//! first, then message lines, each parsed and handed to the router in batches (one batch
//! per read). It answers bad input itself through the connection's own queue.

use std::future::Future;
use std::sync::Arc;

use futures_lite::future::FutureExt as _;
use tracing::{debug, info, warn};

use crate::metrics::{CloseReason, LineRefusal, Metrics, WsRefusal};
use crate::protocol::{self, FrameError, LineFramer};
use crate::runtime;
use crate::server::badlines;
use crate::server::conninfo::ConnInfo;
use crate::server::outbox::{BadLine, Out, Outbox};
use crate::server::router::Event;

mod authenticate;
mod batch;
mod input;
mod login;

use batch::Building;
use input::Input;

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
///
/// The connection's id and socket are its queue's (`outbox.info().conn`,
/// `outbox.stream()`), not kept twice.
pub struct Reader {
    pub outbox: Outbox,
    /// The router's queue: logins, batches of messages.
    pub events: async_channel::Sender<Event>,
    /// The limits, the users (`None`: open logins, as in the book), the metrics and the
    /// drain signal.
    pub ctx: Arc<crate::server::context::Context>,
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

/// What one turn's parsing left to act on once its batch is with the router.
struct Taken {
    turn: Turn,
    /// Deliveries the batch asked for.
    deliveries: usize,
    /// A framing error after the routed lines: the connection closes.
    failure: Option<FrameError>,
    /// The client went over the bad-line rate: the connection closes.
    too_many_bad: bool,
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The drain began: the login stays registered until the router finishes.
    Drain,
    /// The client closed, broke a rule, or timed out: its login is released.
    Closed,
}

impl Reader {
    /// Reads until the client leaves, breaks a rule, or the drain begins; says how it
    /// ended and whether the connection ever logged in.
    ///
    /// An `async` block that uses the reader where it was moved to, not an `async fn`:
    /// the state machine of an `async fn` keeps its arguments twice (as they came, and as
    /// its locals), and every idle connection would pay for a second reader.
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl Future<Output = (End, bool)> + Send {
        async move {
            let mut framer = LineFramer::new(self.ctx.limits.max_line_bytes);
            // Boxed: the login's futures are needed once, and an idle connection should
            // not keep room for them for the rest of its life.
            let login = match Box::pin(self.login(&mut framer)).await {
                Ok(login) => login,
                Err(end) => return (end, false),
            };
            (self.chat(&login, &mut framer).await, true)
        }
    }

    /// After the login: routes what the client sends. Takes the login and the framer by
    /// reference, for the reason [`Reader::run`] gives, and is a plain function returning
    /// an `async` block for the same reason: the block uses the three references it
    /// captured, where an `async fn` would keep them twice for the connection's life.
    #[allow(clippy::manual_async_fn)]
    fn chat<'a>(
        &'a mut self,
        login: &'a Arc<str>,
        framer: &'a mut LineFramer,
    ) -> impl Future<Output = End> + Send + 'a {
        async move {
            loop {
                // Lines that arrived with the login, or in the last read.
                let allowed = match self.allowed_now() {
                    Some(allowed) => allowed,
                    // Boxed: the wait is rare, and an idle connection keeps no room for it.
                    None => Box::pin(self.allowance()).await,
                };
                // Only a flag is kept across the waits below, not the turn's result.
                let more = match self.route_lines(login, framer, allowed).await {
                    Err(end) => return end,
                    Ok((turn, deliveries)) => {
                        self.rate.spend(deliveries);
                        turn == Turn::More
                    }
                };
                if more && !self.ctx.shutdown.is_draining() {
                    // A read of tiny lines can hold tens of thousands: the rest waits for
                    // this connection's next turn, without reading more meanwhile.
                    futures_lite::future::yield_now().await;
                    continue;
                }
                framer.shrink_if_idle();
                if !self.emptied {
                    // The last read filled the buffer, so more is likely waiting: let the other
                    // connections on this thread have a turn first. A client that always has
                    // data ready gets one read per turn, however fast it sends.
                    futures_lite::future::yield_now().await;
                }
                // A client that always has data ready must not keep the reader from the drain.
                let input = if self.ctx.shutdown.is_draining() {
                    Input::Drain
                } else {
                    self.read(framer, self.ctx.limits.idle_timeout).await
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
                        self.read_failed(&e);
                        return End::Closed;
                    }
                    Input::Timeout => {
                        self.outbox.info().ending(CloseReason::IdleTimeout);
                        info!(timeout = ?self.ctx.limits.idle_timeout, "idle timeout");
                        self.say(protocol::format_notice("idle timeout"));
                        return End::Closed;
                    }
                    // Boxed: it runs once, and an idle connection keeps no room for it.
                    Input::Drain => return Box::pin(self.drain(login, framer)).await,
                }
            }
        }
    }

    /// The drain began: routes what the client had sent, then ends.
    async fn drain(&mut self, login: &Arc<str>, framer: &mut LineFramer) -> End {
        self.take_in_received(framer);
        while let Ok((Turn::More, _)) = self.route_lines(login, framer, usize::MAX).await {}
        End::Drain
    }

    /// How many deliveries the client may cause now, when it need not wait (see
    /// [`Reader::allowance`]).
    fn allowed_now(&mut self) -> Option<usize> {
        if self.ctx.limits.messages_per_second == 0 || self.ctx.shutdown.is_draining() {
            return Some(usize::MAX);
        }
        self.rate
            .allowance(&self.ctx.limits, self.accepted.elapsed())
            .ok()
    }

    /// How many deliveries the client may cause now (no bound when the rate is off or
    /// the drain has begun). Past its rate, waits until it may cause one: meanwhile its
    /// socket is not read (TCP slows the client) and what it sent waits in the framer,
    /// lost to no one. The first wait tells it `notice: slow down`.
    async fn allowance(&mut self) -> usize {
        loop {
            // Off: no clock read, nothing counted.
            if self.ctx.limits.messages_per_second == 0 || self.ctx.shutdown.is_draining() {
                return usize::MAX;
            }
            let wait = match self
                .rate
                .allowance(&self.ctx.limits, self.accepted.elapsed())
            {
                Ok(allowed) => return allowed,
                Err(wait) => wait,
            };
            self.ctx.metrics.operator.rate_limited.inc();
            if !self.slowed {
                self.slowed = true;
                debug!(wait = ?wait, "over messages_per_second: not reading for a while");
                self.say(protocol::format_notice("slow down"));
            }
            let drain = self.ctx.shutdown.clone();
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
        // In a block of its own: the batch is with the router (or in the boxed send) before
        // the wait, so the wait keeps no room for it.
        let (send, taken) = {
            let (event, taken) = self.take_lines(login, framer, allowed);
            let send = match event {
                Some(event) => self.hand_over(event)?,
                None => None,
            };
            (send, taken)
        };
        if let Some(send) = send {
            send.await.map_err(|_| End::Drain)?;
        }
        self.after_turn(taken)
    }

    /// Gives the router a batch. The router's queue nearly always has room; when it has
    /// none, the send to wait in (the reader then reads nothing more) comes back boxed, so
    /// that an idle connection keeps no room for one.
    #[allow(clippy::type_complexity)]
    fn hand_over(
        &self,
        event: Event,
    ) -> Result<Option<std::pin::Pin<Box<async_channel::Send<'_, Event>>>>, End> {
        match self.events.try_send(event) {
            Ok(()) => Ok(None),
            Err(async_channel::TrySendError::Closed(_)) => Err(End::Drain),
            Err(async_channel::TrySendError::Full(event)) => {
                Ok(Some(Box::pin(self.events.send(event))))
            }
        }
    }

    /// What a turn's lines ask for next: close the connection, or go on.
    fn after_turn(&self, taken: Taken) -> Result<(Turn, usize), End> {
        if taken.too_many_bad {
            self.outbox.info().ending(CloseReason::TooManyBadLines);
            return Err(End::Closed);
        }
        match taken.failure {
            Some(e) => Err(self.frame_error(e)),
            None => Ok((taken.turn, taken.deliveries)),
        }
    }

    /// Parses every complete line in the framer (at most a turn's worth) into one batch
    /// for the router, answering refused lines through the connection's own queue.
    fn take_lines(
        &self,
        login: &Arc<str>,
        framer: &mut LineFramer,
        allowed: usize,
    ) -> (Option<Event>, Taken) {
        let mut batch = Building::new();
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
            match batch.add(login, line, self.ctx.limits.max_recipients) {
                Ok(()) => {
                    if batch.messages == LINES_PER_TURN
                        || batch.deliveries >= DELIVERIES_PER_TURN.min(allowed)
                    {
                        turn = Turn::More;
                        break;
                    }
                }
                Err(e) => {
                    self.ctx.metrics.line_refused(refusal_of(&e));
                    // Counted before the answer is built: a flood of bad lines costs a
                    // bounded number of answers, then the connection.
                    match self.outbox.bad_line() {
                        BadLine::Answer => {
                            debug!(error = %e, "line refused");
                            batch.reply(protocol::format_error(e));
                        }
                        BadLine::TooMany => {
                            batch.reply(too_many_bad_lines(&self.ctx.metrics));
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
        let messages = batch.messages as u64;
        if messages > 0 {
            self.ctx.metrics.messages_received.inc_by(messages);
            ConnInfo::count(&self.outbox.info().messages_in, messages);
        }
        let taken = Taken {
            turn,
            deliveries: batch.deliveries,
            failure,
            too_many_bad,
        };
        (batch.into_event(login), taken)
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

    /// Queues a line from the server to this client.
    fn say(&self, line: Vec<u8>) {
        let _ = self.outbox.send(Out::Server(line));
    }
}

impl Reader {
    /// Records why a failed read ends the connection. A WebSocket session's refusal of
    /// what its client sent (its close frame already says why) is bad input: counted,
    /// and logged as a line too long or invalid UTF-8 is.
    fn read_failed(&self, e: &std::io::Error) {
        let Some(refused) = crate::transport::Refused::of(e) else {
            self.outbox.info().ending(read_error_reason(e));
            return;
        };
        self.ctx.metrics.transports.refused(refused.0);
        self.outbox.info().ending(match refused.0 {
            WsRefusal::TooBig => CloseReason::LineTooLong,
            WsRefusal::InvalidUtf8 => CloseReason::InvalidUtf8,
            _ => CloseReason::BadFrame,
        });
        warn!(error = %refused, "closing connection");
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

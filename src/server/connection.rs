//! One connection's life: its span, its queue, its reader and its writer (the two halves
//! of its one task), and the clean-up that follows whatever way they end, a panic
//! included.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_channel::Sender;
use futures::FutureExt;
use tracing::{debug, debug_span, error, info, info_span, Instrument};

use crate::metrics::{CloseReason, Metrics, Transport};
use crate::runtime::{self, Conn};
pub use crate::server::context::Context;
use crate::server::handshakes;
use crate::server::outbox;
use crate::server::reader::{self, Reader};
use crate::server::router::{ConnId, Event};
use crate::server::shutdown::{Shutdown, Void};
use crate::server::traced::Traced as _;
use crate::server::writer::Writer;
use crate::tls;

/// What a connection holds for as long as it lives.
pub struct Connection {
    pub conn: ConnId,
    pub stream: Conn,
    pub peer: SocketAddr,
    /// When it was accepted: `login_timeout` counts from here, TLS handshake included.
    pub accepted: std::time::Instant,
    /// The connection token: accepting pauses while `max_connections` of these are out.
    /// Never cloned (a clone would corrupt the count).
    pub token: crate::server::admission::Ticket,
    /// The per-address slot, when `max_connections_per_ip` is set.
    pub ip_slot: Option<Box<crate::server::admission::IpSlot>>,
    /// The router's queue, for its reader only (see [`Context`]).
    pub events: Sender<Event>,
    /// What it shares with the other connections accepted under the same limits.
    pub ctx: Arc<Context>,
    /// Dropped when the connection ends, so the drain knows when all are gone.
    pub alive: Sender<Void>,
    /// `[tls] client_identity = "login"` on this connection's TLS listener: its login
    /// must be a name of its client certificate.
    pub identity: bool,
    /// What it arrived over, for the metrics and `/connections`.
    pub transport: Transport,
}

/// What a connection keeps for the end of its life, to finish once its reader and its
/// writer are both done.
struct Held {
    metrics: Arc<Metrics>,
    token: crate::server::admission::Ticket,
    ip_slot: Option<Box<crate::server::admission::IpSlot>>,
    alive: Sender<Void>,
    /// The connection's queue, for the figures of its close line (and its transport).
    queue: Arc<crate::server::outbox::Queue>,
}

/// What the reader's half hands on when it ends: how it ended (`None`: it panicked) and
/// whether the connection ever logged in.
type Ended = Option<(reader::End, bool)>;

impl Connection {
    /// The life of a connection on a TLS listener: the handshake first (within
    /// `login_timeout`, which the login then shares; a bounded number at once, off this
    /// thread, see [`handshakes`]), then [`Connection::serve`].
    ///
    /// Built from combinators, as `serve` is: the handshake (boxed, given back once the
    /// session is up) and the connection's life take turns in one slot of the task. An
    /// `async fn` kept the connection twice and the handshake's result (1.2 KiB) beside
    /// the whole life of the connection: 1.4 KiB more per idle TLS connection.
    pub fn serve_tls(mut self, tls: Arc<tls::Server>) -> impl Future<Output = ()> + Send {
        let span = info_span!("conn", conn = self.conn, peer = %self.peer);
        // What is left of login_timeout: a PROXY header may have taken some of it.
        let deadline = self
            .ctx
            .limits
            .login_timeout
            .saturating_sub(self.accepted.elapsed());
        let identity = tls.client_identity;
        let (sock, metrics) = (self.stream.sock(), self.ctx.metrics.clone());
        let handshake = Box::pin(async move {
            let shaken = runtime::timeout(deadline, handshakes::shake(tls, sock, &metrics));
            shaken.await.unwrap_or(Err(tls::Failure::Timeout))
        });
        let failed = span.clone();
        let handshake = until_drain(handshake, self.ctx.shutdown.clone());
        handshake.instrument(span).then(move |shaken| match shaken {
            Some(Ok(session)) => {
                self.ctx.metrics.tls_handshakes.inc();
                self.identity = identity;
                self.stream = self.stream.into_tls(session);
                futures::future::Either::Left(self.serve())
            }
            Some(Err(why)) => {
                // Scanners and port probes do this all day: counted, not logged above
                // debug.
                self.ctx.metrics.tls_handshake_failed(why);
                failed.in_scope(|| debug!(reason = why.label(), "TLS handshake failed"));
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                futures::future::Either::Right(futures::future::ready(()))
            }
            None => {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                futures::future::Either::Right(futures::future::ready(()))
            }
        })
    }

    /// The connection's whole life, as one task: its reader and its writer are the two
    /// halves of it, joined.
    ///
    /// One task, not a task each: a task costs its header, its task-locals and a slot in
    /// the executor (about 250 B of every idle connection's memory), and the two halves
    /// still wake apart (see [`runtime::join_halves`]): a wake of the writer does not poll
    /// the reader, nor the other way round. Data still flows one way, reader → router →
    /// queue → writer; only the task that carries the halves is shared.
    ///
    /// Built from combinators rather than written as one `async` block, so that the task
    /// stores the reader's state once, not beside copies of everything moved into it:
    /// this is most of an idle connection's memory.
    pub fn serve(self) -> impl Future<Output = ()> + Send + 'static {
        let span =
            info_span!("conn", conn = self.conn, peer = %self.peer, login = tracing::field::Empty);
        let (reading, writing, held) = span.in_scope(|| self.open());
        runtime::join_halves(reading, writing, held.queue.halves.clone())
            .map(move |(ended, ())| held.close(ended))
            .instrument(span)
    }

    /// The connection's two halves (each in its own span, inside the connection's) and
    /// what is held until both are done.
    fn open(
        self,
    ) -> (
        impl Future<Output = Ended> + Send + 'static,
        impl Future<Output = ()> + Send + 'static,
        Held,
    ) {
        debug!("connection opened");
        let (ctx, metrics) = (self.ctx.clone(), self.ctx.metrics.clone());
        metrics.connections_open.inc();
        metrics.transports.opened(self.transport);
        let info = crate::server::conninfo::ConnInfo::new(self.conn, self.peer, self.transport);
        let (outbox, inbox) = outbox::new(self.stream, ctx.budget.clone(), info);
        let queue = inbox.queue.clone();
        let writer = Writer {
            inbox,
            ctx: ctx.clone(),
        };
        // Holds the socket for the writer's panic path below.
        let socket = queue.clone();
        // The reader's and the writer's own spans are at debug: at info, a span per half
        // kept in the subscriber's registry cost 0.6 KiB of every idle connection's
        // memory, and their events carry the connection's span anyway.
        let writing = isolate(writer.run(), metrics.clone())
            .map(move |ran| {
                if ran.is_none() {
                    // Without its writer the connection is useless: end the reader too.
                    let _ = socket.stream().shutdown(std::net::Shutdown::Both);
                }
            })
            .traced(debug_span!("writer"));
        let rate = super::rate::Bucket::new(&ctx.limits);
        let reader = Reader {
            outbox,
            events: self.events.clone(),
            ctx: ctx.clone(),
            accepted: self.accepted,
            span: tracing::Span::current(),
            emptied: false,
            rate,
            slowed: false,
            identity: self.identity,
        };
        let (events, left) = (self.events, queue.clone());
        let reading = isolate(reader.run(), metrics.clone())
            .traced(debug_span!("reader"))
            // Boxed: leaving runs once, and an idle connection keeps no room for it.
            .then(move |ended| Box::pin(leave(events, left, ended)));
        let held = Held {
            metrics,
            token: self.token,
            ip_slot: self.ip_slot,
            alive: self.alive,
            queue,
        };
        (reading, writing, held)
    }
}

/// After the reader: frees the login it held (unless draining) and lets go of the
/// router's queue. The reader's queue handle went with the reader; once the router lets
/// go too, the writer flushes and closes.
async fn leave(
    events: Sender<Event>,
    queue: Arc<crate::server::outbox::Queue>,
    ended: Ended,
) -> Ended {
    // After a drain the router keeps the login until every reader is done, so that
    // lines still being routed reach this client; otherwise the login is freed now. The
    // login is read from the queue, where the reader recorded it once granted, so that a
    // reader that panicked frees it too.
    let login = queue.info.login.get().cloned();
    if let (false, Some(login)) = (matches!(ended, Some((reader::End::Drain, _))), login) {
        let conn = queue.info.conn;
        let _ = events.send(Event::Logout { conn, login }).await;
    }
    ended
}

impl Held {
    /// After both halves: counts the close, logs it, and lets go of the connection's token
    /// and slots.
    fn close(self, ended: Ended) {
        let logged_in = ended.is_some_and(|(_, logged_in)| logged_in);
        let end = ended.map(|(end, _)| end);
        self.metrics.connections_open.dec();
        self.metrics.transports.closed(self.queue.info.transport);
        // At info for the connections that logged in; probes, scanners and refused
        // logins only at debug (their refusal, if any, was logged already).
        let info = &self.queue.info;
        if let Some(why) = self.queue.cut_reason() {
            info.ending(why.close_reason());
        }
        if end == Some(reader::End::Drain) {
            info.ending(CloseReason::Drain);
        }
        self.metrics.operator.closed(info.reason());
        use crate::server::conninfo::ConnInfo as C;
        macro_rules! closed {
            ($level:ident) => {
                $level!(
                    reason = info.reason().label(),
                    duration_ms = info.duration().as_millis() as u64,
                    bytes_in = C::get(&info.bytes_in),
                    bytes_out = C::get(&info.bytes_out),
                    messages_in = C::counted(&info.messages_in),
                    messages_out = C::counted(&info.messages_out),
                    "connection closed"
                )
            };
        }
        if logged_in {
            closed!(info);
        } else {
            closed!(debug);
        }
        drop(self.token);
        drop(self.ip_slot);
        drop(self.alive);
    }
}

/// `opening` (a TLS handshake, a WebSocket request), or `None` once the drain begins: a
/// connection still opening holds no login and has sent no line, so the drain does not
/// wait for it (it would wait out `login_timeout` for a client that never finishes).
pub fn until_drain<F: Future>(
    opening: F,
    shutdown: Shutdown,
) -> impl Future<Output = Option<F::Output>> {
    use futures_lite::future::FutureExt as _;
    opening.map(Some).or(async move {
        shutdown.wait().await;
        None
    })
}

/// Runs one task of a connection so that a panic inside it ends that task only: the
/// panic is logged in the connection's span (by the panic hook, and here) and counted.
///
/// A plain function returning a combinator, not an `async fn`: an `async fn` would keep
/// room for `task` twice (argument and inner future), and this runs once per connection.
pub fn isolate<F: Future>(
    task: F,
    metrics: Arc<Metrics>,
) -> impl Future<Output = Option<F::Output>> {
    AssertUnwindSafe(task)
        .catch_unwind()
        .map(move |result| match result {
            Ok(output) => Some(output),
            Err(panic) => {
                metrics.panics.inc();
                error!(
                    panic = panic_message(&*panic),
                    "connection task panicked; closing this connection"
                );
                None
            }
        })
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_contained_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let out = runtime::block_on(isolate(async { panic!("boom") }, metrics.clone()));
        assert_eq!(out, None::<()>);
        assert_eq!(metrics.panics.get(), 1);
        let out = runtime::block_on(isolate(async { 7 }, metrics.clone()));
        assert_eq!(out, Some(7));
        assert_eq!(metrics.panics.get(), 1);
    }

    /// A connection's reader and writer are halves of one task: a panic in one ends that
    /// half only, and the other runs to its end (the writer flushes, the clean-up runs).
    #[test]
    fn a_panic_in_one_half_ends_that_half_only() {
        let metrics = Arc::new(Metrics::new());
        let out = runtime::block_on(runtime::join_halves(
            isolate(async { panic!("reader") }, metrics.clone()),
            isolate(
                async {
                    runtime::sleep(std::time::Duration::from_millis(5)).await;
                    7
                },
                metrics.clone(),
            ),
            Arc::default(),
        ));
        assert_eq!(out, (None::<()>, Some(7)));
        assert_eq!(metrics.panics.get(), 1);
    }
}

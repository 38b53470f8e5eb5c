//! One connection's life: its span, its queue, its writer task and its reader, and
//! the clean-up that follows whatever way the reader ends, a panic included.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_channel::Sender;
use async_listen::backpressure::Token;
use futures::FutureExt;
use tracing::{error, info, info_span, Instrument};

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::runtime::{self, Conn};
use crate::server::outbox;
use crate::server::reader::{self, Reader};
use crate::server::router::{ConnId, Event};
use crate::server::shutdown::{Shutdown, Void};
use crate::server::writer::Writer;

/// What a connection holds for as long as it lives.
pub struct Connection {
    pub conn: ConnId,
    pub stream: Conn,
    pub peer: SocketAddr,
    /// The connection token: accepting pauses while `max_connections` of these are out.
    /// Never cloned (a clone would corrupt the count).
    pub token: Token,
    /// The per-address slot, when `max_connections_per_ip` is set.
    pub ip_slot: Option<crate::server::accept::IpSlot>,
    pub events: Sender<Event>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// Dropped when the connection ends, so the drain knows when all are gone.
    pub alive: Sender<Void>,
}

impl Connection {
    pub async fn serve(self) {
        let span =
            info_span!("conn", conn = self.conn, peer = %self.peer, login = tracing::field::Empty);
        let metrics = self.metrics.clone();
        async move {
            info!("connection opened");
            metrics.connections_open.inc();
            let (outbox, inbox) =
                outbox::new(self.stream.clone(), self.limits.outbound_queue_bytes);
            let writer = Writer {
                stream: self.stream.clone(),
                inbox,
                metrics: metrics.clone(),
                write_timeout: self.limits.write_timeout,
                shutdown: self.shutdown.clone(),
            };
            let (stream, writer_metrics) = (self.stream.clone(), metrics.clone());
            let writer = runtime::spawn(
                async move {
                    if isolate(writer.run(), &writer_metrics).await.is_none() {
                        // Without its writer the connection is useless: end the reader too.
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                }
                .instrument(info_span!("writer")),
            );
            let reader = Reader {
                conn: self.conn,
                stream: self.stream,
                outbox,
                events: self.events.clone(),
                limits: self.limits,
                metrics: metrics.clone(),
                shutdown: self.shutdown,
                span: tracing::Span::current(),
                emptied: false,
            };
            let end = isolate(reader.run(), &metrics)
                .instrument(info_span!("reader"))
                .await;
            // After a drain the router keeps the login until every reader is done, so that
            // lines still being routed reach this client; otherwise the login is freed now.
            if end != Some(reader::End::Drain) {
                let _ = self.events.send(Event::Logout { conn: self.conn }).await;
            }
            // The reader's queue handle is gone; once the router lets go too, the writer
            // flushes and closes.
            drop(self.events);
            writer.await;
            metrics.connections_open.dec();
            info!("connection closed");
            drop(self.token);
            drop(self.ip_slot);
            drop(self.alive);
        }
        .instrument(span)
        .await
    }
}

/// Runs one task of a connection so that a panic inside it ends that task only: the
/// panic is logged in the connection's span (by the panic hook, and here) and counted.
///
/// A plain function returning a combinator, not an `async fn`: an `async fn` would keep
/// room for `task` twice (argument and inner future), and this runs once per connection.
pub fn isolate<'a, F: Future + 'a>(
    task: F,
    metrics: &'a Metrics,
) -> impl Future<Output = Option<F::Output>> + 'a {
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
        let metrics = Metrics::new();
        let out = runtime::block_on(isolate(async { panic!("boom") }, &metrics));
        assert_eq!(out, None::<()>);
        assert_eq!(metrics.panics.get(), 1);
        let out = runtime::block_on(isolate(async { 7 }, &metrics));
        assert_eq!(out, Some(7));
        assert_eq!(metrics.panics.get(), 1);
    }
}

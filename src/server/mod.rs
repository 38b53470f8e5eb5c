//! The chat server: wires the accept loop, the router, and each connection's reader
//! and writer, and runs the drain of ARCHITECTURE §5 when the shutdown future resolves.
//!
//! Data flows one way, reader → router → writer, and shutdown travels the same way by
//! dropping senders: the accept loop stops (closing the listening sockets), each reader
//! stops at a line boundary and drops its sender, the router ends when the last sender
//! is gone and drops every queue, and each writer flushes, says goodbye, and closes.

mod accept;
mod admission;
mod badlines;
pub mod bans;
mod budget;
mod connection;
pub mod conninfo;
mod context;
pub mod drain;
mod elsewhere;
pub(crate) mod event;
mod handshakes;
pub mod kick;
mod line;
mod live;
mod online;
pub(crate) mod outbox;
mod prelogin;
mod proxied;
mod rate;
mod reader;
mod route;
mod router;
pub mod shutdown;
mod throttle;
mod traced;
mod websocket;
mod writer;

pub use drain::Summary;
pub use live::{percent_decoded, Live, QueryError};
pub use outbox::Closing;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future::FutureExt as _;
use tracing::{info, info_span, Instrument};

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::{self, TcpListener};
use crate::tls;

/// How many reader batches may wait for the router before readers wait too.
const ROUTER_QUEUE: usize = 64;

/// A bound chat listener, plain or TLS.
pub struct Listener {
    pub socket: TcpListener,
    /// The TLS settings every connection it accepts must complete a handshake with first.
    pub tls: Option<Arc<tls::Server>>,
    /// On a WebSocket listener (`[websocket]`): which pages may open a session, and the page.
    pub websocket: Option<Arc<crate::transport::http::Front>>,
}

/// Serves chat on already-bound `listeners` until `shutdown` resolves, then drains and
/// returns the summary. Bounded by `[shutdown] drain_timeout` once the drain begins.
/// With `auth`, every login line is `NAME PASSWORD` checked against its users. With
/// `cluster`, logins are claimed in the cluster's registry and messages reach the other
/// nodes' logins; the node leaves the cluster when the drain ends.
pub async fn run(
    listeners: Vec<Listener>,
    config: Arc<Config>,
    live: Arc<Live>,
    auth: Option<Arc<Auth>>,
    cluster: Option<crate::cluster::Node>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Summary {
    let (cluster_router, cluster_task) = match cluster {
        Some(node) => {
            *live.relay_rules.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(node.router.shared.rules.clone());
            (Some(node.router), Some(node.task))
        }
        None => (None, None),
    };
    let addrs: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.socket.local_addr().ok())
        .collect();
    let (drain_trigger, drain) = shutdown::channel();
    let (accepting, stop_accepting) = shutdown::channel();
    *live.accepting.lock().unwrap_or_else(|e| e.into_inner()) = Some(accepting);
    let (alive, all_closed) = shutdown::task_group();
    let (events, router_events) = async_channel::bounded(ROUTER_QUEUE);
    *live.router.lock().unwrap_or_else(|e| e.into_inner()) = Some(events.downgrade());
    let router = runtime::spawn(
        router::run(
            router_events,
            metrics.clone(),
            cluster_router,
            live.bans.clone(),
        )
        .instrument(info_span!("router")),
    );
    let acceptor = accept::Acceptor {
        listeners,
        config: config.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        events,
        auth,
        shutdown: drain,
        stop: stop_accepting,
        alive,
        context: std::sync::Mutex::new(None),
    };
    let accept_span = accept::span(&addrs);
    let accepting = runtime::spawn(acceptor.run().instrument(accept_span));

    shutdown.await;

    let started = Instant::now();
    metrics.draining.set(1);
    let at_start = drain::AtStart::take(&metrics);
    let open = metrics.connections_open.get();
    info!(connections = open, deadline = ?config.shutdown.drain_timeout, "drain started");
    drop(drain_trigger);
    // Readers waiting for input look at the drain signal when woken.
    for queue in live.budget.queues() {
        queue.wake_reader();
    }
    live.stop_accepting();
    let drained = async {
        accepting.await;
        shutdown::wait_all(all_closed).await;
        router.await;
        // The router is gone with its commands: the link frees this node's logins.
        if let Some(link) = cluster_task {
            link.await;
        }
        true
    };
    let deadline = async {
        runtime::sleep(config.shutdown.drain_timeout).await;
        false
    };
    let completed = drained.or(deadline).await;
    let summary = drain::summarize(&metrics, at_start, completed, started.elapsed());
    metrics.draining.set(0);
    summary
}

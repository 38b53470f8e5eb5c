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
mod budget;
mod connection;
pub mod conninfo;
pub mod drain;
mod elsewhere;
pub(crate) mod event;
mod handshakes;
pub(crate) mod outbox;
mod prelogin;
mod proxied;
mod reader;
mod router;
pub mod shutdown;
mod writer;

pub use drain::Summary;

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use futures_lite::future::FutureExt as _;
use tracing::{info, info_span, Instrument};

use crate::auth::Auth;
use crate::config::{Config, Limits};
use crate::metrics::Metrics;
use crate::runtime::{self, TcpListener};
use crate::tls;

/// How many reader batches may wait for the router before readers wait too.
const ROUTER_QUEUE: usize = 64;

/// The settings a reload (SIGHUP) changes while connections run: the limits new
/// connections get, and the queue bounds every connection is measured against.
pub struct Live {
    /// What each new connection takes at accept; connections keep the limits they got.
    limits: RwLock<Arc<Limits>>,
    /// The queue bounds and their running total, shared by every connection.
    budget: Arc<outbox::Budget>,
    /// The router's inbox, to tell it about a reload; weak, so that it never keeps the
    /// router (and the drain) alive.
    router: Mutex<Option<async_channel::WeakSender<router::Event>>>,
    /// In a cluster: the limits input relayed through Redis is checked against, changed
    /// with `[limits]`.
    relay_rules: Mutex<Option<Arc<crate::cluster::checks::LiveRules>>>,
}

impl Live {
    pub fn new(limits: &Limits, metrics: &Metrics) -> Arc<Live> {
        Arc::new(Live {
            limits: RwLock::new(Arc::new(limits.clone())),
            budget: outbox::Budget::new(limits, metrics),
            router: Mutex::new(None),
            relay_rules: Mutex::new(None),
        })
    }

    /// `GET /connections?sort=queued|bytes_out|since&limit=N&login=NAME`: one JSON object
    /// per open connection, the most first (oldest first for `since`), at most `limit`
    /// (100 by default, 1000 at most), in `{"total": N, "connections": [...]}`.
    pub fn connections_json(&self, query: &str) -> Result<String, String> {
        let (mut sort, mut limit, mut login) = ("queued", 100usize, None::<String>);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sort" if matches!(value, "queued" | "bytes_out" | "since") => sort = value,
                "sort" => {
                    return Err(format!(
                        "sort={value:?}: sort by queued (the default), bytes_out or since"
                    ))
                }
                "limit" => match value.parse() {
                    Ok(n) if n <= 1000 => limit = n,
                    _ => return Err(format!("limit={value:?}: a number from 0 to 1000")),
                },
                "login" => login = Some(percent_decoded(value)),
                _ => {
                    return Err(format!(
                        "{key:?} is not a parameter of /connections: sort, limit or login"
                    ))
                }
            }
        }
        // A login is found by its look, as the chat finds recipients: `Alice` finds
        // `alice`.
        let look = login.as_deref().map(crate::names::canonical);
        use conninfo::ConnInfo as C;
        // Each row's sort key is read once; only the `limit` first rows are put in order
        // (a selection, then a sort of those), so a large daemon costs one pass over its
        // connections, not a sort of all of them.
        let mut rows: Vec<(u64, u64, Arc<outbox::Queue>)> = self
            .budget
            .queues()
            .into_iter()
            .filter(|q| match (&login, &look) {
                (Some(name), Some(look)) => q
                    .info
                    .login
                    .get()
                    .is_some_and(|l| **l == **name || crate::names::canonical(l) == *look),
                _ => true,
            })
            .map(|q| {
                let key = match sort {
                    "bytes_out" => u64::MAX - C::get(&q.info.bytes_out),
                    // Ties (the same millisecond) in accept order.
                    "since" => q.info.since_ms,
                    _ => u64::MAX - q.queued() as u64,
                };
                (key, q.info.conn, q)
            })
            .collect();
        let total = rows.len();
        if limit < rows.len() {
            if limit == 0 {
                rows.clear();
            } else {
                rows.select_nth_unstable_by_key(limit - 1, |(key, conn, _)| (*key, *conn));
                rows.truncate(limit);
            }
        }
        rows.sort_unstable_by_key(|(key, conn, _)| (*key, *conn));
        let objects: Vec<String> = rows
            .iter()
            .map(|(_, _, q)| q.info.json(q.queued()))
            .collect();
        Ok(format!(
            "{{\"total\":{total},\"connections\":[{}]}}\n",
            objects.join(",")
        ))
    }

    /// Disconnects the logged-in users that `users` no longer holds (after a reload of
    /// the users file), with `notice: account removed`.
    pub fn revoke_removed(&self, users: Arc<Auth>) {
        let router = self
            .router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(events) = router.and_then(|weak| weak.upgrade()) {
            runtime::spawn(async move {
                let _ = events.send(router::Event::Revoke { users }).await;
            });
        }
    }

    /// The limits for a connection accepted now.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New limits: for connections accepted from now on, and the queue bounds for all.
    pub fn set_limits(&self, limits: &Limits) {
        if let Some(rules) = &*self.relay_rules.lock().unwrap_or_else(|e| e.into_inner()) {
            rules.set(crate::cluster::checks::Rules::of(limits));
        }
        self.budget.set(limits);
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(limits.clone());
    }
}

/// A bound chat listener, plain or TLS.
pub struct Listener {
    pub socket: TcpListener,
    /// The TLS settings every connection it accepts must complete a handshake with first.
    pub tls: Option<Arc<tls::Server>>,
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
    let (alive, all_closed) = shutdown::task_group();
    let (events, router_events) = async_channel::bounded(ROUTER_QUEUE);
    *live.router.lock().unwrap_or_else(|e| e.into_inner()) = Some(events.downgrade());
    let router = runtime::spawn(
        router::run(router_events, metrics.clone(), cluster_router)
            .instrument(info_span!("router")),
    );
    let acceptor = accept::Acceptor {
        listeners,
        config: config.clone(),
        live,
        metrics: metrics.clone(),
        events,
        auth,
        shutdown: drain,
        alive,
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

/// `%XX` escapes of a query value decoded (`+` is a space); invalid escapes stay as they are.
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decoded;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decoded("al%69ce"), "alice");
        assert_eq!(percent_decoded("%D0%B0lice"), "аlice");
        assert_eq!(percent_decoded("a+b%zz%"), "a b%zz%");
        assert_eq!(percent_decoded("%é"), "%é");
    }
}

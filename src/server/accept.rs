//! The accept loop (ARCHITECTURE §4): connection tokens, per-address caps, and accept errors
//! sorted into the per-connection kind (skipped at once) and the resource-shortage kind
//! (EMFILE and friends: a warning, then a pause, never an exit and never a spin).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use async_channel::Sender;
use async_listen::{backpressure, error_hint, is_transient_error};
use futures::stream::{self, Stream, StreamExt};
use futures::AsyncWriteExt;
use futures_lite::future::FutureExt as _;
use std::time::Duration;
use tracing::{debug, info, info_span, warn};

use crate::auth::Auth;
use crate::config::{AtCapacity, Config};
use crate::metrics::{Metrics, Refusal};
use crate::runtime::{self, Conn, TcpStream};
use crate::server::admission::{Door, PerIp, Ticket};
use crate::server::connection::{Connection, Context};
use crate::server::router::Event;
use crate::server::shutdown::{Shutdown, Void};
use crate::server::websocket::Speaks;
use crate::server::{Listener, Live};

/// Connections accepted in a row before the loop lets other tasks run, so that a storm
/// empties the kernel's queue in large gulps (a few milliseconds each) instead of letting
/// it overflow while new connections log in. With 64, a 10 000-client storm overflowed
/// the queue 118-271 times (each a one-second SYN retransmit); with 1024, 0 in most runs.
/// While the loop yields, the logins it started run first: `listen_backlog` (4096 by
/// default) holds what arrives meanwhile (BENCHMARKS.md, "Storms without a tail").
const ACCEPT_BURST: u64 = 1024;

/// An accept's result, and what the listener it came from speaks.
type Accepted = (std::io::Result<(TcpStream, SocketAddr)>, Speaks);

/// Everything the accept loop needs.
pub struct Acceptor {
    pub listeners: Vec<Listener>,
    pub config: Arc<Config>,
    /// The limits and queue bounds, which a reload may change.
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// Handed to every connection for its reader.
    pub events: Sender<Event>,
    /// With `[auth] users_file`: handed to every connection for its login.
    pub auth: Option<Arc<Auth>>,
    /// Handed to every connection: the drain has begun.
    pub shutdown: Shutdown,
    /// Accepting stops: at the drain, or earlier in lame duck mode.
    pub stop: Shutdown,
    /// Handed to every connection; the drain waits until all are dropped.
    pub alive: Sender<Void>,
    /// What the connections accepted under the limits in force share (see [`Context`]);
    /// made again when a reload changes the limits.
    pub context: std::sync::Mutex<Option<Arc<Context>>>,
}

impl Acceptor {
    /// Accepts until the drain begins, then returns, closing every listening socket.
    pub async fn run(mut self) {
        let server = &self.config.server;
        let (tokens, mut capacity) = backpressure::new(server.max_connections);
        // Each connection that ends says so here, to cut short a pause after a resource
        // shortage (EMFILE): its descriptor is free again.
        let (freed, freed_rx) = async_channel::bounded::<()>(1);
        let mut last_warning: Option<std::time::Instant> = None;
        let per_ip = PerIp::new(server.max_connections_per_ip);
        let throttle = crate::server::throttle::Throttle::new(
            server.connects_per_address,
            server.connects_window,
            server.connects_exempt.clone(),
        );
        let door = Door::new(self.live.bans.clone(), throttle);
        let mut incoming = stream::select_all(
            std::mem::take(&mut self.listeners)
                .into_iter()
                .map(accepted),
        );
        let mut next_conn = 0u64;
        let refuse_at_cap = server.at_capacity == AtCapacity::Refuse;
        loop {
            let full = tokens.get_active_tokens() >= server.max_connections;
            if full && !refuse_at_cap {
                self.metrics.accept_paused_at_cap.inc();
                debug!(
                    max_connections = server.max_connections,
                    "all connection tokens in use: accepting paused"
                );
            }
            if !refuse_at_cap {
                let ready = async {
                    capacity.has_capacity().await;
                    true
                };
                if !ready.or(self.stopped()).await {
                    break;
                }
            }
            let next = async { incoming.next().await };
            let (accepted, speaks) = match next
                .or(async {
                    self.stop.wait().await;
                    None
                })
                .await
            {
                None => break,
                Some(accepted) => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_transient_error(&e) => {
                    self.metrics.accept_errors_per_connection.inc();
                    debug!(error = %e, "accept error for one connection; accepting the next");
                    continue;
                }
                Err(e) => {
                    if !self.pause_after(&e, &freed_rx, &mut last_warning).await {
                        break;
                    }
                    continue;
                }
            };
            if refuse_at_cap && tokens.get_active_tokens() >= server.max_connections {
                // At the cap with at_capacity = "refuse": told and closed at once, without
                // a token, a task or a descriptor kept past this line.
                self.metrics.refused(Refusal::ServerFull);
                debug!(%peer, "refused: server full (max_connections)");
                refuse_now(stream, &self.metrics, speaks.refusal(FULL, 503));
                continue;
            }
            self.metrics.connections_accepted.inc();
            next_conn += 1;
            let token = Ticket {
                _token: tokens.token(),
                freed: freed.clone(),
            };
            self.admit(next_conn, stream, peer, speaks, token, (&per_ip, &door));
            // The loop takes what the backlog holds without waiting (each accept returns at
            // once while connections are queued), and gives the connections already open a
            // turn every ACCEPT_BURST, so a reconnect storm does not stall their chats.
            if next_conn.is_multiple_of(ACCEPT_BURST) {
                futures_lite::future::yield_now().await;
            }
        }
        // Close the listening sockets before saying so: from here on, connects are refused.
        drop(incoming);
        info!("stopped accepting: listening sockets closed");
    }

    /// After a resource shortage (EMFILE...): counts it, warns once per
    /// `accept_error_sleep` at most, and pauses that long, or until a connection ends and
    /// frees a descriptor. False when the drain began meanwhile.
    async fn pause_after(
        &self,
        e: &std::io::Error,
        freed_rx: &async_channel::Receiver<()>,
        last_warning: &mut Option<std::time::Instant>,
    ) -> bool {
        let server = &self.config.server;
        self.metrics.accept_errors_resource.inc();
        // One warning per accept_error_sleep at most: retries after each connection that
        // ends can come by the hundred a second.
        let now = std::time::Instant::now();
        if last_warning.is_none_or(|at| now - at >= server.accept_error_sleep) {
            *last_warning = Some(now);
            warn!(error = %e, hint = %error_hint(e), pause = ?server.accept_error_sleep, "accept failed: pausing");
        } else {
            debug!(error = %e, "accept failed again: pausing");
        }
        let _ = freed_rx.try_recv();
        let pause = async {
            runtime::sleep(server.accept_error_sleep).await;
            true
        };
        // A connection that ends frees a descriptor: try again then, instead of sleeping
        // the whole pause while a storm's dead connections wait in the backlog to be
        // accepted and closed.
        let freed_one = async {
            let _ = freed_rx.recv().await;
            true
        };
        pause.or(freed_one).or(self.stopped()).await
    }

    /// Admits connection `conn` (holding `token`): the per-address cap (for a balancer's
    /// connection, once its PROXY header names the client), then its tasks.
    fn admit(
        &self,
        conn: u64,
        stream: TcpStream,
        peer: SocketAddr,
        speaks: Speaks,
        token: Ticket,
        (per_ip, door): (&PerIp, &Door),
    ) {
        // A balancer's connection owes a PROXY header, and the per-address cap applies
        // to the client it names, once it is read (see `proxied`).
        let proxied = (self.config.server)
            .proxy_protocol_from
            .iter()
            .any(|s| s.contains(peer.ip()));
        if !proxied {
            if let Err(shut) = door.check(peer.ip()) {
                // At debug: a reconnect loop is what the throttle is for, and must not
                // fill the log; the refusals are counted.
                self.metrics.refused(shut.refusal());
                debug!(%peer, why = shut.line(), "refused at the door");
                let answer = speaks.refusal(shut.line(), shut.status());
                runtime::spawn(refuse(stream, token, self.metrics.clone(), answer));
                return;
            }
        }
        let admitted = match proxied {
            true => Some(None),
            false => per_ip.take(peer.ip()),
        };
        let ip_slot = match admitted {
            Some(slot) => slot,
            None => {
                self.metrics.refused(Refusal::PerIp);
                info!(%peer, "refused: too many connections from this address");
                let answer = speaks.refusal("too many connections from your address", 429);
                runtime::spawn(refuse(stream, token, self.metrics.clone(), answer));
                return;
            }
        };
        let ctx = self.context();
        let stream = match Conn::from_accepted(stream, ctx.limits.dead_peer_timeout) {
            Ok(stream) => stream,
            Err(e) => {
                // The client is already gone (a reset right after the handshake).
                self.metrics.accept_errors_per_connection.inc();
                debug!(error = %e, %peer, "dropping a connection that failed before its first byte");
                return;
            }
        };
        let connection = Connection {
            conn,
            stream,
            peer,
            accepted: std::time::Instant::now(),
            token,
            ip_slot,
            events: self.events.clone(),
            ctx,
            alive: self.alive.clone(),
            identity: false,
            transport: speaks.transport(),
        };
        match proxied {
            true => runtime::spawn_detached(connection.serve_proxied(
                speaks,
                per_ip.clone(),
                door.clone(),
            )),
            false => connection.start(speaks),
        }
    }

    /// The context of a connection accepted now: the one made under the limits in force.
    fn context(&self) -> Arc<Context> {
        let limits = self.live.limits();
        let mut cached = self.context.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some(ctx) if Arc::ptr_eq(&ctx.limits, &limits) => ctx.clone(),
            _ => {
                let ctx = Arc::new(Context {
                    limits,
                    budget: self.live.budget.clone(),
                    auth: self.auth.clone(),
                    metrics: self.metrics.clone(),
                    shutdown: self.shutdown.clone(),
                });
                *cached = Some(ctx.clone());
                ctx
            }
        }
    }

    async fn stopped(&self) -> bool {
        self.stop.wait().await;
        false
    }
}

/// An owned stream of accepted connections (the listener moves into it).
fn accepted(listener: Listener) -> Pin<Box<dyn Stream<Item = Accepted> + Send>> {
    Box::pin(stream::unfold(listener, |listener| async move {
        let result = listener.socket.accept().await;
        let speaks = Speaks {
            tls: listener.tls.clone(),
            websocket: listener.websocket.clone(),
        };
        Some(((result, speaks), listener))
    }))
}

/// What a connection refused at the cap is told.
const FULL: &str = "server full, try again later";

/// Answers a connection that arrived at the cap with `line` (one write the socket takes
/// at once, or nothing) and closes it.
fn refuse_now(stream: TcpStream, metrics: &Metrics, line: Vec<u8>) {
    if let Ok(mut std_stream) = std::net::TcpStream::try_from(stream) {
        use std::io::Write as _;
        if let Ok(n) = std_stream.write(&line) {
            metrics.bytes_out.inc_by(n as u64);
        }
        let _ = std_stream.shutdown(std::net::Shutdown::Write);
    }
}

/// Answers a connection refused at the door (a ban, the throttle, the per-address cap)
/// with `line` (see `Speaks::refusal`) and closes it, without blocking the loop.
async fn refuse(mut stream: TcpStream, token: Ticket, metrics: Arc<Metrics>, line: Vec<u8>) {
    let sent = runtime::timeout(Duration::from_secs(1), stream.write_all(&line)).await;
    if let Ok(Ok(())) = sent {
        metrics.bytes_out.inc_by(line.len() as u64);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    drop(token);
}

/// The span every accept-loop event carries.
pub fn span(addrs: &[SocketAddr]) -> tracing::Span {
    let listen = addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    info_span!("accept", listen = %listen)
}

//! The admin HTTP endpoint (ARCHITECTURE §6): `GET /metrics`, `/healthz`
//! (liveness) and `/readyz` (readiness: 503 from the moment the drain begins) on a
//! listener of its own, off unless `[admin] listen` is set.
//!
//! `/metrics` answers in OpenMetrics text when the `Accept` header asks for it, as
//! Prometheus servers do, and in the classic Prometheus text format otherwise (curl,
//! `promtool check metrics`): same samples, two spellings.
//!
//! It is deliberately small: HTTP/1.1 heads parsed with `httparse`, no request bodies,
//! keep-alive for scrapers that reuse connections. It is also deliberately fenced off from
//! the chat listener: its own task and span, its own connection cap (so it can never use
//! up the descriptors chat connections need), a deadline on every request (a client that
//! trickles bytes costs one of those capped slots for a few seconds, nothing more), and
//! errors that end one admin connection and nothing else. It runs on the threads apart
//! from the chat's (`runtime::spawn_apart`, at nice 10): scrapers and `/connections`
//! clients, however many and however fast, never take a turn of the chat's thread.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_listen::{error_hint, ListenExt};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use tracing::{debug, error, info_span, warn, Instrument};

mod connections;
mod gate;
mod http;
mod routes;
mod slots;
mod tokens;

pub use crate::health::Health;
use crate::metrics::Metrics;
use crate::runtime::{self, TcpListener, TcpStream};
pub use crate::server::{Closing, QueryError};
pub use gate::Gate;
pub use http::MAX_HEAD_BYTES;
#[cfg(test)]
use http::{accepts_openmetrics, parse, MAX_HEADERS};
use http::{read_head, response, Head, Request, READ_CHUNK};
use routes::{route, Route};
use slots::{Slot, Slots};
pub use tokens::{Tokens, TokensError};

/// Admin connections served at once. A connection that arrives when all are taken takes
/// the place of the one that has waited longest for a request head (a client trickling
/// its request, or an idle keep-alive), so that tricklers cannot keep an orchestrator's
/// health probe waiting; if none is waiting, the newcomer is closed.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections closed to make room that may still hold their descriptor for a moment.
const CLOSING: usize = 4;
/// Requests served on one keep-alive connection before it is closed (the last response
/// says `Connection: close`), so that one client cannot keep a slot forever.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Time allowed to receive one whole request head, and to write one response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error answer, how long the connection keeps reading (and discarding) what the
/// client still sends, so that closing does not reset the connection before the client
/// has read the answer.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;

/// `/metrics` for clients that ask for OpenMetrics (Prometheus servers do).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `/metrics` for every other client (curl, `promtool check metrics`).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What the admin endpoint can ask of the daemon. The endpoint is a thin adapter: HTTP in,
/// one of these calls, HTTP out; the daemon implements it.
pub trait Control: Send + Sync + 'static {
    /// The `GET /connections` body (JSON) for a query string, or why the query cannot be
    /// answered (a 400). Called on a blocking thread, one at a time.
    fn connections(&self, query: &str) -> Result<String, QueryError>;
    /// Reloads the configuration file, as SIGHUP does, and says how it went.
    fn reload(&self) -> futures::future::BoxFuture<'static, Reloaded>;
    /// Closes connection `conn` with `notice: disconnected by the operator` (and
    /// `reason`, when given); `None` when no open connection has that id. `by` names the
    /// token that asked, for the audit log.
    fn close(&self, conn: u64, reason: Option<&str>, by: &str) -> Option<Closing>;
    /// Closes every connection logged in as `login`, as [`Control::close`] does.
    fn close_login(&self, login: &str, reason: Option<&str>, by: &str) -> Vec<Closing>;
    /// In a cluster, sends the kick of a login no connection here holds to the node that
    /// holds it; that node's name, or `None` when no node does (on a single node, always).
    fn forward_kick(
        &self,
        _login: &str,
        _reason: Option<&str>,
        _by: &str,
    ) -> futures::future::BoxFuture<'static, Option<String>> {
        Box::pin(async { None })
    }
    /// Starts lame duck mode (`/readyz` 503 at once, accepting stops after
    /// `[shutdown] drain_delay`, clients closed spread over `lame_duck_duration`, then the
    /// drain); false when it or the drain had begun already.
    fn lame_duck(&self, by: &str) -> bool;
    /// Starts the drain, as SIGTERM does; false when it had begun already.
    fn drain(&self, by: &str) -> bool;
    /// `GET /bans`: the bans in force, as JSON.
    fn bans(&self) -> String;
    /// Sets a ban and closes the connections it covers; the ban and the count closed as
    /// JSON, or why it cannot be set (a 400).
    fn ban(&self, ban: BanOrder, by: &str) -> Result<String, crate::server::bans::BanError>;
    /// Lifts ban `id`; false when there is none.
    fn lift(&self, id: u64, by: &str) -> bool;
}

/// What `POST /bans` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanOrder {
    pub target: Banning,
    /// How long the ban lasts.
    pub lasting: std::time::Duration,
    /// Why, as the operator said (shown to the banned client).
    pub reason: Option<String>,
}

/// What `POST /bans` asks to ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Banning {
    /// `?login=NAME`: the login and every one that looks the same.
    Login(String),
    /// `?address=ADDR` or `ADDR/PREFIX` (an IPv6 address alone stands for its /64).
    Address(String),
}

/// How a reload asked for with `POST /reload` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// Done; says what was applied (200).
    Applied(String),
    /// The file or what it names was refused; nothing changed (422).
    Failed(String),
    /// Not tried: too many waiting, or the daemon is going away (503).
    NotTried(String),
}

/// Everything the admin endpoint needs.
pub struct Admin {
    /// Already bound, so that a bind failure stops the daemon before chat starts.
    pub listener: TcpListener,
    /// Encoded for each `/metrics` request.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` answers.
    pub health: Arc<Health>,
    /// Runs before each `/metrics` encoding, to refresh values kept elsewhere (the log
    /// writer's count of dropped lines).
    pub on_scrape: Box<dyn Fn(&Metrics) + Send + Sync>,
    /// Pause after a resource-shortage accept error (EMFILE...), as for the chat listener.
    pub accept_error_sleep: Duration,
    /// The daemon: `GET /connections` (off the chat's threads, see [`connections`]) and
    /// `POST /reload`.
    pub control: Arc<dyn Control>,
    /// Who may use which path (`[admin] tokens_file`, `open_paths`), changed by reloads.
    pub gate: Arc<Gate>,
    /// `[admin] tls_cert`: HTTPS only (with `tls_client_ca`, clients need a certificate).
    pub tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
}

/// The span every admin event carries.
pub fn span(listen: SocketAddr) -> tracing::Span {
    info_span!("admin", listen = %listen)
}

impl Admin {
    /// Serves admin requests until the process exits (through the drain too, so that
    /// `/readyz` can say 503 while it runs).
    pub async fn run(self) {
        let Admin {
            listener,
            metrics,
            health,
            on_scrape,
            accept_error_sleep,
            control,
            gate,
            tls,
        } = self;
        let shared = Arc::new(Shared {
            metrics,
            health,
            on_scrape,
            connections: connections::Answers::new(control.clone()),
            control,
            gate,
        });
        // Per-connection accept errors are skipped; resource shortages are logged and
        // followed by a pause, never a spin; at MAX_CONNECTIONS a newcomer takes the
        // place of the connection that has waited longest for a request.
        let mut incoming = listener
            .incoming()
            .log_warnings(|e| {
                warn!(error = %e, hint = %error_hint(e), pause = ?accept_error_sleep, "admin accept failed: pausing");
            })
            .handle_errors(accept_error_sleep)
            // Descriptors: the slots, and a few connections closed to make room whose
            // tasks have not ended yet; accepting waits beyond that.
            .backpressure(MAX_CONNECTIONS + CLOSING);
        let slots = Arc::new(Slots::default());
        while let Some((token, stream)) = incoming.next().await {
            let Some(slot) = slots.take(&stream) else {
                debug!("admin connections all busy answering: closing a newcomer");
                continue;
            };
            let peer = stream
                .peer_addr()
                .map(|p| p.to_string())
                .unwrap_or_else(|_| "?".into());
            let (shared, tls) = (shared.clone(), tls.clone());
            let span = info_span!("http", peer = %peer);
            runtime::spawn_apart(
                async move {
                    let served =
                        AssertUnwindSafe(connection(stream, tls, &shared, &slot)).catch_unwind();
                    if served.await.is_err() {
                        error!("admin connection panicked; closing it");
                    }
                    drop(slot);
                    drop(token);
                }
                .instrument(span),
            )
            .detach();
        }
    }
}

/// What every admin connection shares.
struct Shared {
    /// Encoded for each `/metrics` request.
    metrics: Arc<Metrics>,
    /// What `/readyz` answers.
    health: Arc<Health>,
    /// Refreshes values kept outside the registry before each encoding.
    on_scrape: Box<dyn Fn(&Metrics) + Send + Sync>,
    /// `GET /connections` from its query string, one at a time off the chat's threads.
    connections: connections::Answers,
    /// `POST /reload` and the other acts.
    control: Arc<dyn Control>,
    /// Who may use which path.
    gate: Arc<Gate>,
}

/// One admin connection: HTTPS when the endpoint has TLS (its handshake within
/// REQUEST_TIMEOUT; one that fails is logged at debug and closes the connection), plain
/// HTTP otherwise.
async fn connection(
    stream: TcpStream,
    tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
    shared: &Shared,
    slot: &Slot,
) {
    let Some(config) = tls else {
        return serve(stream, shared, slot).await;
    };
    let accept = futures_rustls::TlsAcceptor::from(config).accept(stream);
    match runtime::timeout(REQUEST_TIMEOUT, accept).await {
        Ok(Ok(stream)) => serve(stream, shared, slot).await,
        Ok(Err(e)) => debug!(error = %e, "admin TLS handshake failed"),
        Err(runtime::Elapsed) => debug!("admin TLS handshake not done in time"),
    }
}

/// Serves requests on one connection until the client closes, asks to close, errs, or
/// takes longer than REQUEST_TIMEOUT over a request head.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &Shared, slot: &Slot) {
    let mut buf = Vec::with_capacity(1024);
    for served in 1.. {
        slot.waiting(true);
        let head = match runtime::timeout(REQUEST_TIMEOUT, read_head(&mut stream, &mut buf)).await {
            Ok(head) => head,
            Err(runtime::Elapsed) => {
                debug!(timeout = ?REQUEST_TIMEOUT, "no complete request in time: closing");
                return;
            }
        };
        let request = match head {
            Head::Request(request) => request,
            Head::Closed => return,
            Head::Malformed(why) => {
                debug!(error = why, "malformed request");
                let answer = response(400, TEXT, b"bad request\n", false, true, None);
                return finish(stream, &answer).await;
            }
            Head::TooLarge => {
                debug!(limit = MAX_HEAD_BYTES, "request head too large");
                let answer = response(
                    431,
                    TEXT,
                    b"request header fields too large\n",
                    false,
                    true,
                    None,
                );
                return finish(stream, &answer).await;
            }
        };
        slot.waiting(false);
        buf.drain(..request.head_len);
        let close =
            !request.keep_alive || request.has_body || served >= MAX_REQUESTS_PER_CONNECTION;
        let made = routes::made(&request, shared).await;
        let answer = answer(&request, shared, close, made);
        if close {
            return finish(stream, &answer).await;
        }
        match runtime::timeout(REQUEST_TIMEOUT, stream.write_all(&answer)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "writing a response failed");
                return;
            }
            Err(runtime::Elapsed) => {
                debug!("response not taken in time: closing");
                return;
            }
        }
        // A client pipelining requests always has the next one ready: let the chat on
        // this thread have a turn between two answers.
        futures_lite::future::yield_now().await;
    }
}

/// A status, a content type and a body.
type Made = (u16, &'static str, Vec<u8>);

/// The response to a well-formed request; `made` is the answer of a path that needed the
/// daemon's work (`/connections`, `/reload`), made beforehand.
fn answer(request: &Request, shared: &Shared, close: bool, made: Option<Made>) -> Vec<u8> {
    let head_only = request.method == "HEAD";
    let (status, content_type, body): Made = if let Some(made) = made {
        made
    } else if let Route::Method(allow) = route(&request.method, &request.path) {
        let answer = response(
            405,
            TEXT,
            b"method not allowed\n",
            false,
            close,
            Some(&format!("Allow: {allow}\r\n")),
        );
        debug!(method = %request.method, path = %request.path, status = 405, "admin request");
        return answer;
    } else if route(&request.method, &request.path) != Route::Read {
        (404, TEXT, b"not found\n".to_vec())
    } else {
        match request.path.as_str() {
            "/metrics" => {
                (shared.on_scrape)(&shared.metrics);
                if request.openmetrics {
                    (200, OPENMETRICS, shared.metrics.encode().into_bytes())
                } else {
                    let text = shared.metrics.encode_prometheus_text();
                    (200, PROMETHEUS_TEXT, text.into_bytes())
                }
            }
            "/healthz" => (200, TEXT, b"ok\n".to_vec()),
            _ if shared.health.is_ready() => (200, TEXT, b"ready\n".to_vec()),
            _ if shared.health.is_draining() => (503, TEXT, b"draining\n".to_vec()),
            _ if shared.health.is_lame_duck() => (503, TEXT, b"lame duck\n".to_vec()),
            _ if shared.health.is_cluster_down() => (503, TEXT, b"cluster unavailable\n".to_vec()),
            _ => (503, TEXT, b"starting\n".to_vec()),
        }
    };
    debug!(method = %request.method, path = %request.path, status, "admin request");
    let challenge =
        (status == 401).then_some("WWW-Authenticate: Bearer realm=\"a-chat admin\"\r\n");
    response(status, content_type, &body, head_only, close, challenge)
}

/// Writes the last response of a connection and closes it without resetting it: what
/// the client still sends is read and discarded for a moment, so that it gets to read
/// the answer (a close with unread input would reset the connection).
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    if runtime::timeout(REQUEST_TIMEOUT, stream.write_all(answer))
        .await
        .is_err()
    {
        return;
    }
    // The write side only (a TLS close_notify first): the answer is read before the end.
    let _ = runtime::timeout(REQUEST_TIMEOUT, stream.close()).await;
    let mut sink = [0u8; READ_CHUNK];
    let mut discarded = 0;
    let linger = async {
        while discarded < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = runtime::timeout(LINGER, linger).await;
}

#[cfg(test)]
mod tests;

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
//! errors that end one admin connection and nothing else.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_listen::{error_hint, ListenExt};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use tracing::{debug, error, info_span, warn, Instrument};

mod connections;
mod slots;

use crate::metrics::Metrics;
use crate::runtime::{self, TcpListener, TcpStream};
pub use connections::Connections;
use slots::{Slot, Slots};

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
/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers in one request; more gets 431.
const MAX_HEADERS: usize = 32;
/// Time allowed to receive one whole request head, and to write one response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error answer, how long the connection keeps reading (and discarding) what the
/// client still sends, so that closing does not reset the connection before the client
/// has read the answer.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;
/// Bytes asked of each `read`.
const READ_CHUNK: usize = 4096;

/// `/metrics` for clients that ask for OpenMetrics (Prometheus servers do).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `/metrics` for every other client (curl, `promtool check metrics`).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Whether the daemon wants new chat connections, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// One of `STARTING`, `READY`, `DRAINING`.
    state: AtomicU8,
    /// Set while a cluster node cannot reach Redis (ARCHITECTURE §10): it cannot take logins.
    cluster_down: std::sync::atomic::AtomicBool,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// The chat listeners are bound: ready, unless the drain has already begun.
    pub fn set_ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The drain has begun: not ready, for good.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY && !self.cluster_down.load(Ordering::Acquire)
    }

    pub fn is_cluster_down(&self) -> bool {
        self.cluster_down.load(Ordering::Acquire)
    }

    /// Whether this cluster node is connected to Redis and registered.
    pub fn set_cluster_up(&self, up: bool) {
        self.cluster_down.store(!up, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Ordering::Acquire) == DRAINING
    }
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
    /// Answers `GET /connections` from its query string (JSON), off the chat's threads
    /// (see [`connections`]).
    pub connections: Connections,
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
            connections,
        } = self;
        let shared = Arc::new(Shared {
            metrics,
            health,
            on_scrape,
            connections: connections::Answers::new(connections),
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
            let shared = shared.clone();
            let span = info_span!("http", peer = %peer);
            runtime::spawn(
                async move {
                    let served = AssertUnwindSafe(serve(stream, &shared, &slot)).catch_unwind();
                    if served.await.is_err() {
                        error!("admin connection panicked; closing it");
                    }
                    drop(slot);
                    drop(token);
                }
                .instrument(span),
            );
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
}

/// The parts of a request head the endpoint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    /// GET and HEAD are served; anything else on a known path gets 405.
    method: String,
    /// The path without its query string.
    path: String,
    /// The query string (after `?`), empty when there is none.
    query: String,
    /// The client asked to keep the connection open (HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 only with `Connection: keep-alive`).
    keep_alive: bool,
    /// The request announces a body (`Content-Length` > 0 or `Transfer-Encoding`): the
    /// endpoint takes none, so it answers and closes.
    has_body: bool,
    /// The `Accept` header asks for OpenMetrics (what Prometheus servers send).
    openmetrics: bool,
    /// Bytes of the head, to remove from the buffer.
    head_len: usize,
}

/// How reading one request head ended.
#[derive(Debug)]
enum Head {
    Request(Request),
    /// The client closed (or failed) between requests.
    Closed,
    /// Not HTTP/1.x (400).
    Malformed(&'static str),
    /// Over MAX_HEAD_BYTES or MAX_HEADERS (431).
    TooLarge,
}

/// Serves requests on one connection until the client closes, asks to close, errs, or
/// takes longer than REQUEST_TIMEOUT over a request head.
async fn serve(mut stream: TcpStream, shared: &Shared, slot: &Slot) {
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
        let mut connections = None;
        if request.path == "/connections" && matches!(request.method.as_str(), "GET" | "HEAD") {
            connections = Some(shared.connections.answer(&request.query).await);
        }
        let answer = answer(&request, shared, close, connections);
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

/// Reads until `buf` holds a complete request head (or proves not to).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Head {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok(Some(request)) => return Head::Request(request),
                Ok(None) => {}
                Err(httparse::Error::TooManyHeaders) => return Head::TooLarge,
                Err(e) => return Head::Malformed(error_text(e)),
            }
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Head::TooLarge;
        }
        let start = buf.len();
        let want = READ_CHUNK.min(MAX_HEAD_BYTES - start);
        buf.resize(start + want, 0);
        let read = stream.read(&mut buf[start..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        if n == 0 {
            if let Err(e) = read {
                debug!(error = %e, "read failed");
            }
            return Head::Closed;
        }
    }
}

fn error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// `Ok(Some)` for a complete head, `Ok(None)` when more bytes are needed.
fn parse(buf: &[u8]) -> Result<Option<Request>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(httparse::Error::Token);
    };
    let mut keep_alive = version == 1;
    let mut has_body = false;
    let mut openmetrics = false;
    for header in req.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            has_body |= value != "0";
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if header.name.eq_ignore_ascii_case("accept") {
            openmetrics |= accepts_openmetrics(value);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        keep_alive,
        has_body,
        openmetrics,
        head_len,
    }))
}

/// True when an `Accept` value lists `application/openmetrics-text` with a non-zero q.
fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let q = params
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
    })
}

/// The response to a well-formed request; `connections` is the `/connections` body, made
/// beforehand for a GET or HEAD of it.
fn answer(
    request: &Request,
    shared: &Shared,
    close: bool,
    connections: Option<Result<String, String>>,
) -> Vec<u8> {
    let head_only = request.method == "HEAD";
    let readable = head_only || request.method == "GET";
    let known = matches!(
        request.path.as_str(),
        "/metrics" | "/healthz" | "/readyz" | "/connections"
    );
    let (status, content_type, body): (u16, &str, Vec<u8>) = if !known {
        (404, TEXT, b"not found\n".to_vec())
    } else if !readable {
        let answer = response(
            405,
            TEXT,
            b"method not allowed\n",
            false,
            close,
            Some("Allow: GET, HEAD\r\n"),
        );
        debug!(method = %request.method, path = %request.path, status = 405, "admin request");
        return answer;
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
            "/connections" => match connections.unwrap_or_else(|| Ok(String::new())) {
                Ok(json) => (200, JSON, json.into_bytes()),
                Err(why) => (400, TEXT, format!("{why}\n").into_bytes()),
            },
            _ if shared.health.is_ready() => (200, TEXT, b"ready\n".to_vec()),
            _ if shared.health.is_draining() => (503, TEXT, b"draining\n".to_vec()),
            _ if shared.health.is_cluster_down() => (503, TEXT, b"cluster unavailable\n".to_vec()),
            _ => (503, TEXT, b"starting\n".to_vec()),
        }
    };
    debug!(method = %request.method, path = %request.path, status, "admin request");
    response(status, content_type, &body, head_only, close, None)
}

/// A complete response: status line, headers, and the body unless `head_only`.
fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
    extra_headers: Option<&str>,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {connection}\r\n{}\r\n",
        body.len(),
        extra_headers.unwrap_or_default(),
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Writes the last response of a connection and closes it without resetting it: what
/// the client still sends is read and discarded for a moment, so that it gets to read
/// the answer (a close with unread input would reset the connection).
async fn finish(mut stream: TcpStream, answer: &[u8]) {
    if runtime::timeout(REQUEST_TIMEOUT, stream.write_all(answer))
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
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

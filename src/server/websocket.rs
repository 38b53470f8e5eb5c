//! The start of a connection on a WebSocket listener (ARCHITECTURE §14): the TLS handshake
//! (for `wss`), then one HTTP request, all within `login_timeout`. A request for the page
//! is answered and closed; an upgrade becomes a chat connection like any other
//! ([`Connection::serve`]), whose reader and writer see lines.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tracing::{debug, info_span, Instrument};

use crate::metrics::{Metrics, Transport, WsAnswer};
use crate::runtime::{self, Carrier, Sock};
use crate::server::connection::{until_drain, Connection};
use crate::server::handshakes;
use crate::tls;
use crate::transport::http::Front;
use crate::transport::upgrade::{self, Outcome};
use crate::transport::Session;

/// What a listener's connections speak above TCP.
#[derive(Clone, Default)]
pub struct Speaks {
    /// Every connection completes a TLS handshake with these settings first.
    pub tls: Option<Arc<tls::Server>>,
    /// WebSocket: which pages may open a session, and the page.
    pub websocket: Option<Arc<Front>>,
}

impl Speaks {
    /// How a connection refused before it is served (a ban, the throttle, a cap, a bad
    /// PROXY header) is told why: an `error:` line, or, on a WebSocket listener without
    /// TLS, an HTTP answer with `status` that a browser can show.
    pub fn refusal(&self, why: &str, status: u16) -> Vec<u8> {
        match (&self.websocket, &self.tls) {
            (Some(_), None) => match crate::transport::http::refusal(status, why) {
                crate::transport::http::Answer::Respond(bytes, _)
                | crate::transport::http::Answer::Upgrade(bytes) => bytes,
            },
            _ => crate::protocol::format_error(why),
        }
    }

    /// The transport label of a chat connection on such a listener.
    pub fn transport(&self) -> Transport {
        match (self.tls.is_some(), self.websocket.is_some()) {
            (false, false) => Transport::Tcp,
            (true, false) => Transport::Tls,
            (false, true) => Transport::Ws,
            (true, true) => Transport::Wss,
        }
    }
}

impl Connection {
    /// Starts the connection's task, as its listener speaks.
    pub fn start(self, speaks: Speaks) {
        match speaks {
            Speaks {
                tls: None,
                websocket: None,
            } => runtime::spawn_detached(self.serve()),
            Speaks {
                tls: Some(tls),
                websocket: None,
            } => runtime::spawn_detached(self.serve_tls(tls)),
            Speaks {
                tls,
                websocket: Some(front),
            } => runtime::spawn_detached(self.serve_websocket(tls, front)),
        }
    }

    /// The life of a connection on a WebSocket listener: the opening (boxed, and given
    /// back once the session is up, as in `serve_tls`), then [`Connection::serve`].
    fn serve_websocket(
        mut self,
        tls: Option<Arc<tls::Server>>,
        front: Arc<Front>,
    ) -> impl Future<Output = ()> + Send {
        let span = info_span!("conn", conn = self.conn, peer = %self.peer);
        let deadline = self.accepted + self.ctx.limits.login_timeout;
        let identity = tls.as_ref().is_some_and(|t| t.client_identity);
        let (sock, metrics) = (self.stream.sock(), self.ctx.metrics.clone());
        let max_line = self.ctx.limits.max_line_bytes;
        let opening = Box::pin(open(sock, tls, front, max_line, deadline, metrics));
        let opening = until_drain(opening, self.ctx.shutdown.clone()).map(Option::flatten);
        opening.instrument(span).then(move |opened| match opened {
            Some(session) => {
                self.identity = identity;
                self.stream = self.stream.into_websocket(session);
                futures::future::Either::Left(self.serve())
            }
            None => {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                futures::future::Either::Right(futures::future::ready(()))
            }
        })
    }
}

/// The TLS handshake (for `wss`) and the HTTP request, until `deadline`: the session, or
/// `None` once the request was answered (the page, a refusal) or the client is gone.
async fn open(
    sock: Sock,
    tls: Option<Arc<tls::Server>>,
    front: Arc<Front>,
    max_line: usize,
    deadline: Instant,
    metrics: Arc<Metrics>,
) -> Option<Box<Session<Carrier>>> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let secure = tls.is_some();
    let carrier = match tls {
        None => Carrier::Tcp(sock),
        Some(tls) => {
            let shaken = runtime::timeout(left(), handshakes::shake(tls, sock, &metrics));
            match shaken.await.unwrap_or(Err(tls::Failure::Timeout)) {
                Ok(session) => {
                    metrics.tls_handshakes.inc();
                    Carrier::Tls(Box::new(session))
                }
                Err(why) => {
                    metrics.tls_handshake_failed(why);
                    debug!(reason = why.label(), "TLS handshake failed");
                    return None;
                }
            }
        }
    };
    let request = upgrade::upgrade(carrier, &front, secure, max_line);
    let answer = match runtime::timeout(left(), request).await {
        Ok(Outcome::Session(session)) => {
            metrics.transports.answered(WsAnswer::Upgraded);
            return Some(session);
        }
        Ok(Outcome::Answered(answer)) => answer,
        Ok(Outcome::Gone) => return None,
        Err(_) => WsAnswer::Timeout,
    };
    // Scanners and crawlers do this all day: counted, and logged at debug only.
    metrics.transports.answered(answer);
    debug!(answer = answer.label(), "answered an HTTP request");
    None
}

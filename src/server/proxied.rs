//! Connections from a load balancer listed in `[server] proxy_protocol_from`: the PROXY
//! header is read first (exactly its bytes, see `crate::proxy`), its client address takes
//! the balancer's place, and only then is the per-address cap applied and the connection
//! served as any other. Connections from other addresses never come here.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::future::FutureExt as _;
use tracing::{debug, info, info_span, warn};

use crate::metrics::{Metrics, Refusal};
use crate::proxy::{self, Header, Parse};
use crate::runtime::{self, Conn};
use crate::server::admission::{Door, PerIp};
use crate::server::connection::Connection;
use crate::server::websocket::Speaks;
use crate::server::writer;

/// At most one warning about refused headers per this long; the rest are at debug, so a
/// balancer set up without `send-proxy` does not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// When the last warning was given, in seconds since the process's first refusal + 1
/// (0: never).
static WARNED_AT: AtomicU64 = AtomicU64::new(0);

impl Connection {
    /// The life of a connection from a `proxy_protocol_from` address: its header within
    /// `login_timeout` (which the TLS handshake and the login then share), the client's
    /// place under `max_connections_per_ip`, then [`Connection::serve_tls`] or
    /// [`Connection::serve`] as a task of their own.
    pub async fn serve_proxied(mut self, speaks: Speaks, per_ip: PerIp, door: Door) {
        let balancer = self.peer;
        let left = self
            .ctx
            .limits
            .login_timeout
            .saturating_sub(self.accepted.elapsed());
        let header = async { Some(runtime::timeout(left, read_header(&self.stream)).await) };
        let drain = async {
            self.ctx.shutdown.wait().await;
            None
        };
        // A drain does not wait out a balancer's silent connection: it holds no login.
        let Some(read) = header.or(drain).await else {
            return;
        };
        let refusal = match read {
            Ok(Ok(Header::Proxied(client))) => {
                self.peer = client;
                None
            }
            Ok(Ok(Header::Local)) => None,
            Ok(Err(HeaderError::Invalid(why))) => {
                Some((proxy::Refusal::from(why), why.to_string()))
            }
            Ok(Err(HeaderError::Io(e))) => {
                let span = info_span!("conn", conn = self.conn, peer = %balancer);
                span.in_scope(|| debug!(error = %e, "connection ended before its PROXY header"));
                return;
            }
            Err(_) => Some((
                proxy::Refusal::Timeout,
                "no whole PROXY header within login_timeout".into(),
            )),
        };
        if let Some((why, detail)) = refusal {
            self.ctx.metrics.proxy_header_refused(why);
            let span = info_span!("conn", conn = self.conn, peer = %balancer);
            span.in_scope(|| {
                if warn_now() {
                    warn!(reason = why.label(), %detail, "closed a connection from a proxy_protocol_from address: is the balancer sending PROXY headers (HAProxy: send-proxy-v2)? Further refusals within a minute are logged at debug");
                } else {
                    debug!(reason = why.label(), %detail, "closed a connection without a valid PROXY header");
                }
            });
            let answer = speaks.refusal("bad PROXY protocol header", 400);
            close_with(&self.stream, &answer, &self.ctx.metrics).await;
            return;
        }
        if let Err(shut) = door.check(self.peer.ip()) {
            self.ctx.metrics.refused(shut.refusal());
            debug!(peer = %self.peer, via = %balancer, why = shut.line(), "refused at the door");
            let answer = speaks.refusal(shut.line(), shut.status());
            close_with(&self.stream, &answer, &self.ctx.metrics).await;
            return;
        }
        match per_ip.take(self.peer.ip()) {
            Some(slot) => self.ip_slot = slot,
            None => {
                self.ctx.metrics.refused(Refusal::PerIp);
                let span = info_span!("conn", conn = self.conn, peer = %self.peer);
                span.in_scope(
                    || info!(via = %balancer, "refused: too many connections from this address"),
                );
                let answer = speaks.refusal("too many connections from your address", 429);
                close_with(&self.stream, &answer, &self.ctx.metrics).await;
                return;
            }
        }
        // A task of its own, the same as a connection that came directly: awaited here,
        // it would keep this task's room for the header beside it for the connection's
        // whole life (2.3 KiB more per idle connection, measured).
        self.start(speaks);
    }
}

enum HeaderError {
    Invalid(proxy::Invalid),
    Io(io::Error),
}

/// Reads the header and not one byte more. A header nearly always arrives whole in the
/// balancer's first segment: one peek finds it, one read takes it. Otherwise the bytes
/// are taken in the amounts [`proxy::parse`] knows the header still holds.
async fn read_header(stream: &Conn) -> Result<Header, HeaderError> {
    let mut buf = vec![0u8; proxy::MAX_V1 + 1];
    let seen = stream.peek(&mut buf).await.map_err(HeaderError::Io)?;
    if seen == 0 {
        return Err(HeaderError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    let mut have = 0;
    let mut next = match proxy::parse(&buf[..seen]) {
        Parse::Complete { len, .. } => len,
        Parse::Incomplete { at_least } => at_least.min(seen),
        Parse::Invalid(why) => return Err(HeaderError::Invalid(why)),
    };
    loop {
        if buf.len() < next {
            buf.resize(next, 0);
        }
        while have < next {
            match stream.read(&mut buf[have..next]).await {
                Ok(0) => return Err(HeaderError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => have += n,
                Err(e) => return Err(HeaderError::Io(e)),
            }
        }
        match proxy::parse(&buf[..have]) {
            Parse::Complete { header, .. } => return Ok(header),
            Parse::Incomplete { at_least } => next = at_least,
            Parse::Invalid(why) => return Err(HeaderError::Invalid(why)),
        }
    }
}

/// True when no warning was given within [`WARN_EVERY`].
fn warn_now() -> bool {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
        + 1;
    let last = WARNED_AT.load(Ordering::Relaxed);
    (last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_secs())
        && WARNED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Answers with `error: <why>` (if the socket takes it within a second) and closes as
/// the writer does after a broken rule: half-close, then at most 64 KiB discarded.
async fn close_with(stream: &Conn, line: &[u8], metrics: &Metrics) {
    if let Ok(Ok(())) = runtime::timeout(Duration::from_secs(1), stream.write_all(line)).await {
        metrics.bytes_out.inc_by(line.len() as u64);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    writer::linger(stream, writer::LINGER_BYTES, metrics).await;
}

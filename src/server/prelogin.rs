//! What a reader answers before a login to input that is not a login: the probe of
//! `a-chat probe` (an empty first line) and garbage (not UTF-8, a TLS handshake on a
//! plaintext listener, a first line too long). Neither reaches the password check, and
//! neither logs above debug per connection (docs/OPERATIONS.md, "Garbage before a login").

use tracing::{debug, warn};

use crate::metrics::{CloseReason, Garbage, Metrics, Refusal};
use crate::names::LoginError;
use crate::protocol;
use crate::server::outbox::{Out, Outbox};

/// The answer to a TLS handshake on a plaintext listener (the TLS client cannot show it,
/// but a person trying `openssl s_client` on the wrong port can).
const TLS_ON_PLAINTEXT: &str = "this port speaks plain text, not TLS";

/// Answers an empty first line: the probe of `a-chat probe` (or a person who pressed
/// Enter). It asks for nothing, so it gets no password check, is no failed login and
/// logs nothing at info: the answer a login without a name gets, counted as a probe.
/// The connection then closes.
pub fn probe(outbox: &Outbox, metrics: &Metrics) {
    outbox.info().ending(CloseReason::InvalidLogin);
    debug!("probe answered");
    metrics.prelogin.probes.inc();
    let _ = outbox.send(Out::Server(protocol::format_error(LoginError::Empty)));
}

/// Answers garbage before the login; the connection then closes. Counted (it was no
/// login), logged at debug (scanners send it by the hundred), and summarised in a warning
/// at most once a minute.
pub fn garbage(outbox: &Outbox, metrics: &Metrics, kind: Garbage) {
    let (reason, answer) = match kind {
        Garbage::LineTooLong => (
            CloseReason::LineTooLong,
            protocol::FrameError::LineTooLong.to_string(),
        ),
        Garbage::InvalidUtf8 => (
            CloseReason::InvalidUtf8,
            protocol::FrameError::InvalidUtf8.to_string(),
        ),
        Garbage::TlsOnPlaintext => (CloseReason::InvalidLogin, TLS_ON_PLAINTEXT.to_owned()),
    };
    outbox.info().ending(reason);
    metrics.refused(Refusal::InvalidLogin);
    debug!(
        kind = kind.label(),
        "closing connection: garbage before login"
    );
    if let Some(summary) = metrics.prelogin.garbage(kind, std::time::Instant::now()) {
        // About many connections: outside this one's span.
        warn!(parent: None, "{summary}");
    }
    let _ = outbox.send(Out::Server(protocol::format_error(answer)));
}

/// The kind of garbage a framing error of the first line is.
pub fn kind_of(e: protocol::FrameError) -> Garbage {
    match e {
        protocol::FrameError::LineTooLong => Garbage::LineTooLong,
        protocol::FrameError::InvalidUtf8 => Garbage::InvalidUtf8,
    }
}

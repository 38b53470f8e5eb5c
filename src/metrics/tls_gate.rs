//! `achat_tls_handshakes_in_progress` and `achat_tls_handshakes_waiting`: the TLS
//! handshakes running now (a bounded number, off the chat's threads) and the TLS
//! connections waiting for one of their slots.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The gauges of the handshake slots (see `server::handshakes`).
#[derive(Debug, Default)]
pub struct TlsGate {
    /// Handshakes holding a slot now.
    pub in_progress: Gauge,
    /// TLS connections waiting for a slot now.
    pub waiting: Gauge,
}

impl TlsGate {
    pub fn register(registry: &mut Registry) -> TlsGate {
        let gate = TlsGate::default();
        registry.register(
            "tls_handshakes_in_progress",
            "TLS handshakes running now (at most 256 at once, on threads apart from the chat's)",
            gate.in_progress.clone(),
        );
        registry.register(
            "tls_handshakes_waiting",
            "TLS connections waiting for a handshake slot now (within their login_timeout)",
            gate.waiting.clone(),
        );
        gate
    }
}

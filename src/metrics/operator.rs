//! What operators act on and what their actions did: `achat_connections_closed_total` by
//! close reason (kicks and lame-duck closes among them), admin requests refused for want
//! of a token, and whether the daemon is in lame duck mode.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::families::add;
use super::{CloseReason, Counters, Labels};

/// The series an operator's dashboard reads about closes and about the operator's own acts.
#[derive(Debug)]
pub struct Operator {
    /// Every connection closed, by the reason its close line gives: one series per
    /// [`CloseReason`], so a dashboard sees kicks, slow consumers and bad input apart.
    closed: Counters<CloseReason>,
    /// Admin requests refused with 401 (no token, or one the tokens file does not hold):
    /// a rising count is someone probing the admin endpoint.
    pub admin_unauthorized: Counter,
    /// Connections an operator asked to close (by id or by login), counted when asked;
    /// each is also counted in `connections_closed{reason="kicked"}` once it has closed.
    pub kicks: Counter,
    /// 1 from the moment lame duck mode begins (the daemon is leaving).
    pub lame_duck: Gauge,
    /// 1 while `/readyz` would answer 200 (set at each scrape): an alert needs no probe.
    pub ready: Gauge,
    /// When the served TLS certificate stops being valid (Unix seconds); 0 without TLS.
    pub certificate_expiry: Gauge,
    /// When the configuration was last applied (start or reload), in Unix seconds.
    pub last_reload: Gauge,
    /// `[limits] outbound_total_bytes`, for a dashboard to draw the queued bytes against.
    pub outbound_limit: Gauge,
    /// Pauses of a client's reading because it passed `messages_per_second`.
    pub rate_limited: Counter,
}

impl Operator {
    pub fn register(registry: &mut Registry) -> Operator {
        let closed: Family<Labels, Counter> = add(
            registry,
            "connections_closed",
            "Chat connections closed, by the reason of their close line (kicked: by an operator; lame_duck: by lame duck mode; drain; client_closed; slow_consumer_*; line_too_long; ...)",
        );
        Operator {
            closed: Counters::new(&closed, "reason"),
            admin_unauthorized: add(
                registry,
                "admin_unauthorized",
                "Admin requests refused with 401: no bearer token, or one the [admin] tokens_file does not hold",
            ),
            rate_limited: add(
                registry,
                "rate_limited",
                "Times a client's socket was not read for a while because it passed [limits] messages_per_second (after message_burst); nothing it sent is lost",
            ),
            kicks: add(
                registry,
                "kicks",
                "Connections an operator closed over the admin endpoint (POST /connections/ID/close, POST /logins/NAME/close), counted when asked",
            ),
            ready: add(
                registry,
                "ready",
                "1 while the daemon wants chat connections (/readyz answers 200), 0 while starting, draining, in lame duck mode or cut off from the cluster",
            ),
            certificate_expiry: add(
                registry,
                "tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate ([tls] cert, its first) stops being valid, in Unix seconds (0 without TLS); re-read at every reload",
            ),
            last_reload: add(
                registry,
                "config_last_reload_success_timestamp_seconds",
                "When the configuration was last applied (at start, or by a successful reload), in Unix seconds",
            ),
            outbound_limit: add(
                registry,
                "outbound_limit_bytes",
                "[limits] outbound_total_bytes: what achat_outbound_queued_bytes may reach before the largest queues are cut",
            ),
            lame_duck: add(
                registry,
                "lame_duck",
                "1 while the daemon is in lame duck mode: not ready, closing its clients spread over [shutdown] lame_duck_duration before it drains",
            ),
        }
    }

    /// Counts one connection closed for `why`.
    pub fn closed(&self, why: CloseReason) {
        self.closed.inc(why);
    }

    /// Says that the configuration was applied now.
    pub fn applied_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.last_reload.set(now);
    }

    /// Connections closed for `why` so far.
    pub fn closes(&self, why: CloseReason) -> u64 {
        self.closed.get(why)
    }
}

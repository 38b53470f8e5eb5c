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

    /// Connections closed for `why` so far.
    pub fn closes(&self, why: CloseReason) -> u64 {
        self.closed.get(why)
    }
}

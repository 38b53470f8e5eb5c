//! How long the costly steps of a login take, as histograms: the password check (argon2id
//! on the bounded pool) and the TLS handshake. A dashboard draws their quantiles; a rising
//! tail says the pool or the handshake slots are the bottleneck. Observed once per login,
//! never per message. Also the count of logins granted (their refusals are counted by
//! reason in `connections_refused` and `auth_failures`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The login's timings.
#[derive(Debug)]
pub struct Timings {
    /// Seconds one password check took on its blocking thread (not the wait for a slot).
    pub password_check: Histogram,
    /// Seconds from a handshake slot to the end of the handshake, whatever the outcome.
    pub tls_handshake: Histogram,
    /// Logins granted.
    pub logins: Counter,
}

impl Timings {
    pub fn register(registry: &mut Registry) -> Timings {
        // 1 ms to about 4 s: an argon2id check is tens of milliseconds, a handshake a few.
        let buckets = || exponential_buckets(0.001, 2.0, 13);
        let timings = Timings {
            password_check: Histogram::new(buckets()),
            tls_handshake: Histogram::new(buckets()),
            logins: Counter::default(),
        };
        registry.register_with_unit(
            "password_check_duration",
            "Time one password check (argon2id) took on its blocking thread",
            Unit::Seconds,
            timings.password_check.clone(),
        );
        registry.register_with_unit(
            "tls_handshake_duration",
            "Time a TLS handshake took once it had a slot, whatever its outcome",
            Unit::Seconds,
            timings.tls_handshake.clone(),
        );
        registry.register(
            "logins",
            "Logins granted (refusals: achat_connections_refused_total and achat_auth_failures_total, by reason)",
            timings.logins.clone(),
        );
        timings
    }
}

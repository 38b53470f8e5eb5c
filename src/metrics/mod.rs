//! The daemon's counters (ARCHITECTURE §6), kept in a Prometheus registry. Hot paths hold
//! plain counter handles (an atomic add each); the admin endpoint encodes the registry.

pub mod cluster;
mod families;
pub mod labels;
mod operator;
mod prelogin;
mod process;
mod reasons;
mod timings;
mod tls_gate;
pub mod transports;
mod waits;

use families::{Families, Lifecycle, Traffic};
pub use labels::{
    AuthFailure, CloseReason, Counters, LabelSet, LineRefusal, ProxyRefusal, TlsFailure,
};
pub use prelogin::{looks_like_tls, Garbage, PreLogin};
use process::Process;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
pub use reasons::{DropReason, Refusal, SlowReason};
use timings::Timings;
use tls_gate::TlsGate;
use transports::Transports;
pub use transports::{Transport, WsAnswer, WsRefusal};
use waits::QueueWait;

type Labels = Vec<(&'static str, &'static str)>;

/// Every counter a-chat keeps. Cloning a handle shares the same value.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The `achat_cluster_*` series, encoded only once [`Metrics::cluster_on`] said the
    /// node is in a cluster: a single node shows none of them.
    cluster_registry: Registry,
    /// Set by [`Metrics::cluster_on`].
    cluster_shown: std::sync::atomic::AtomicBool,
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    refused_per_ip: Counter,
    refused_server_full: Counter,
    refused_login_taken: Counter,
    refused_invalid_login: Counter,
    refused_cluster_unavailable: Counter,
    refused_banned: Counter,
    refused_throttled: Counter,
    /// Connections closed for not logging in within `login_timeout` (not a refusal of
    /// anything they asked for).
    login_timeouts: Counter,
    /// Times the accept loop paused because every connection token was out (one per
    /// pause, however long). Connections that arrive meanwhile are held in the kernel's
    /// listen backlog, not refused, so they never show in `connections_refused`.
    pub accept_paused_at_cap: Counter,
    pub accept_errors_per_connection: Counter,
    pub accept_errors_resource: Counter,
    /// Message lines accepted from clients (one per line, whatever its recipient count).
    pub messages_received: Counter,
    /// Deliveries (one message to one recipient) routed to a logged-in recipient's writer.
    pub deliveries_routed: Counter,
    /// Deliveries written to the recipient's socket.
    pub messages_delivered: Counter,
    /// Deliveries dropped, by reason.
    dropped: Counters<DropReason>,
    /// `error:` answers to message lines, by reason: one per refused line, one per
    /// unknown recipient (the line still reaches the others).
    lines_rejected: Counters<LineRefusal>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Slow consumers cut off, by the bound they passed.
    slow: Counters<SlowReason>,
    /// Bytes queued for clients across every connection (the `outbound_total_bytes`
    /// budget counts against it directly).
    pub outbound_queued: Gauge,
    /// Connections closed for sending bad lines faster than the documented rate.
    pub bad_line_disconnects: Counter,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    reloads_ok: Counter,
    reloads_error: Counter,
    /// TLS handshakes failed, by reason (in `tls::Failure::ALL` order).
    tls_failures: Counters<TlsFailure>,
    /// `achat_proxy_headers_refused_total`, one per `proxy::Refusal::ALL`.
    proxy_refusals: Counters<ProxyRefusal>,
    /// Password hash checks run (each about one core for tens of milliseconds).
    pub auth_checks: Counter,
    /// Logins refused by authentication, by reason (in `auth::Failure::ALL` order).
    auth_failures: Counters<AuthFailure>,
    pub panics: Counter,
    /// 1 while the drain runs.
    pub draining: Gauge,
    /// Log lines the non-blocking log writer had to drop (the writer keeps the count; the
    /// counter follows it at each scrape).
    log_lines_dropped: Counter,
    /// The writer's count at the last scrape.
    log_lines_seen: std::sync::atomic::AtomicU64,
    /// Logged-in connections now.
    pub logged_in: Gauge,
    /// `[server] max_connections`, to compare with `connections_open`.
    pub max_connections: Gauge,
    /// The `process_*` metrics every Prometheus exporter has, refreshed at each scrape.
    process: Process,
    /// `achat_cluster_*` (ARCHITECTURE §10); all 0 on a single node.
    pub cluster: cluster::ClusterMetrics,
    /// Closes by reason and what operators did (kicks, lame duck, refused admin requests).
    pub operator: operator::Operator,
    /// Password checks and TLS handshakes as histograms; logins granted.
    pub timings: timings::Timings,
    /// How long deliveries wait in their recipient's queue until they are written.
    pub queue_wait: waits::QueueWait,
    /// Probes and garbage that arrive before a login.
    pub prelogin: PreLogin,
    /// TLS handshakes in progress and waiting for a slot.
    pub tls_gate: tls_gate::TlsGate,
    /// Connections by transport; the WebSocket listener's answers and refusals.
    pub transports: transports::Transports,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("achat");
        let Families {
            refused,
            accept_errors,
            dropped,
            slow_consumers,
            tls_failed,
            proxy_refused,
            reloads,
            auth_failed,
        } = Families::register(registry);
        let Traffic {
            connections_open,
            connections_accepted,
            accept_paused_at_cap,
            messages_received,
            deliveries_routed,
            messages_delivered,
            lines_rejected,
            bytes_in,
            bytes_out,
            outbound_queued,
            bad_line_disconnects,
        } = Traffic::register(registry);
        let Lifecycle {
            panics,
            draining,
            log_lines_dropped,
            tls_handshakes,
            login_timeouts,
            logged_in,
            max_connections,
            auth_checks,
        } = Lifecycle::register(registry);
        let mut cluster_root = Registry::default();
        let cluster =
            cluster::ClusterMetrics::register(cluster_root.sub_registry_with_prefix("achat"));
        let operator = operator::Operator::register(registry);
        let (timings, queue_wait) = (Timings::register(registry), QueueWait::register(registry));
        let prelogin = PreLogin::register(registry);
        let (tls_gate, transports) = (TlsGate::register(registry), Transports::register(registry));
        let process = Process::register(&mut root);
        let label = |family: &Family<Labels, Counter>, key, value| {
            family.get_or_create_owned(&vec![(key, value)])
        };
        let tls_failures = Counters::new(&tls_failed, "reason");
        let proxy_refusals = Counters::new(&proxy_refused, "reason");
        let auth_failures = Counters::new(&auth_failed, "reason");
        Metrics {
            cluster,
            operator,
            timings,
            queue_wait,
            prelogin,
            tls_gate,
            transports,
            connections_open,
            connections_accepted,
            refused_per_ip: label(&refused, "reason", "per_ip"),
            refused_server_full: label(&refused, "reason", "server_full"),
            refused_login_taken: label(&refused, "reason", "login_taken"),
            refused_invalid_login: label(&refused, "reason", "invalid_login"),
            refused_cluster_unavailable: label(&refused, "reason", "cluster_unavailable"),
            refused_banned: label(&refused, "reason", "banned"),
            refused_throttled: label(&refused, "reason", "throttled"),
            login_timeouts,
            accept_paused_at_cap,
            accept_errors_per_connection: label(&accept_errors, "class", "per_connection"),
            accept_errors_resource: label(&accept_errors, "class", "resource_shortage"),
            messages_received,
            deliveries_routed,
            messages_delivered,
            dropped: Counters::new(&dropped, "reason"),
            lines_rejected: Counters::new(&lines_rejected, "reason"),
            bytes_in,
            bytes_out,
            slow: Counters::new(&slow_consumers, "reason"),
            outbound_queued,
            bad_line_disconnects,
            tls_handshakes,
            tls_failures,
            proxy_refusals,
            reloads_ok: label(&reloads, "result", "ok"),
            reloads_error: label(&reloads, "result", "error"),
            auth_checks,
            auth_failures,
            panics,
            draining,
            log_lines_dropped,
            log_lines_seen: std::sync::atomic::AtomicU64::new(0),
            logged_in,
            max_connections,
            process,
            registry: root,
            cluster_registry: cluster_root,
            cluster_shown: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn refused(&self, why: Refusal) {
        match why {
            Refusal::PerIp => &self.refused_per_ip,
            Refusal::ServerFull => &self.refused_server_full,
            Refusal::LoginTaken => &self.refused_login_taken,
            Refusal::InvalidLogin => &self.refused_invalid_login,
            Refusal::LoginTimeout => &self.login_timeouts,
            Refusal::ClusterUnavailable => &self.refused_cluster_unavailable,
            Refusal::Banned => &self.refused_banned,
            Refusal::Throttled => &self.refused_throttled,
        }
        .inc();
    }

    /// Counts one refused message line (or one unknown recipient of a line).
    pub fn line_refused(&self, why: LineRefusal) {
        self.lines_rejected.inc(why);
    }

    /// `n` lines refused for the same reason at once (a run of lines to one unknown name).
    pub fn line_refused_times(&self, why: LineRefusal, n: u64) {
        self.lines_rejected.inc_by(why, n);
    }

    /// Refused lines so far for `why`.
    pub fn lines_refused(&self, why: LineRefusal) -> u64 {
        self.lines_rejected.get(why)
    }

    /// Follows the log writer's own count of dropped lines.
    pub fn log_lines_dropped(&self, total: u64) {
        let seen = self
            .log_lines_seen
            .fetch_max(total, std::sync::atomic::Ordering::AcqRel);
        if total > seen {
            self.log_lines_dropped.inc_by(total - seen);
        }
    }

    /// Refreshes the `process_*` metrics (at each scrape).
    pub fn observe_process(&self) {
        self.process.observe();
    }

    pub fn config_reloaded(&self, ok: bool) {
        if ok {
            self.reloads_ok.inc();
            self.operator.applied_now();
        } else {
            self.reloads_error.inc();
        }
    }

    pub fn tls_handshake_failed(&self, why: TlsFailure) {
        self.tls_failures.inc(why);
    }

    pub fn tls_handshake_failures(&self, why: TlsFailure) -> u64 {
        self.tls_failures.get(why)
    }

    pub fn proxy_header_refused(&self, why: ProxyRefusal) {
        self.proxy_refusals.inc(why);
    }

    pub fn auth_failed(&self, why: AuthFailure) {
        self.auth_failures.inc(why);
    }

    pub fn auth_failures(&self, why: AuthFailure) -> u64 {
        self.auth_failures.get(why)
    }

    pub fn slow_consumer(&self, why: SlowReason) {
        self.slow.inc(why);
    }

    pub fn slow_consumers(&self, why: SlowReason) -> u64 {
        self.slow.get(why)
    }

    pub fn dropped(&self, why: DropReason, n: u64) {
        if n > 0 {
            self.dropped.inc_by(why, n);
        }
    }

    pub fn dropped_total(&self, why: DropReason) -> u64 {
        self.dropped.get(why)
    }

    /// The registry in the OpenMetrics text format.
    /// The node is in a cluster: the `achat_cluster_*` series are shown from now on.
    pub fn cluster_on(&self) {
        self.cluster_shown
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let shown = self
            .cluster_shown
            .load(std::sync::atomic::Ordering::Relaxed);
        encode_registry(&mut out, &self.registry)
            .and_then(|()| match shown {
                true => encode_registry(&mut out, &self.cluster_registry),
                false => Ok(()),
            })
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }

    /// The registry in the classic Prometheus text format (0.0.4), for clients that do
    /// not ask for OpenMetrics (curl, `promtool check metrics`, older scrapers).
    ///
    /// The two formats differ, for what a-chat registers, only in counter family names
    /// (OpenMetrics declares `achat_received_bytes` and its sample `achat_received_bytes_total`; the
    /// classic format declares the sample's name), in `# UNIT` lines, and in the final
    /// `# EOF`; the samples themselves are the same.
    pub fn encode_prometheus_text(&self) -> String {
        let openmetrics = self.encode();
        let counters: std::collections::HashSet<&str> = openmetrics
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(openmetrics.len());
        for line in openmetrics.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let declaration = ["# HELP ", "# TYPE "]
                .into_iter()
                .find(|prefix| line.starts_with(prefix));
            match declaration {
                Some(prefix) => {
                    let rest = &line[prefix.len()..];
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let suffix = if counters.contains(name) {
                        "_total"
                    } else {
                        ""
                    };
                    out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;

//! The daemon's counters (ARCHITECTURE §6), kept in a Prometheus registry. Hot paths hold
//! plain counter handles (an atomic add each); the admin endpoint encodes the registry.

pub mod cluster;
pub mod labels;
mod prelogin;
mod process;
mod reasons;
mod tls_gate;

pub use labels::{AuthFailure, CloseReason, Counters, LabelSet, ProxyRefusal, TlsFailure};
pub use prelogin::{looks_like_tls, Garbage, PreLogin};
use process::Process;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
pub use reasons::{DropReason, Refusal, SlowReason};

type Labels = Vec<(&'static str, &'static str)>;

/// Every counter a-chat keeps. Cloning a handle shares the same value.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    refused_per_ip: Counter,
    refused_server_full: Counter,
    refused_login_taken: Counter,
    refused_invalid_login: Counter,
    refused_cluster_unavailable: Counter,
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
    /// `error:` answers to message lines: one per line without a colon or with too many
    /// recipients, one per unknown recipient (the line still reaches the others).
    pub lines_rejected: Counter,
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
    /// Probes and garbage that arrive before a login.
    pub prelogin: PreLogin,
    /// TLS handshakes in progress and waiting for a slot.
    pub tls_gate: tls_gate::TlsGate,
}

/// Makes a metric, registers it under `name` with `help`, and gives back its handle.
fn add<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The labelled families, registered together (their children are made in [`Metrics::new`]).
struct Families {
    refused: Family<Labels, Counter>,
    accept_errors: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    slow_consumers: Family<Labels, Counter>,
    tls_failed: Family<Labels, Counter>,
    proxy_refused: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    auth_failed: Family<Labels, Counter>,
}

impl Families {
    fn register(registry: &mut Registry) -> Families {
        let refused: Family<Labels, Counter> = add(
            registry,
            "connections_refused",
            "Chat connections refused, by reason",
        );
        let accept_errors: Family<Labels, Counter> = add(registry, "accept_errors", "Accept errors, by class (per_connection: skipped at once; resource_shortage: followed by accept_error_sleep)");
        let dropped: Family<Labels, Counter> = add(
            registry,
            "deliveries_dropped",
            "Deliveries that could not be written, by reason",
        );
        let slow_consumers: Family<Labels, Counter> = add(registry, "slow_consumers", "Connections disconnected for not reading, by the bound they passed (grace: over outbound_queue_bytes longer than slow_consumer_grace; hard_limit: over outbound_queue_hard_bytes; write_timeout; total_limit: largest queue when all passed outbound_total_bytes)");
        let tls_failed: Family<Labels, Counter> = add(registry, "tls_handshake_failures", "TLS handshakes that failed, by reason (not_tls: plaintext or garbage; client_certificate: missing or not signed by client_ca; protocol; too_large: a ClientHello over 16 KiB; closed; timeout: not done within login_timeout)");
        let proxy_refused: Family<Labels, Counter> = add(registry, "proxy_headers_refused", "Connections from a [server] proxy_protocol_from address closed for their PROXY protocol header, by reason (missing: the connection began otherwise; too_long; malformed; unsupported: a version or command a-chat does not know; timeout: no whole header within login_timeout)");
        let reloads: Family<Labels, Counter> = add(registry, "config_reloads", "Configuration reloads on SIGHUP, by result (ok: applied; error: the file or a file it names could not be used, nothing changed)");
        let auth_failed: Family<Labels, Counter> = add(registry, "auth_failures", "Logins refused by authentication, by reason (bad_credentials: unknown user, wrong or missing password; rate_limited: over max_failures_per_ip, refused without a check; busy: the queue of logins waiting for a check was full, refused without a check and not counted against the address)");
        let build_info: Family<Labels, Gauge> = add(
            registry,
            "build_info",
            "Always 1; the labels say which a-chat runs",
        );
        build_info
            .get_or_create(&vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("A_CHAT_COMMIT")),
            ])
            .set(1);
        Families {
            refused,
            accept_errors,
            dropped,
            slow_consumers,
            tls_failed,
            proxy_refused,
            reloads,
            auth_failed,
        }
    }
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
        let connections_open: Gauge =
            add(registry, "connections_open", "Chat connections open now");
        let connections_accepted: Counter = add(
            registry,
            "connections_accepted",
            "Chat connections accepted",
        );
        let accept_paused_at_cap: Counter = add(registry, "accept_paused_at_cap", "Times accepting paused because all max_connections tokens were in use; connections arriving meanwhile wait in the listen backlog (held, not refused)");
        let messages_received: Counter = add(
            registry,
            "messages_received",
            "Message lines received from logged-in clients",
        );
        let deliveries_routed: Counter = add(
            registry,
            "deliveries_routed",
            "Deliveries (one message to one recipient) routed to a logged-in recipient",
        );
        let messages_delivered: Counter = add(
            registry,
            "deliveries_written",
            "Deliveries (one message to one recipient) written to the recipient's socket",
        );
        let lines_rejected: Counter = add(registry, "lines_rejected", "Refused message lines: one per line without a colon or with too many recipients, one per unknown recipient of a line (answered once per name and read)");
        let bytes_in = Counter::default();
        registry.register_with_unit(
            "received",
            "Bytes read from clients",
            prometheus_client::registry::Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register_with_unit(
            "sent",
            "Bytes written to clients",
            prometheus_client::registry::Unit::Bytes,
            bytes_out.clone(),
        );
        let outbound_queued: Gauge = add(registry, "outbound_queued_bytes", "Bytes queued for clients and not yet written, all connections together (bounded by outbound_total_bytes)");
        let bad_line_disconnects: Counter = add(registry, "bad_line_disconnects", "Connections closed with 'too many bad lines' for sending refused lines faster than 10 a second (bursts of 20)");
        let panics: Counter = add(
            registry,
            "connection_panics",
            "Connection tasks that panicked and were closed",
        );
        let draining: Gauge = add(
            registry,
            "draining",
            "1 while the shutdown drain runs, else 0",
        );
        let log_lines_dropped: Counter = add(
            registry,
            "log_lines_dropped",
            "Log lines dropped because the log writer could not keep up",
        );
        let tls_handshakes: Counter = add(
            registry,
            "tls_handshakes",
            "TLS handshakes completed on the [tls] listeners",
        );
        let login_timeouts: Counter = add(
            registry,
            "login_timeouts",
            "Connections closed for sending no login within login_timeout",
        );
        let logged_in: Gauge = add(
            registry,
            "logged_in_connections",
            "Connections logged in now",
        );
        let max_connections: Gauge = add(
            registry,
            "max_connections",
            "The configured max_connections (connection tokens)",
        );
        let auth_checks: Counter = add(
            registry,
            "auth_checks",
            "Password hash checks run for logins ([auth] users_file)",
        );
        let cluster = cluster::ClusterMetrics::register(registry);
        let prelogin = PreLogin::register(registry);
        let tls_gate = tls_gate::TlsGate::register(registry);
        let process = Process::register(&mut root);
        let label = |family: &Family<Labels, Counter>, key, value| {
            family.get_or_create_owned(&vec![(key, value)])
        };
        let tls_failures = Counters::new(&tls_failed, "reason");
        let proxy_refusals = Counters::new(&proxy_refused, "reason");
        let auth_failures = Counters::new(&auth_failed, "reason");
        Metrics {
            cluster,
            prelogin,
            tls_gate,
            connections_open,
            connections_accepted,
            refused_per_ip: label(&refused, "reason", "per_ip"),
            refused_server_full: label(&refused, "reason", "server_full"),
            refused_login_taken: label(&refused, "reason", "login_taken"),
            refused_invalid_login: label(&refused, "reason", "invalid_login"),
            refused_cluster_unavailable: label(&refused, "reason", "cluster_unavailable"),
            login_timeouts,
            accept_paused_at_cap,
            accept_errors_per_connection: label(&accept_errors, "class", "per_connection"),
            accept_errors_resource: label(&accept_errors, "class", "resource_shortage"),
            messages_received,
            deliveries_routed,
            messages_delivered,
            dropped: Counters::new(&dropped, "reason"),
            lines_rejected,
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
        }
        .inc();
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
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
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

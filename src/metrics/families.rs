//! The metrics registered in groups, so that `Metrics::new` reads as a list of parts: the
//! labelled families, what the chat path counts, and the daemon's own state.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Labels;

/// Makes a metric, registers it under `name` with `help`, and gives back its handle.
pub(super) fn add<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The labelled families, registered together (their children are made in [`Metrics::new`]).
pub(super) struct Families {
    pub(super) refused: Family<Labels, Counter>,
    pub(super) accept_errors: Family<Labels, Counter>,
    pub(super) dropped: Family<Labels, Counter>,
    pub(super) slow_consumers: Family<Labels, Counter>,
    pub(super) tls_failed: Family<Labels, Counter>,
    pub(super) proxy_refused: Family<Labels, Counter>,
    pub(super) reloads: Family<Labels, Counter>,
    pub(super) auth_failed: Family<Labels, Counter>,
}

impl Families {
    pub(super) fn register(registry: &mut Registry) -> Families {
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

/// What the chat path counts: connections, messages, deliveries, bytes, queues.
pub(super) struct Traffic {
    pub(super) connections_open: Gauge,
    pub(super) connections_accepted: Counter,
    pub(super) accept_paused_at_cap: Counter,
    pub(super) messages_received: Counter,
    pub(super) deliveries_routed: Counter,
    pub(super) messages_delivered: Counter,
    pub(super) lines_rejected: Family<Labels, Counter>,
    pub(super) bytes_in: Counter,
    pub(super) bytes_out: Counter,
    pub(super) outbound_queued: Gauge,
    pub(super) bad_line_disconnects: Counter,
}

impl Traffic {
    pub(super) fn register(registry: &mut Registry) -> Traffic {
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
        let lines_rejected: Family<Labels, Counter> = add(registry, "lines_rejected", "Refused message lines, by reason (no_colon, no_recipients, too_many_recipients, control_character: one per line; unknown_recipient: one per unknown name of a line, answered once per name and read)");
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
        Traffic {
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
        }
    }
}

/// The daemon's own state and events: logins, limits, TLS and auth checks, panics, the drain, the log.
pub(super) struct Lifecycle {
    pub(super) panics: Counter,
    pub(super) draining: Gauge,
    pub(super) log_lines_dropped: Counter,
    pub(super) tls_handshakes: Counter,
    pub(super) login_timeouts: Counter,
    pub(super) logged_in: Gauge,
    pub(super) max_connections: Gauge,
    pub(super) auth_checks: Counter,
}

impl Lifecycle {
    pub(super) fn register(registry: &mut Registry) -> Lifecycle {
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
        Lifecycle {
            panics,
            draining,
            log_lines_dropped,
            tls_handshakes,
            login_timeouts,
            logged_in,
            max_connections,
            auth_checks,
        }
    }
}

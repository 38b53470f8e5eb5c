//! ARCHITECTURE §6, the metrics, over HTTP against the real binary: `/metrics` in both
//! formats (checked by promtool where it is installed), the counters against exactly the
//! traffic a test sent, and the names against the Prometheus conventions.
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{assert_samples, http_get, http_raw, sample, scrape, Client, Daemon};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn with_admin(extra: &str) -> (Daemon, SocketAddr) {
    let mut d = Daemon::with_toml(&format!("{extra}{ADMIN}"));
    let admin = d.admin_addr();
    (d, admin)
}

/// Runs `promtool check metrics` on `text`; `false` (and says so) if promtool is absent.
fn promtool_check(text: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: promtool is not installed; /metrics was not linted");
            return false;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[test]
fn health_readiness_and_metrics_in_both_formats() {
    let (_d, admin) = with_admin("");
    let health = http_get(admin, "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let ready = http_get(admin, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());

    let head = http_raw(
        admin,
        b"HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3"));

    // Without an Accept header: the classic text format, which promtool lints.
    let metrics = http_get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    assert!(
        text.contains("# TYPE achat_connections_accepted_total counter\n"),
        "{text}"
    );
    promtool_check(&text);

    // What a Prometheus server asks for: OpenMetrics.
    let om = http_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.text().ends_with("# EOF\n"), "{}", om.text());
    assert!(om
        .text()
        .contains("# TYPE achat_received_bytes counter\n# UNIT achat_received_bytes bytes\nachat_received_bytes_total 0\n"), "{}", om.text());
}

/// A chat client that counts the bytes it sends and receives.
struct Counted {
    client: Client,
    sent: usize,
    received: usize,
}

impl Counted {
    fn connect(d: &Daemon) -> Counted {
        Counted {
            client: d.connect(),
            sent: 0,
            received: 0,
        }
    }

    fn login(d: &Daemon, name: &str) -> Counted {
        let mut c = Counted::connect(d);
        c.send(name);
        c.send(&format!("{name}: ready?"));
        c.expect(&format!("from {name}: ready?"));
        c
    }

    fn send(&mut self, line: &str) {
        self.client.send(line);
        self.sent += line.len() + 1;
    }

    fn expect(&mut self, expected: &str) {
        let got = self.client.line();
        if let Some(line) = &got {
            self.received += line.len() + 1;
        }
        assert_eq!(got.as_deref(), Some(expected));
    }

    fn expect_prefix(&mut self, prefix: &str) {
        let got = self.client.line().expect("a line");
        self.received += got.len() + 1;
        assert!(got.starts_with(prefix), "{got:?}");
    }
}

#[test]
fn counters_move_by_exactly_the_traffic_sent() {
    let (d, admin) = with_admin("");
    let before = scrape(admin);
    // Every achat_ counter and traffic gauge starts at 0 (the process metrics, the
    // configured cap and budget, the build info, readiness and the time the configuration
    // was applied say something else).
    let constant = [
        "achat_max_connections",
        "achat_build_info",
        "achat_outbound_limit_bytes",
        "achat_ready",
        "achat_config_last_reload_success_timestamp_seconds",
    ];
    for (name, value) in &before {
        if name.starts_with("process_") || constant.iter().any(|c| name.starts_with(c)) {
            continue;
        }
        assert_eq!(*value, 0.0, "{name} before any chat traffic");
    }

    let mut alice = Counted::login(&d, "alice"); // 1 message, 1 delivery
    let mut bob = Counted::login(&d, "bob"); // 1 message, 1 delivery
    alice.send("bob: hello bob"); // 1 message, 1 delivery
    bob.expect("from alice: hello bob");
    bob.send("alice, bob: hi both"); // 1 message, 2 deliveries
    alice.expect("from bob: hi both");
    bob.expect("from bob: hi both");
    alice.send("bob, nobody: anyone?"); // 1 message, 1 delivery, 1 error answer
    alice.expect("error: no such user \"nobody\"");
    bob.expect("from alice: anyone?");
    alice.send("no colon here"); // not a message: 1 error answer
    alice.expect_prefix("error: ");
    alice.send(" , : nobody to send to"); // no recipients: 1 error answer
    alice.expect_prefix("error: no recipients");
    alice.send("bob: \u{1b}[2Jwiped"); // a control character: 1 error answer
    alice.expect_prefix("error: control characters");

    let mut mallory = Counted::connect(&d);
    mallory.send("alice"); // refused: login_taken
    mallory.expect_prefix("error: login \"alice\" is taken");
    mallory.client.expect_closed();
    let sent = alice.sent + bob.sent + mallory.sent;
    let received = alice.received + bob.received + mallory.received;
    drop(mallory);

    assert_samples(
        admin,
        &[
            ("achat_connections_accepted_total", 3.0),
            ("achat_connections_open", 2.0),
            (
                "achat_connections_refused_total{reason=\"login_taken\"}",
                1.0,
            ),
            (
                "achat_connections_refused_total{reason=\"invalid_login\"}",
                0.0,
            ),
            ("achat_messages_received_total", 5.0),
            ("achat_deliveries_routed_total", 6.0),
            ("achat_deliveries_written_total", 6.0),
            // Each written delivery's wait in its queue is observed once.
            ("achat_delivery_queue_wait_seconds_count", 6.0),
            ("achat_lines_rejected_total{reason=\"no_colon\"}", 1.0),
            ("achat_lines_rejected_total{reason=\"no_recipients\"}", 1.0),
            (
                "achat_lines_rejected_total{reason=\"control_character\"}",
                1.0,
            ),
            (
                "achat_lines_rejected_total{reason=\"too_many_recipients\"}",
                0.0,
            ),
            (
                "achat_lines_rejected_total{reason=\"unknown_recipient\"}",
                1.0,
            ),
            (
                "achat_deliveries_dropped_total{reason=\"recipient_gone\"}",
                0.0,
            ),
            (
                "achat_deliveries_dropped_total{reason=\"slow_consumer\"}",
                0.0,
            ),
            ("achat_received_bytes_total", sent as f64),
            ("achat_sent_bytes_total", received as f64),
            ("achat_slow_consumers_total{reason=\"grace\"}", 0.0),
            ("achat_slow_consumers_total{reason=\"hard_limit\"}", 0.0),
            ("achat_slow_consumers_total{reason=\"write_timeout\"}", 0.0),
            ("achat_slow_consumers_total{reason=\"total_limit\"}", 0.0),
            ("achat_outbound_queued_bytes", 0.0),
            ("achat_connection_panics_total", 0.0),
            ("achat_draining", 0.0),
            ("achat_accept_paused_at_cap_total", 0.0),
        ],
    );
    drop(bob);
    assert_samples(admin, &[("achat_connections_open", 1.0)]);
}

/// A read holding runs of lines to the same recipients (which a-chat routes and queues
/// as one item per run) is still counted line by line, delivered in order, and answered
/// once per unknown name.
#[test]
fn runs_of_lines_in_one_read_count_line_by_line() {
    let (d, admin) = with_admin("");
    let mut alice = Counted::login(&d, "alice"); // 1 message, 1 delivery
    let mut bob = Counted::login(&d, "bob"); // 1 message, 1 delivery
    let mut lines: Vec<String> = (0..50).map(|i| format!("bob: run {i}")).collect();
    lines.extend(["nobody: a", "nobody: b", "nobody: c"].map(String::from));
    lines.push("bob: tail".into());
    lines.extend(["bob, alice: both 1", "bob, alice: both 2"].map(String::from));
    // One write: 56 messages, 50 + 1 + 2 * 2 = 55 deliveries.
    alice.send(&lines.join("\n"));
    for i in 0..50 {
        bob.expect(&format!("from alice: run {i}"));
    }
    bob.expect("from alice: tail");
    bob.expect("from alice: both 1");
    bob.expect("from alice: both 2");
    alice.expect("error: no such user \"nobody\"");
    alice.expect("from alice: both 1");
    alice.expect("from alice: both 2");
    assert_samples(
        admin,
        &[
            ("achat_messages_received_total", 58.0),
            ("achat_deliveries_routed_total", 57.0),
            ("achat_deliveries_written_total", 57.0),
            ("achat_delivery_queue_wait_seconds_count", 57.0),
            (
                "achat_lines_rejected_total{reason=\"unknown_recipient\"}",
                3.0,
            ),
        ],
    );
}

/// /metrics follows the Prometheus naming guide: counters end in `_total` and gauges do
/// not; a unit comes last before `_total`; the process metrics and build info are there.
#[test]
fn metric_names_follow_the_prometheus_conventions() {
    let (_d, admin) = with_admin("");
    let text = http_get(admin, "/metrics").text();
    let mut types = std::collections::HashMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap();
        types.insert(name.to_owned(), kind.to_owned());
    }
    for (name, kind) in &types {
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name} without _total"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            "histogram" => assert!(!name.ends_with("_total"), "histogram {name} ends in _total"),
            other => panic!("{name}: unexpected type {other}"),
        }
        let base = name.trim_end_matches("_total");
        for unit in ["bytes", "seconds"] {
            if base.contains(unit) {
                assert!(
                    base.ends_with(unit),
                    "{name}: the unit {unit} must come last"
                );
            }
        }
        assert!(
            name.starts_with("achat_") || name.starts_with("process_"),
            "{name}"
        );
    }
    for required in [
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "achat_build_info",
        "achat_max_connections",
        "achat_logged_in_connections",
        "achat_log_lines_dropped_total",
        "achat_login_timeouts_total",
    ] {
        assert!(types.contains_key(required), "{required} missing:\n{text}");
    }
    let commit = a_chat::VERSION
        .split_once(" (")
        .unwrap()
        .1
        .trim_end_matches(')');
    assert!(
        text.contains(&format!("commit=\"{commit}\"")),
        "achat_build_info does not name the commit {commit}:\n{text}"
    );

    let samples = scrape(admin);
    assert_eq!(sample(&samples, "achat_max_connections"), 10000.0);
    assert!(sample(&samples, "process_open_fds") >= 3.0);
    assert!(sample(&samples, "process_resident_memory_bytes") > 1e6);
    // (achat_connections_closed_total has a login_timeout series: every close reason has one.)
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("achat_connections_refused") && l.contains("login_timeout")),
        "a login timeout is not a refusal"
    );
}

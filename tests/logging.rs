//! ARCHITECTURE §6 (logging) against the real binary: JSON and text output, the connection span
//! fields on every connection event, and how `[log] level` and RUST_LOG pick the lines.
mod common;

use common::{free_addr, Client, Daemon, Start};
use serde_json::{Map, Value};

/// The fields of every span an event sits in (the `span` object and the `spans` list),
/// merged, innermost last.
fn span_fields(event: &Value) -> Map<String, Value> {
    let mut merged = Map::new();
    if let Some(spans) = event.get("spans").and_then(Value::as_array) {
        for span in spans {
            merged.extend(span.as_object().cloned().unwrap_or_default());
        }
    }
    if let Some(span) = event.get("span").and_then(Value::as_object) {
        merged.extend(span.clone());
    }
    merged
}

fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or("")
}

/// Makes a chat with a login, a message, a refused line and a close, and waits until the
/// daemon has logged the close. Returns alice's address as the daemon sees it.
fn chat_and_close(d: &mut Daemon, closed: impl Fn(&str) -> bool) -> String {
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let peer = alice.stream.local_addr().unwrap().to_string();
    alice.send("bob: hello");
    bob.expect("from alice: hello");
    alice.send("no colon here");
    assert!(alice.line().unwrap().starts_with("error: "));
    drop(alice);
    d.wait_log(|l| l.contains("connection closed") && closed(l))
        .expect("alice's connection close was not logged");
    peer
}

#[test]
fn json_lines_parse_and_connection_events_carry_conn_peer_and_login() {
    // At debug: connections that never log in, and `connection opened`, log only there.
    let mut d = Daemon::with_toml("[log]\nformat = \"json\"\nlevel = \"debug\"\n");
    let peer = chat_and_close(&mut d, |l| l.contains("\"login\":\"alice\""));
    // Another connection that never logs in: its events carry conn and peer.
    let mut anon = d.connect();
    let anon_peer = anon.stream.local_addr().unwrap().to_string();
    anon.send("not a login");
    anon.read_until_closed();
    // The daemon lingers for our close after its last line; close, so it logs at once.
    drop(anon);
    d.wait_log(|l| l.contains("connection closed") && l.contains(&anon_peer))
        .expect("the refused connection's close was not logged");

    let log = d.log.lock().unwrap().clone();
    assert!(log.len() >= 5, "too few log lines: {log:?}");
    let events: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    for (e, line) in events.iter().zip(&log) {
        assert!(e.is_object(), "{line}");
        assert!(e["timestamp"].is_string(), "no timestamp: {line}");
        assert!(e["level"].is_string(), "no level: {line}");
        assert!(e["fields"].is_object(), "no fields: {line}");
    }

    // Every event of alice's connection carries conn, peer and (once logged in) login.
    let alice_events: Vec<&Value> = events
        .iter()
        .filter(|e| span_fields(e).get("peer").and_then(Value::as_str) == Some(&peer))
        .collect();
    let messages: Vec<&str> = alice_events.iter().map(|e| message(e)).collect();
    for expected in ["connection opened", "logged in", "connection closed"] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} event for alice: {messages:?}"
        );
    }
    let conn = span_fields(alice_events[0])["conn"].clone();
    assert!(conn.is_u64(), "conn is not a number: {conn}");
    let mut logged_in = false;
    for e in &alice_events {
        let fields = span_fields(e);
        assert_eq!(fields["conn"], conn, "{e}");
        if message(e) == "logged in" {
            logged_in = true;
        }
        if logged_in {
            assert_eq!(
                fields.get("login").and_then(Value::as_str),
                Some("alice"),
                "an event after the login lacks it: {e}"
            );
        }
    }

    // The connection that never logged in: conn and peer, no login.
    let anon_events: Vec<&Value> = events
        .iter()
        .filter(|e| span_fields(e).get("peer").and_then(Value::as_str) == Some(&anon_peer))
        .collect();
    assert!(
        anon_events.iter().any(|e| message(e) == "login refused"),
        "{anon_events:?}"
    );
    for e in &anon_events {
        let fields = span_fields(e);
        assert!(fields["conn"].is_u64(), "{e}");
        assert_ne!(fields["conn"], conn, "two connections share an id");
        assert!(fields.get("login").is_none(), "{e}");
    }
}

#[test]
fn text_lines_carry_the_connection_span_fields() {
    let mut d = Daemon::with_toml("[log]\nlevel = \"debug\"\n");
    let peer = chat_and_close(&mut d, |l| l.contains("login=\"alice\"}"));
    let log = d.log_text();
    let alice_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("peer={peer}")))
        .collect();
    let opened = alice_lines
        .iter()
        .find(|l| l.contains("connection opened"))
        .expect("no 'connection opened' line for alice");
    assert!(opened.contains("conn{conn="), "{opened}");
    for what in ["logged in", "connection closed"] {
        let line = alice_lines
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line for alice:\n{log}"));
        assert!(
            line.contains("conn{conn=") && line.contains("login=\"alice\"}"),
            "{line}"
        );
    }
    // People read it: no JSON, no colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the text log");
    assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
}

#[test]
fn rust_log_wins_over_the_configured_level() {
    let mut d = Daemon::start_with(Start {
        toml: "[log]\nlevel = \"warn\"\n".into(),
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Start::default()
    });
    // Info lines show (the harness found `listening on`), and so do debug lines.
    let mut alice = d.login("alice");
    alice.send("no colon here");
    assert!(alice.line().unwrap().starts_with("error: "));
    let line = d
        .wait_log(|l| l.contains("DEBUG") && l.contains("line refused"))
        .expect("RUST_LOG=debug did not show a debug line");
    assert!(line.contains("login=\"alice\""), "{line}");
}

/// Logs in, chats, and then breaks the line limit, which logs a warning: every info line
/// the connection would log comes before that warning.
fn chat_then_warn(d: &mut Daemon) {
    let mut alice: Client = d.login("alice");
    alice.send("alice: hi");
    alice.expect("from alice: hi");
    alice.send(&format!("alice: {}", "x".repeat(200)));
    alice.expect("error: line too long");
    d.wait_log(|l| l.contains("WARN") && l.contains("closing connection"))
        .expect("no warning for the long line");
}

#[test]
fn level_warn_hides_the_info_lines() {
    let mut d = Daemon::start_on(
        Start {
            toml: "[log]\nlevel = \"warn\"\n[limits]\nmax_line_bytes = 100\n".into(),
            ..Start::default()
        },
        free_addr(),
    );
    assert_only_warnings(&mut d, "level = \"warn\"");
}

#[test]
fn rust_log_warn_hides_info_even_with_level_debug() {
    let mut d = Daemon::start_on(
        Start {
            toml: "[log]\nlevel = \"debug\"\n[limits]\nmax_line_bytes = 100\n".into(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            ..Start::default()
        },
        free_addr(),
    );
    assert_only_warnings(&mut d, "RUST_LOG=warn");
}

/// Chats, waits for a warning logged after the info events would have been, and checks
/// that nothing below warn was logged.
fn assert_only_warnings(d: &mut Daemon, setting: &str) {
    chat_then_warn(d);
    let log = d.log_text();
    assert!(
        log.lines()
            .all(|l| l.contains("WARN") || l.contains("ERROR")),
        "lines below warn with {setting}:\n{log}"
    );
}

/// A typo in `[log] level` is a configuration error (it used to pass `check-config` and
/// then silence the daemon, `listening on` and the drain summary included).
#[test]
fn a_log_level_typo_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[log]\nlevel = \"verbose\"\n").unwrap();
    let path = path.to_str().unwrap();
    let (status, _, err) = common::run_cli(&["check-config", path]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 2, key `log.level`") && err.contains("\"verbose\" is not a log level"),
        "{err}"
    );
    let (status, _, err) = common::run_cli(&["server", "--config", path]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("key `log.level`"), "{err}");
}

/// A malformed RUST_LOG is a warning, and `[log] level` applies.
#[test]
fn a_malformed_rust_log_is_a_warning_and_the_configured_level_applies() {
    let mut d = Daemon::start_with(Start {
        toml: "[log]\nlevel = \"info\"\n".into(),
        env: vec![("RUST_LOG".into(), "verbose".into())],
        ..Start::default()
    });
    // The harness found `listening on`: info lines show.
    let line = d
        .wait_log(|l| l.contains("WARN") && l.contains("RUST_LOG ignored"))
        .unwrap_or_else(|| panic!("no warning; log:\n{}", d.log_text()));
    assert!(line.contains("verbose"), "{line}");
    let mut alice = d.login("alice");
    alice.send("alice: hi");
    alice.expect("from alice: hi");
    assert!(d.wait_log(|l| l.contains("logged in")).is_some());
}

/// Under systemd (JOURNAL_STREAM set) text lines carry the sd-daemon priority prefix and
/// no timestamp of their own, so `journalctl -p warning` can filter them.
#[test]
fn under_the_journal_lines_carry_a_priority_and_no_timestamp() {
    let mut d = Daemon::start_with(Start {
        toml: "[limits]\nmax_line_bytes = 100\n".into(),
        env: vec![("JOURNAL_STREAM".into(), "8:12345".into())],
        ..Start::default()
    });
    chat_then_warn(&mut d);
    let log = d.log_text();
    let listening = log.lines().find(|l| l.contains("listening on")).unwrap();
    assert!(listening.starts_with("<6>"), "{listening}");
    let warning = log
        .lines()
        .find(|l| l.contains("closing connection"))
        .unwrap();
    assert!(warning.starts_with("<4>"), "{warning}");
    // No timestamp: the journal adds its own.
    assert!(!log.contains(&format!("{}-", 2026)), "{log}");
}

#[test]
fn check_config_quiet_prints_nothing_for_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "[limits]\nmax_line_bytes = 100\n").unwrap();
    let path = path.to_str().unwrap();
    let (status, out, err) = common::run_cli(&["check-config", "--quiet", path]);
    assert_eq!(
        (status.code(), out.as_str(), err.as_str()),
        (Some(0), "", "")
    );
    std::fs::write(path, "[limits]\nmax_lines = 3\n").unwrap();
    let (status, out, err) = common::run_cli(&["check-config", "--quiet", path]);
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty() && err.contains("limits.max_lines"), "{err}");
}

/// At info an operator sees logins and closes of chatting connections, not every probe:
/// a connection that opens and closes without logging in logs nothing at info.
#[test]
fn connections_that_never_log_in_stay_out_of_the_info_log() {
    let mut d = Daemon::start();
    for _ in 0..20 {
        let probe = d.connect();
        drop(probe);
    }
    let alice = d.login("alice");
    alice.stream.shutdown(std::net::Shutdown::Both).unwrap();
    d.wait_log(|l| l.contains("connection closed") && l.contains("login=\"alice\""))
        .expect("alice's close at info");
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("conn{")).collect();
    // alice: logged in, connection closed. Nothing for the 20 probes.
    assert_eq!(lines.len(), 2, "{log}");
    assert!(!log.contains("connection opened"), "{log}");
}

/// The close line says why and how much: reason, duration, bytes and messages each way.
#[test]
fn the_close_line_says_why_and_how_much() {
    let mut d = Daemon::start();
    let mut alice = d.login("alice");
    alice.send("alice: one");
    alice.expect("from alice: one");
    alice.stream.shutdown(std::net::Shutdown::Both).unwrap();
    let line = d
        .wait_log(|l| l.contains("connection closed") && l.contains("login=\"alice\""))
        .expect("alice's close line");
    for field in [
        "reason=\"client_closed\"",
        "duration_ms=",
        "messages_in=2",
        "messages_out=2",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(common::log_number(&line, "bytes_in") >= 25, "{line}");
    assert!(common::log_number(&line, "bytes_out") >= 30, "{line}");
}

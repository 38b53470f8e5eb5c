//! Signals against the real binary, beyond the drain's own (tests/drain.rs): the ones an
//! operator sends by habit (SIGUSR1 to reopen logs, SIGUSR2, SIGPIPE) never end the daemon,
//! and every line the daemon writes on the way out, the second signal's included, goes
//! through the log format in force, so a JSON pipeline never meets a plain line.
mod common;

use std::time::Duration;

use common::{Client, Daemon, WAIT};
use serde_json::Value;

/// A pair that proves the daemon still serves: `a` sends to `b`, `b` answers.
fn chat(a: &mut Client, b: &mut Client, text: &str) {
    a.send(&format!("b: {text}"));
    b.expect(&format!("from a: {text}"));
    b.send(&format!("a: re {text}"));
    a.expect(&format!("from b: re {text}"));
}

#[test]
fn signals_sent_by_habit_leave_the_daemon_serving() {
    let mut d = Daemon::start();
    let (mut a, mut b) = (d.login("a"), d.login("b"));
    for (signal, name) in [
        (libc::SIGUSR1, Some("SIGUSR1")),
        (libc::SIGUSR2, Some("SIGUSR2")),
        (libc::SIGPIPE, None),
    ] {
        d.signal(signal);
        if let Some(name) = name {
            d.wait_log(|l| l.contains("signal received and ignored") && l.contains(name))
                .unwrap_or_else(|| panic!("no line for {name}:\n{}", d.log_text()));
        }
        chat(&mut a, &mut b, &format!("after signal {signal}"));
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "signal {signal} ended the daemon:\n{}",
            d.log_text()
        );
    }
    // The drain still works after them all.
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(WAIT).expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// Every line of the daemon's stderr, parsed as JSON; panics on a line that is not.
fn json_lines(d: &Daemon) -> Vec<Value> {
    d.log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn in_json_mode_the_second_signal_and_the_drain_summary_are_json_with_whole_numbers() {
    // A drain held open by a client that never reads, so that a second signal arrives
    // while it runs.
    let mut d = Daemon::with_toml(
        "[log]\nformat = \"json\"\n\
         [limits]\noutbound_queue_bytes = 33554432\nwrite_timeout = \"60s\"\n\
         [shutdown]\ndrain_timeout = \"60s\"\n",
    );
    let _sleepy = d.login_small_rcvbuf("sleepy", 4096);
    let mut talker = d.login("talker");
    let line = format!("sleepy: {}\n", "x".repeat(1000));
    for _ in 0..(8 << 20) / line.len() {
        talker.send_raw(line.as_bytes()).expect("send");
    }
    talker.send("talker: all sent");
    talker.expect("from talker: all sent");
    d.signal(libc::SIGINT);
    d.wait_log(|l| l.contains("drain started"))
        .expect("the drain did not start");
    d.signal(libc::SIGINT);
    let status = d.wait_exit(WAIT).expect("no exit after the second SIGINT");
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    let lines = json_lines(&d);
    let last = lines.last().expect("no log line");
    assert!(
        message(last).contains("exiting without finishing the drain"),
        "the last line is not the second signal's: {last}"
    );
    assert_eq!(last["level"], "WARN", "{last}");

    // A drain that finishes: its summary's duration is a whole number of milliseconds.
    let mut d = Daemon::with_toml("[log]\nformat = \"json\"\n");
    let (mut a, mut b) = (d.login("a"), d.login("b"));
    chat(&mut a, &mut b, "before the drain");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("no exit").success());
    let lines = json_lines(&d);
    let summary = lines
        .iter()
        .find(|l| message(l) == "drain finished")
        .unwrap_or_else(|| panic!("no summary:\n{}", d.log_text()));
    let took = &summary["fields"]["took_ms"];
    assert!(took.is_u64(), "took_ms is not a whole number: {took}");
    assert!(took.as_u64().unwrap() < Duration::from_secs(60).as_millis() as u64);
}

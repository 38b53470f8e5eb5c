//! `a-chat-bench` spread over several addresses (`--addr A --addr B`), against two real
//! daemons that are NOT clustered: with every recipient on the other daemon, each message
//! gets `error: no such user` and the run fails, which proves the clients really connect
//! to both; the same daemon given twice passes with nothing lost.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::Daemon;

/// Runs `a-chat-bench --json -q ARGS`; returns (exit code, JSON, stderr).
fn bench(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["--json", "-q"];
    all.extend_from_slice(args);
    let (status, out, err) = common::cli::run_within(env!("CARGO_BIN_EXE_a-chat-bench"), &all);
    let json = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    (status.code().unwrap_or(-1), json, err)
}

#[test]
fn direct_over_two_unclustered_daemons_fails_with_no_such_user() {
    let (a, b) = (Daemon::start(), Daemon::start());
    let (a, b) = (a.addr.to_string(), b.addr.to_string());
    // 5 clients round up to 6: 0, 2, 4 on A send to 1, 3, 5 on B, and back.
    let (code, j, err) = bench(&[
        "--addr", &a, "--addr", &b, "-c", "5", "-n", "20", "-d", "3s", "--grace", "1s", "direct",
    ]);
    assert_eq!(code, 1, "{j} {err}");
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["addresses"], 2, "{j}");
    assert_eq!(j["clients"], 6, "{j}");
    assert_eq!(j["clients_requested"], 5, "{j}");
    assert_eq!(j["cross_node_share"].as_f64(), Some(1.0), "{j}");
    // Every client logged in (each on its own daemon), and nothing was delivered.
    assert_eq!(j["confirmed"], 6, "{j}");
    assert_eq!(j["delivered"], 0, "{j}");
    assert!(j["server_errors"].as_u64().unwrap_or(0) > 0, "{j}");
    assert!(j["notes"].to_string().contains("no such user"), "{j}");
    assert!(err.contains("rounded up to 6"), "{err}");
}

#[test]
fn direct_and_cross_node_fanout_over_one_daemon_given_twice_lose_nothing() {
    let d = Daemon::start();
    let a = d.addr.to_string();
    let (code, j, err) = bench(&[
        "--addr", &a, "--addr", &a, "-c", "6", "-n", "200", "-d", "5s", "direct",
    ]);
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(
        (j["addresses"].as_u64(), j["delivered"].as_u64()),
        (Some(2), Some(1200)),
        "{j}"
    );
    assert_eq!(j["lost"], 0, "{j}");
    // The same address twice: no delivery crosses between different addresses.
    assert_eq!(j["cross_node_share"].as_f64(), Some(0.0), "{j}");

    let (code, j, err) = bench(&[
        "--addr",
        &a,
        "--addr",
        &a,
        "-c",
        "6",
        "-n",
        "100",
        "-d",
        "5s",
        "fanout",
        "3",
        "--cross-node",
    ]);
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(
        (j["delivered"].as_u64(), j["lost"].as_u64()),
        (Some(1800), Some(0)),
        "{j}"
    );
    assert_eq!(j["cross_node"], true, "{j}");
}

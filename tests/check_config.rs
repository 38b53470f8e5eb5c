//! ARCHITECTURE §3 against the real binary: `a-chat check-config` on the shipped file, the
//! example cluster nodes and files of a test's own: the effective settings it prints, what
//! it says about this machine, and the file it names when one fails.
mod common;

use std::path::{Path, PathBuf};

use common::run_cli;

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/a-chat.toml")
}

#[test]
fn check_config_on_the_shipped_file_prints_the_effective_settings() {
    let path = shipped_config();
    let (status, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
    for setting in [
        "listen = [\"127.0.0.1:8080\"]",
        "max_connections = 10000",
        "max_connections_per_ip = 0",
        "accept_error_sleep = \"500ms\"",
        "max_login_bytes = 64",
        "max_line_bytes = 8192",
        "max_recipients = 64",
        "login_timeout = \"10s\"",
        "idle_timeout = \"0s\"",
        "outbound_queue_bytes = 1048576",
        "slow_consumer_grace = \"5s\"",
        "outbound_queue_hard_bytes = 33554432",
        "outbound_total_bytes = 268435456",
        "listen_backlog = 4096",
        "write_timeout = \"10s\"",
        "drain_timeout = \"10s\"",
        "level = \"info\"",
        "format = \"text\"",
    ] {
        assert!(out.contains(setting), "{setting:?} missing from:\n{out}");
    }
    // It compares listen_backlog with the kernel's cap, where that can be read.
    if let Ok(cap) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
        let cap: u32 = cap.trim().parse().unwrap();
        let verdict = if cap < 4096 { "capped at" } else { "ok" };
        let line = format!("# net.core.somaxconn here: {cap}; listen_backlog = 4096: {verdict}");
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    // The effective settings are a valid config themselves.
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &out).unwrap();
    let (status, out2, err) = run_cli(&["check-config", again.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
    let settings = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(settings(&out), settings(&out2));
}

/// The example cluster node configs (deploy/cluster/n1.toml ..., installed by operators as
/// /etc/a-chat/nN.toml for deploy/a-chat@.service) are valid, each with its own node id.
/// (deploy/verify-deploy.sh checks the units and the HAProxy example around them.)
#[test]
fn check_config_passes_on_the_example_cluster_nodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cluster");
    for node in ["n1", "n2", "n3"] {
        let path = dir.join(format!("{node}.toml"));
        let (status, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
        assert_eq!(
            status.code(),
            Some(0),
            "check-config {}: {err}",
            path.display()
        );
        assert!(
            out.contains(&format!("\"{node}\"")),
            "node_id {node:?} missing from the effective settings of {}:\n{out}",
            path.display()
        );
        assert!(
            out.contains("proxy_protocol_from = [\"127.0.0.2/32\"]"),
            "the balancer missing from the effective settings of {}:\n{out}",
            path.display()
        );
    }
}

#[test]
fn check_config_shows_the_values_of_the_file_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("some.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:7000\", \"[::1]:7001\"]\n[limits]\nmax_line_bytes = 100\n",
    )
    .unwrap();
    let (status, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        out.contains("127.0.0.1:7000") && out.contains("[::1]:7001"),
        "{out}"
    );
    assert!(out.contains("max_line_bytes = 100"), "{out}");
    assert!(
        out.contains("max_recipients = 64"),
        "defaults fill the rest: {out}"
    );
    // An empty file is all defaults.
    std::fs::write(&path, "").unwrap();
    let (status, out, _) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("listen = [\"127.0.0.1:8080\"]"), "{out}");
}

/// check-config compares max_connections with the open-file limit it runs under, so an
/// operator learns before starting that accepts would fail with EMFILE below the cap.
#[test]
fn check_config_warns_when_max_connections_is_near_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    std::fs::write(&path, "[server]\nmax_connections = 1000\n").unwrap();
    let check = |nofile: u64| {
        let out = std::process::Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(common::bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run prlimit");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let tight = check(100);
    assert!(
        tight.contains("open-file limit (ulimit -n) here: 100")
            && tight.contains("exceeds the limit"),
        "{tight}"
    );
    let roomy = check(4096);
    assert!(
        roomy.contains("here: 4096; max_connections = 1000: ok"),
        "{roomy}"
    );
}

#[test]
fn check_config_names_the_cluster_tls_file_that_fails() {
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nredis = \"rediss://127.0.0.1:6380/\"\ntls_ca = \"{}\"\n\
             tls_cert = \"/nonexistent/node.pem\"\ntls_key = \"{}\"\n",
            pki.path("ca.pem"),
            pki.path("client.key")
        ),
    )
    .unwrap();
    let (status, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("key `cluster.tls_cert`"), "{err}");
    assert!(err.contains("/nonexistent/node.pem"), "{err}");
    // With the right files it passes.
    let good = std::fs::read_to_string(&path)
        .unwrap()
        .replace("/nonexistent/node.pem", &pki.path("client.pem"));
    std::fs::write(&path, good).unwrap();
    let (status, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
}

//! `a-chat probe` against a daemon with authenticated logins: a health check is free. It
//! costs no failed login, no info line and no lockout of its address, so the real users
//! of 127.0.0.1 (a container's health check shares their address) can still log in.
mod common;

use std::path::PathBuf;

use common::{run_cli_env, run_cli_input, run_cli_within, sample, scrape, Daemon};

/// A users file with `alice`'s password, made by `a-chat passwd`, in its own directory.
fn users_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let (status, out, err) = run_cli_input(&["passwd", "alice"], b"wonderland\n");
    assert!(status.success(), "{err}");
    std::fs::write(&path, format!("[users]\n{out}")).unwrap();
    (dir, path)
}

#[test]
fn probes_cost_no_failed_login_no_info_line_and_no_lockout() {
    let (_dir, users) = users_file();
    let mut d = Daemon::with_toml(&format!(
        "[auth]\nusers_file = \"{}\"\nmax_failures_per_ip = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    ));
    let admin = d.admin_addr();
    let addr = d.addr.to_string();
    for i in 0..20 {
        let (status, _, err) = run_cli_within(&["probe", &addr]);
        assert_eq!(status.code(), Some(0), "probe {i}: {err}");
    }
    // The same address then logs in with the right password.
    let mut alice = d.connect();
    alice.send("alice wonderland");
    alice.send("alice: still me?");
    alice.expect("from alice: still me?");

    let metrics = scrape(admin);
    let value = |name: &str| sample(&metrics, name);
    assert_eq!(
        value("achat_auth_failures_total{reason=\"bad_credentials\"}"),
        0.0,
        "{metrics:?}"
    );
    assert_eq!(
        value("achat_auth_failures_total{reason=\"rate_limited\"}"),
        0.0,
        "{metrics:?}"
    );
    assert_eq!(value("achat_auth_checks_total"), 1.0, "only alice's login");
    assert_eq!(value("achat_probes_total"), 20.0, "{metrics:?}");
    d.wait_log(|l| l.contains("logged in") && l.contains("login=\"alice\""))
        .expect("alice's login at info");
    let log = d.log_text();
    let per_connection: Vec<&str> = log.lines().filter(|l| l.contains("conn{")).collect();
    assert_eq!(
        per_connection.len(),
        1,
        "only alice's login is logged at info:\n{log}"
    );
}

/// With `--user`, the probe logs in for real (the password check included): the right
/// password is no failure, and neither is the password-free probe between them, however
/// often they run.
#[test]
fn probes_with_and_without_user_lock_nobody_out() {
    let (_dir, users) = users_file();
    let mut d = Daemon::with_toml(&format!(
        "[auth]\nusers_file = \"{}\"\nmax_failures_per_ip = 2\n",
        users.display()
    ));
    let addr = d.addr.to_string();
    for i in 0..5 {
        let (status, _, err) = run_cli_env(
            &["probe", "--user", "alice", &addr],
            &[("A_CHAT_PASSWORD", "wonderland")],
            b"",
        );
        assert_eq!(status.code(), Some(0), "probe --user {i}: {err}");
        let (status, _, err) = run_cli_within(&["probe", &addr]);
        assert_eq!(status.code(), Some(0), "probe {i}: {err}");
        // The probe's login is free again once its close is seen.
        wait_closes(&mut d, i + 1);
    }
    let mut alice = d.connect();
    alice.send("alice wonderland");
    alice.send("alice: still me?");
    alice.expect("from alice: still me?");
    assert!(!d.log_text().contains("login refused"), "{}", d.log_text());
}

/// Waits until alice's connection has closed `n` times (its close lines).
fn wait_closes(d: &mut Daemon, n: usize) {
    let closes = |log: &str| {
        log.lines()
            .filter(|l| l.contains("connection closed") && l.contains("login=\"alice\""))
            .count()
    };
    let deadline = std::time::Instant::now() + common::WAIT;
    while closes(&d.log_text()) < n {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        d.wait_log_for(std::time::Duration::from_millis(100), |_| false);
    }
}

//! `a-chat bench --tls` against the real daemon's TLS listener: every workload's
//! connections make a TLS handshake before they log in (with mutual TLS when the daemon
//! asks for client certificates), and a bench without the client certificate is refused.
//! Certificates are made for each test with the `openssl` command.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Daemon, Pki};

/// Runs `a-chat-bench --tls ... --json -q ARGS` against `addr`; returns (exit code, JSON).
fn bench(addr: std::net::SocketAddr, tls: &[&str], args: &[&str]) -> (i32, serde_json::Value) {
    let addr = addr.to_string();
    let mut all = vec!["--addr", &addr, "--json", "-q"];
    all.extend_from_slice(tls);
    all.extend_from_slice(args);
    let (status, out, err) = common::cli::run_within(env!("CARGO_BIN_EXE_a-chat-bench"), &all);
    let json = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    let code = status.code().unwrap_or(-1);
    assert!(
        code == 0 || !err.is_empty() || !json.is_null(),
        "{all:?}: no output"
    );
    (code, json)
}

#[test]
fn every_workload_runs_over_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&pki.toml(true));
    let addr = d.tls_addr();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let tls = ["--tls", "--ca", &ca, "--cert", &cert, "--key", &key];
    for (args, what) in [
        (
            &["-c", "10", "-n", "300", "-d", "10s", "direct"][..],
            "direct",
        ),
        (
            &["-c", "10", "-n", "100", "-d", "10s", "fanout", "3"][..],
            "fanout",
        ),
        (&["-d", "1s", "idle", "20"][..], "idle"),
        (&["storm", "40", "--concurrency", "16"][..], "storm"),
        (
            &[
                "-d",
                "10s",
                "burst",
                "--senders",
                "3",
                "--burst-bytes",
                "256k",
                "--rounds",
                "2",
            ][..],
            "burst",
        ),
    ] {
        let (code, j) = bench(addr, &tls, args);
        assert_eq!(code, 0, "{what}: {j}");
        assert_eq!(j["ok"], true, "{what}: {j}");
        match what {
            "direct" => {
                assert_eq!(j["delivered"], 3000, "{j}");
                assert_eq!(j["tls"], true, "{j}");
            }
            "fanout" => assert_eq!(j["delivered"], 3000, "{j}"),
            "storm" => {
                assert_eq!(j["logged_in"], 40, "{j}");
                assert!(j["tls"].as_str().unwrap_or("").contains("TLS"), "{j}");
                assert!(j["logins_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{j}");
            }
            _ => {}
        }
    }
}

#[test]
fn a_bench_without_the_client_certificate_or_with_the_wrong_name_fails() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&pki.toml(true));
    let addr = d.tls_addr();
    let ca = pki.path("ca.pem");
    let (code, _) = bench(
        addr,
        &["--tls", "--ca", &ca],
        &["-c", "2", "-n", "10", "--connect-timeout", "3s", "direct"],
    );
    assert_ne!(code, 0, "mutual TLS let a bench without a certificate in");

    let pki = Pki::new();
    let mut d = Daemon::with_toml(&pki.toml(false));
    let addr = d.tls_addr();
    let ca = pki.path("ca.pem");
    // The certificate names localhost and 127.0.0.1, not chat.example.
    let tls_ok = ["--tls", "--ca", &ca, "--server-name", "localhost"];
    let (code, j) = bench(addr, &tls_ok, &["storm", "5"]);
    assert_eq!(code, 0, "{j}");
    let tls_bad = ["--tls", "--ca", &ca, "--server-name", "chat.example"];
    let (code, j) = bench(addr, &tls_bad, &["--connect-timeout", "3s", "storm", "5"]);
    assert_ne!(code, 0, "{j}");
    assert_eq!(j["logged_in"], 0, "{j}");
}

//! `a-chat client` against the real daemon, as a user points it: at a host name, with
//! `--tls` and no `--ca` (the system's certificate authorities), and, by mistake, in
//! plaintext at a TLS port (a clear error and status 1, not garbage and status 0).
mod common;

use common::pki::Pki;
use common::{run_cli_env, Daemon};

#[test]
fn the_client_takes_a_host_name() {
    let d = Daemon::start();
    let target = format!("localhost:{}", d.addr.port());
    // localhost may name ::1 first, where nothing listens: the client tries the next.
    let (status, out, err) = run_cli_env(&["client", &target], &[], b"alice\nalice: hi\n");
    assert!(status.success(), "{status:?} {err}");
    assert!(out.contains("from alice: hi"), "{out}\n{err}");
    let (status, _, err) = run_cli_env(&["client", "no-such-host.invalid:8080"], &[], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot resolve no-such-host.invalid:8080"),
        "{err}"
    );
}

#[test]
fn tls_without_ca_trusts_the_systems_authorities_and_checks_the_host_name() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&pki.toml(false));
    let target = format!("localhost:{}", d.tls_addr().port());
    // SSL_CERT_FILE stands in for the system's bundle: it holds the test CA.
    let ca = pki.path("ca.pem");
    let (status, out, err) = run_cli_env(
        &["client", "--tls", &target],
        &[("SSL_CERT_FILE", &ca)],
        b"alice\nalice: over tls\n",
    );
    assert!(status.success(), "{status:?} {err}");
    assert!(out.contains("from alice: over tls"), "{out}\n{err}");
    // With the system's real authorities, the test CA is unknown: refused, not trusted.
    let (status, out, err) = run_cli_env(&["client", "--tls", &target], &[], b"bob\n");
    assert_eq!(status.code(), Some(1), "{out} {err}");
    assert!(
        err.contains("TLS handshake") && !out.contains("from"),
        "{err}"
    );
}

#[test]
fn a_plaintext_client_at_a_tls_port_says_so_and_fails() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&pki.toml(false));
    let target = d.tls_addr().to_string();
    let (status, out, err) = run_cli_env(&["client", &target], &[], b"alice\nalice: hi\n");
    assert_eq!(status.code(), Some(1), "{out} {err}");
    assert!(
        err.contains("answered in TLS") && err.contains("--tls"),
        "{err}"
    );
    assert!(out.is_empty(), "garbage on stdout: {out:?}");
}

//! `[tls] client_identity = "login"`, against the real binary: a client certificate names
//! the only logins its connection may use (its subjectAltName's email and DNS names, or
//! its CN), the subject is in the login's log line, and a configuration that asks for it
//! without client certificates is refused.
mod common;

use common::tlsclient::TlsClient;
use common::{Daemon, Pki};

fn daemon(pki: &Pki) -> Daemon {
    Daemon::with_toml(&format!("{}client_identity = \"login\"\n", pki.toml(true)))
}

#[test]
fn a_certificate_names_the_only_login_it_may_use() {
    let pki = Pki::new();
    let mut d = daemon(&pki);
    let addr = d.tls_addr();
    // The test PKI's client certificate has CN=client and no subjectAltName.
    let mut other = TlsClient::connect(addr, &pki, Some("client")).expect("a handshake");
    other.send("mallory");
    other
        .expect("error: login \"mallory\" is not a name of your certificate (it names \"client\")");
    let mut good = TlsClient::connect(addr, &pki, Some("client")).expect("a handshake");
    good.send("Client");
    good.send("client: me");
    good.expect("from Client: me");
    let line = d
        .wait_log(|l| l.contains("logged in") && l.contains("certificate"))
        .expect("a login line naming the certificate");
    assert!(line.contains("certificate=client"), "{line}");
}

#[test]
fn asking_for_it_without_client_certificates_cannot_start() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    std::fs::write(
        &path,
        format!("{}client_identity = \"login\"\n", pki.toml(false)),
    )
    .unwrap();
    let (status, _, err) = common::run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("tls.client_identity") && err.contains("client_ca"),
        "{err}"
    );
}

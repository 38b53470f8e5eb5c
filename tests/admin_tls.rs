//! The admin endpoint over HTTPS with client certificates (`[admin] tls_cert`, `tls_key`,
//! `tls_client_ca`), against the real binary: a client with a certificate the CA signed is
//! served, one without is refused at the handshake, and plain HTTP gets no answer.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::tlsclient::TlsClient;
use common::{Daemon, Pki};

fn daemon(pki: &Pki) -> Daemon {
    Daemon::with_toml(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    ))
}

/// `GET path` over `client`; the status line.
fn get(client: &mut TlsClient, path: &str) -> Option<String> {
    client
        .try_send(&format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r"
        ))
        .ok()?;
    client.line()
}

#[test]
fn https_with_a_client_certificate_is_served_and_nothing_else_is() {
    let pki = Pki::new();
    let mut d = daemon(&pki);
    let admin = d.admin_addr();
    let mut good = TlsClient::connect(admin, &pki, Some("client")).expect("a handshake");
    let status = get(&mut good, "/healthz").expect("an answer");
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let mut metrics = TlsClient::connect(admin, &pki, Some("client")).expect("a handshake");
    assert!(get(&mut metrics, "/metrics")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // No certificate, or one from another CA: refused at the handshake (at the latest
    // when the first answer would come).
    for cert in [None, Some("stranger")] {
        let answered = TlsClient::connect(admin, &pki, cert)
            .ok()
            .and_then(|mut c| get(&mut c, "/healthz"));
        assert_eq!(
            answered, None,
            "served without a good certificate ({cert:?})"
        );
    }
    // Plain HTTP: no HTTP answer.
    let mut plain = TcpStream::connect(admin).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // The chat still runs beside it.
    let mut alice = d.login("alice");
    alice.send("alice: fine");
    alice.expect("from alice: fine");
}

#[test]
fn a_client_ca_without_https_cannot_start() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls_client_ca = \"{}\"\n",
        pki.path("ca.pem")
    );
    std::fs::write(&path, toml).unwrap();
    let (status, _, err) = common::run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("admin.tls_client_ca"), "{err}");
}

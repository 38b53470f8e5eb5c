//! Where the WebSocket listener meets the other features (ARCHITECTURE §12, §14), against
//! the real binary: a balancer's PROXY header before the request, the per-address cap and
//! bans answered in HTTP, the certificate renewed on SIGHUP for wss, certificate
//! identity over wss, `[auth]` logins, an operator's kick, and socket activation.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::ws::{connect_tls, connect_tls_as, raw_exchange, WsClient};
use common::{http_get, Daemon, Pki, WAIT};
use tungstenite::client::IntoClientRequest;

/// A session opened through a balancer's PROXY v1 header naming `client`.
fn via_balancer(ws: std::net::SocketAddr, client: &str) -> Result<WsClient, tungstenite::Error> {
    let mut sock = TcpStream::connect(ws).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let (ip, port) = client.rsplit_once(':').unwrap();
    write!(sock, "PROXY TCP4 {ip} 127.0.0.1 {port} 8081\r\n").unwrap();
    let request = format!("ws://{ws}/").into_client_request().unwrap();
    match tungstenite::client(request, sock) {
        Ok((ws, _)) => Ok(WsClient { ws }),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(_) => panic!("handshake interrupted"),
    }
}

#[test]
fn behind_a_balancer_sessions_are_known_and_capped_by_the_client_it_names() {
    let mut d = Daemon::with_toml(
        "[server]\nlisten = \"127.0.0.1:0\"\nproxy_protocol_from = [\"127.0.0.1\"]\n\
         max_connections_per_ip = 1\n[websocket]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (ws, admin) = (d.ws_addr(false), d.admin_addr());
    let mut alice = via_balancer(ws, "192.0.2.7:5000").expect("a session");
    alice.send("alice");
    alice.send("alice: here");
    alice.expect("from alice: here");
    let rows = http_get(admin, "/connections").text();
    assert!(
        rows.contains("\"peer\":\"192.0.2.7:5000\",\"transport\":\"ws\""),
        "{rows}"
    );
    // A second session from the same client is over the cap: an HTTP answer says so.
    match via_balancer(ws, "192.0.2.7:5001") {
        Err(tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 429),
        Err(other) => panic!("expected a 429, got {other}"),
        Ok(_) => panic!("a second session from 192.0.2.7 was let in"),
    }
    // Another client behind the same balancer is not.
    let mut bob = via_balancer(ws, "198.51.100.9:6000").expect("a session");
    bob.send("bob");
    bob.send("alice: hi");
    alice.expect("from bob: hi");
    // A bad header is answered in HTTP too.
    let answer = raw_exchange(ws, b"PROXY NONSENSE\r\nGET / HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[test]
fn a_banned_address_is_told_in_http_on_a_websocket_listener() {
    let mut d = Daemon::with_toml(
        "[websocket]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (ws, admin) = (d.ws_addr(false), d.admin_addr());
    let ban = "POST /bans?address=127.0.0.1&reason=testing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let banned = common::http_raw(admin, ban.as_bytes()).expect("an answer");
    assert!(banned.status < 300, "{}", banned.text());
    let answer = raw_exchange(ws, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

#[test]
fn wss_gets_the_renewed_certificate_after_sighup_and_keeps_its_sessions() {
    let pki = Pki::new();
    let tls = pki.toml(false).replace("listen = \"127.0.0.1:0\"\n", "");
    let mut d = Daemon::with_toml(&format!("[websocket]\ntls_listen = \"127.0.0.1:0\"\n{tls}"));
    let wss = d.ws_addr(true);
    let first = std::fs::read(pki.path("server.pem")).unwrap();
    let mut old = connect_tls(wss, &pki);
    old.send("old");
    old.send("old: in");
    old.expect("from old: in");
    let before = old.server_certificate();
    pki.renew_server();
    assert_ne!(first, std::fs::read(pki.path("server.pem")).unwrap());
    d.signal(libc::SIGHUP);
    d.wait_log(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("no reload:\n{}", d.log_text()));
    let mut new = connect_tls(wss, &pki);
    new.send("new");
    assert_ne!(
        new.server_certificate(),
        before,
        "the renewed certificate is served"
    );
    new.send("old: after the renewal");
    old.expect("from new: after the renewal");
}

#[test]
fn over_wss_a_certificate_names_the_only_login_it_may_use() {
    let pki = Pki::new();
    let tls = pki.toml(true).replace("listen = \"127.0.0.1:0\"\n", "");
    let mut d = Daemon::with_toml(&format!(
        "[websocket]\ntls_listen = \"127.0.0.1:0\"\n{tls}client_identity = \"login\"\n"
    ));
    let wss = d.ws_addr(true);
    let mut other = connect_tls_as(wss, &pki, Some("client"));
    other.send("mallory");
    other
        .expect("error: login \"mallory\" is not a name of your certificate (it names \"client\")");
    let mut good = connect_tls_as(wss, &pki, Some("client"));
    good.send("Client");
    good.send("client: me");
    good.expect("from Client: me");
}

#[test]
fn auth_logins_and_an_operators_kick_work_over_websocket() {
    let users = common::users::UsersFile::new(&[("dora", "correct horse")]);
    let mut d =
        users.daemon("[websocket]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let (ws, admin) = (d.ws_addr(false), d.admin_addr());
    let mut wrong = WsClient::connect(ws);
    wrong.send("dora guess");
    let (frame, lines) = wrong.close_frame();
    assert!(lines.iter().any(|l| l.starts_with("error: ")), "{lines:?}");
    assert!(frame.is_some(), "the refusal ends with a close frame");
    let mut dora = WsClient::connect(ws);
    dora.send("dora correct horse");
    dora.send("dora: in");
    dora.expect("from dora: in");
    let kick = "POST /logins/dora/close?reason=maintenance HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let kicked = common::http_raw(admin, kick.as_bytes()).expect("an answer");
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    let (frame, lines) = dora.close_frame();
    assert_eq!(
        lines,
        vec!["notice: disconnected by the operator: maintenance".to_owned()]
    );
    assert!(frame.is_some(), "the kick ends with a close frame");
}

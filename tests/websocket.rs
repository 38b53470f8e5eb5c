//! The WebSocket listener (ARCHITECTURE §14) against the real binary: the page, the origin
//! check, chat between WebSocket and TCP clients, bad frames refused with a close frame
//! that says why, wss with the TLS listener's certificate, and the drain.

mod common;

use std::time::Duration;

use common::ws::{connect_tls, raw_exchange, try_connect, WsClient};
use common::{http_get, sample, scrape, Client, Daemon, Pki};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// A daemon with a WebSocket listener (`extra` continues its `[websocket]` section) and
/// an admin endpoint, and the WebSocket address.
fn daemon(extra: &str) -> (Daemon, std::net::SocketAddr) {
    let mut d = Daemon::with_toml(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[websocket]\nlisten = \"127.0.0.1:0\"\n{extra}"
    ));
    let ws = d.ws_addr(false);
    (d, ws)
}

#[test]
fn the_page_is_served_with_a_policy_that_keeps_it_to_itself() {
    let (_d, ws) = daemon("");
    let page = http_get(ws, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"messages\""), "{}", page.text());
    assert!(page.text().contains("data-auth=\"off\""));
    let policy = page
        .header("content-security-policy")
        .expect("a CSP header");
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let js = http_get(ws, "/chat.js");
    assert_eq!(js.status, 200);
    assert!(
        js.text().contains("textContent"),
        "the page inserts text as text"
    );
    assert!(
        !js.text().contains("innerHTML"),
        "the page never inserts HTML"
    );
    assert_eq!(http_get(ws, "/chat.css").status, 200);
    assert_eq!(http_get(ws, "/etc/passwd").status, 404);
    let post = raw_exchange(
        ws,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let garbage = raw_exchange(ws, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
}

#[test]
fn a_websocket_client_and_a_tcp_client_chat() {
    let (mut d, ws) = daemon("");
    let mut alice = WsClient::login(ws, "alice");
    let mut bob = d.login("bob");
    alice.send("bob: hi from a browser");
    bob.expect("from alice: hi from a browser");
    bob.send("alice, bob: <img src=x onerror=alert(1)>");
    alice.expect("from bob: <img src=x onerror=alert(1)>");
    bob.expect("from bob: <img src=x onerror=alert(1)>");
    // The protocol's rules hold as on TCP: one error line, the session stays.
    alice.send("no colon here");
    let error = alice.line().unwrap();
    assert!(error.starts_with("error: "), "{error}");
    alice.send("bob: still here");
    bob.expect("from alice: still here");
    // Several lines sent at once arrive in order, each its own frame.
    for i in 0..50 {
        alice.send(&format!("bob: {i}"));
    }
    for i in 0..50 {
        bob.expect(&format!("from alice: {i}"));
    }
    let admin = d.admin_addr();
    let rows = http_get(admin, "/connections?sort=since").text();
    assert!(rows.contains("\"login\":\"alice\",\"peer\""), "{rows}");
    assert!(rows.contains("\"transport\":\"ws\""), "{rows}");
    assert!(rows.contains("\"transport\":\"tcp\""), "{rows}");
    let samples = scrape(admin);
    let of = |t: &str| {
        sample(
            &samples,
            &format!("achat_transport_connections_total{{transport=\"{t}\"}}"),
        )
    };
    assert_eq!(of("ws"), 1.0);
    assert!(of("tcp") >= 1.0);
    assert_eq!(
        sample(
            &samples,
            "achat_websocket_requests_total{answer=\"upgraded\"}"
        ),
        1.0
    );
}

#[test]
fn pages_from_other_origins_are_refused_at_the_handshake() {
    let (_d, ws) = daemon("allowed_origins = [\"https://chat.example.org\"]\n");
    let refused = try_connect(ws, Some("https://evil.example"))
        .err()
        .expect("refused");
    match refused {
        tungstenite::Error::Http(answer) => assert_eq!(answer.status(), 403),
        other => panic!("expected a 403, got {other}"),
    }
    // The listener's own page (same origin), a listed one, and a client that is not a
    // browser (no Origin) may.
    for origin in [
        Some(format!("http://{ws}")),
        Some("https://chat.example.org".into()),
        None,
    ] {
        let mut client = try_connect(ws, origin.as_deref()).expect("a session");
        client.send("carol");
        client.send("carol: in");
        client.expect("from carol: in");
    }
}

#[test]
fn frames_a_line_cannot_be_are_closed_with_a_reason_and_counted() {
    let (mut d, ws) = daemon("[limits]\nmax_line_bytes = 64\n");
    let mut bob = d.login("bob");
    let admin = d.admin_addr();
    let cases: [(Message, CloseCode, &str, &str); 3] = [
        (
            Message::binary(vec![1, 2, 3]),
            CloseCode::Unsupported,
            "binary",
            "bad_frame",
        ),
        (
            Message::text("bob: ".to_owned() + &"x".repeat(100)),
            CloseCode::Size,
            "too_big",
            "line_too_long",
        ),
        (
            Message::text("bob: one\nbob: two"),
            CloseCode::Invalid,
            "newline",
            "bad_frame",
        ),
    ];
    // A message cut into frames that together pass max_line_bytes is refused as one.
    let fragmented = |i: usize| {
        let (kind, last) = match i {
            0 => (Data::Text, false),
            1 => (Data::Continue, false),
            _ => (Data::Continue, true),
        };
        Message::Frame(Frame::message(vec![b'y'; 40], OpCode::Data(kind), last))
    };
    let mut cut = WsClient::login(ws, "cutter");
    for i in 0..3 {
        if cut.send_message(fragmented(i)).is_err() {
            break;
        }
    }
    let (frame, _) = cut.close_frame();
    assert_eq!(
        frame.map(|(code, _)| code),
        Some(CloseCode::Size),
        "fragments"
    );
    for (i, (message, code, metric, close_reason)) in cases.into_iter().enumerate() {
        let name = format!("mallory{i}");
        let mut mallory = WsClient::login(ws, &name);
        mallory.send_message(message).unwrap();
        let (frame, _) = mallory.close_frame();
        let (got, reason) = frame.expect("a close frame");
        assert_eq!(got, code, "{metric}: {reason}");
        assert!(!reason.is_empty(), "{metric}: the close frame says why");
        let line = d
            .wait_log(|l| l.contains("connection closed") && l.contains(&name))
            .unwrap_or_else(|| panic!("no close line for {metric}:\n{}", d.log_text()));
        assert!(
            line.contains(&format!("reason=\"{close_reason}\"")),
            "{line}"
        );
        let samples = scrape(admin);
        let refused = sample(
            &samples,
            &format!("achat_websocket_refused_total{{reason=\"{metric}\"}}"),
        );
        // The fragments above were one more message too big.
        let before = if metric == "too_big" { 1.0 } else { 0.0 };
        assert_eq!(refused, before + 1.0, "{metric}");
        // Nothing of it reached anyone; the others chat on.
        bob.send("bob: after");
        bob.expect("from bob: after");
    }
}

#[test]
fn a_client_that_leaves_without_a_close_frame_is_an_ordinary_close() {
    let (mut d, ws) = daemon("");
    let alice = WsClient::login(ws, "alice");
    alice
        .ws
        .get_ref()
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    drop(alice);
    let line = d
        .wait_log(|l| l.contains("connection closed") && l.contains("alice"))
        .unwrap_or_else(|| panic!("no close line:\n{}", d.log_text()));
    assert!(line.contains("reason=\"client_closed\""), "{line}");
    let samples = scrape(d.admin_addr());
    let refused = sample(
        &samples,
        "achat_websocket_refused_total{reason=\"protocol\"}",
    );
    assert_eq!(refused, 0.0, "leaving is not bad input");
}

#[test]
fn a_websocket_client_that_does_not_read_is_cut_off_and_nobody_waits() {
    let (mut d, ws) = daemon(
        "[limits]\noutbound_queue_bytes = 65536\noutbound_queue_hard_bytes = 262144\n\
         slow_consumer_grace = \"200ms\"\n",
    );
    let _sloth = WsClient::login(ws, "sloth");
    let mut bob = d.login("bob");
    let line = format!("sloth: {}", "z".repeat(1000));
    // Far more than the socket buffers and the queue bounds hold together.
    for _ in 0..30_000 {
        bob.send(&line);
    }
    bob.send("bob: still served");
    // Once sloth is cut off, the rest of bob's lines find nobody, and he is told so.
    loop {
        match bob.line().as_deref() {
            Some("from bob: still served") => break,
            Some("error: no such user \"sloth\"") => continue,
            other => panic!("bob got {other:?}"),
        }
    }
    let closed = d
        .wait_log(|l| l.contains("connection closed") && l.contains("sloth"))
        .unwrap_or_else(|| panic!("sloth was never cut off:\n{}", d.log_text()));
    assert!(closed.contains("reason=\"slow_consumer"), "{closed}");
}

#[test]
fn bad_lines_too_fast_close_a_websocket_session_as_they_close_a_tcp_one() {
    let (mut d, ws) = daemon("");
    let mut mallory = WsClient::login(ws, "mallory");
    for _ in 0..100 {
        if mallory.send_message(Message::text("no colon")).is_err() {
            break;
        }
    }
    let (frame, lines) = mallory.close_frame();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("error: too many bad lines")
    );
    assert!(frame.is_some(), "the session ends with a close frame");
    let line = d
        .wait_log(|l| l.contains("connection closed") && l.contains("mallory"))
        .unwrap_or_else(|| panic!("no close line:\n{}", d.log_text()));
    assert!(line.contains("reason=\"too_many_bad_lines\""), "{line}");
}

#[test]
fn pings_are_answered_and_cost_nothing_else() {
    let (_d, ws) = daemon("");
    let mut alice = WsClient::login(ws, "alice");
    for _ in 0..1000 {
        alice
            .send_message(Message::Ping(vec![7; 16].into()))
            .unwrap();
    }
    alice.send("alice: after the pings");
    let mut pongs = 0;
    loop {
        match alice.ws.read().expect("read") {
            Message::Pong(_) => pongs += 1,
            Message::Text(t) => {
                assert_eq!(t.as_str(), "from alice: after the pings");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pongs >= 1, "pings are answered");
}

#[test]
fn wss_uses_the_tls_certificate_and_the_drain_says_goodbye() {
    let pki = Pki::new();
    let tls = pki
        .toml(false)
        .replace("[tls]\nlisten = \"127.0.0.1:0\"\n", "[tls]\n");
    let mut d = Daemon::with_toml(&format!(
        "[websocket]\ntls_listen = \"127.0.0.1:0\"\n[shutdown]\ndrain_timeout = \"5s\"\n{tls}"
    ));
    let wss = d.ws_addr(true);
    let mut alice = connect_tls(wss, &pki);
    alice.send("alice");
    alice.send("alice: over wss");
    alice.expect("from alice: over wss");
    let mut bob = Client::connect(d.addr);
    bob.send("bob");
    bob.send("alice: from tcp");
    alice.expect(
        "from alice: over wss"
            .replace("alice: over wss", "bob: from tcp")
            .as_str(),
    );
    d.signal(libc::SIGTERM);
    let (frame, lines) = alice.close_frame();
    assert_eq!(lines, vec!["notice: server shutting down".to_owned()]);
    assert!(frame.is_some(), "the session ends with a close frame");
    assert!(d
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

#[test]
fn a_request_that_never_ends_is_closed_at_the_login_timeout() {
    let (mut d, ws) = daemon("[limits]\nlogin_timeout = \"300ms\"\n");
    let started = std::time::Instant::now();
    let answer = raw_exchange(ws, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(answer, "", "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(5));
    let samples = scrape(d.admin_addr());
    assert_eq!(
        sample(
            &samples,
            "achat_websocket_requests_total{answer=\"timeout\"}"
        ),
        1.0
    );
}

#[test]
fn the_drain_does_not_wait_for_a_request_that_never_ends() {
    let (mut d, ws) =
        daemon("[limits]\nlogin_timeout = \"30s\"\n[shutdown]\ndrain_timeout = \"25s\"\n");
    let mut slow = std::net::TcpStream::connect(ws).unwrap();
    std::io::Write::write_all(&mut slow, b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    // The connection is open (the admin endpoint counts it) before the drain begins; a
    // drain held by the request would take login_timeout (30 s).
    d.drains_past_an_opening();
}

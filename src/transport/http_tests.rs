use super::*;

fn upgrade_request(origin: Option<&str>, version: &str) -> Vec<u8> {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET / HTTP/1.1\r\nHost: chat.example.org:8081\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n{origin}\r\n"
    )
    .into_bytes()
}

fn status(answer: &Answer) -> u16 {
    let bytes = match answer {
        Answer::Upgrade(bytes) | Answer::Respond(bytes, _) => bytes,
    };
    std::str::from_utf8(&bytes[9..12]).unwrap().parse().unwrap()
}

#[test]
fn an_upgrade_answers_with_the_key_of_rfc_6455s_example() {
    let front = Front::new(&[], false);
    let answer = answer(&upgrade_request(None, "13"), &front, false);
    let Answer::Upgrade(bytes) = answer else {
        panic!("not an upgrade: {answer:?}")
    };
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(
        text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{text}"
    );
}

#[test]
fn only_the_listeners_own_origin_and_listed_ones_may_open_a_session() {
    let own = Front::new(&[], false);
    let listed = Front::new(&["https://Other.example/".into()], false);
    let any = Front::new(&["*".into()], false);
    let cases = [
        (&own, Some("http://chat.example.org:8081"), false, 101),
        (&own, Some("https://chat.example.org:8081"), true, 101),
        // Same host, other scheme: another origin.
        (&own, Some("https://chat.example.org:8081"), false, 403),
        (&own, Some("http://chat.example.org"), false, 403),
        (&own, Some("http://evil.example"), false, 403),
        (&own, Some("null"), false, 403),
        (&own, None, false, 101),
        (&listed, Some("https://other.example"), false, 101),
        (&listed, Some("https://other.example.evil"), false, 403),
        (&any, Some("http://anything.example"), false, 101),
    ];
    for (front, origin, tls, want) in cases {
        let got = status(&answer(&upgrade_request(origin, "13"), front, tls));
        assert_eq!(got, want, "{origin:?} tls={tls}");
    }
}

#[test]
fn requests_a_listener_cannot_serve_are_refused_with_the_right_status() {
    let front = Front::new(&[], true);
    let page = answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &front, false);
    assert_eq!(status(&page), 200);
    let Answer::Respond(bytes, WsAnswer::Page) = page else {
        panic!("not the page")
    };
    assert!(String::from_utf8_lossy(&bytes).contains("data-auth=\"on\""));
    let cases: [(&[u8], u16); 5] = [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"\x16\x03\x01\x02\x00\r\n\r\n", 400),
        (b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 404),
        (
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
    ];
    for (head, want) in cases {
        assert_eq!(
            status(&answer(head, &front, false)),
            want,
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
    let old = answer(&upgrade_request(None, "8"), &front, false);
    assert_eq!(status(&old), 426);
    let Answer::Respond(bytes, _) = old else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(&bytes).contains("Sec-WebSocket-Version: 13\r\n"));
    let many: String = (0..60).map(|i| format!("X-{i}: y\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(status(&answer(head.as_bytes(), &front, false)), 431);
}

#[test]
fn allowed_origins_entries_are_checked() {
    for good in ["*", "https://chat.example.org", "http://127.0.0.1:8081"] {
        assert_eq!(check_origin_setting(good), Ok(()), "{good}");
    }
    for bad in [
        "chat.example.org",
        "https://",
        "https://x/path",
        "ftp://x",
        "https://a b",
    ] {
        assert!(check_origin_setting(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_head_ends_at_its_blank_line() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
}

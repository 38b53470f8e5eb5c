//! `[server] proxy_protocol_from` against the real binary: connections from a listed
//! balancer begin with a PROXY header (v1 or v2, whole or in pieces, before plain text or
//! TLS), and the client address it carries is the one the per-address limits, the log and
//! `GET /connections` see; a balancer's connection without a valid header is refused with
//! a clear error; other clients are never asked for one; and a flood of every kind of
//! header does not disturb a pair.
mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::http::http_get;
use common::{sample, scrape, Client, Daemon};

/// A daemon that takes PROXY headers from 127.0.0.1 (every test client's address unless
/// it binds another), with its admin endpoint, and `extra` keys after `[server]`.
fn daemon(extra: &str) -> Daemon {
    Daemon::with_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nproxy_protocol_from = [\"127.0.0.1\"]\n{extra}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    ))
}

fn v1(client: &str) -> Vec<u8> {
    let (ip, port) = client.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 8080\r\n").into_bytes()
}

/// A v2 PROXY header for an IPv4 client, with a unique-id TLV as HAProxy can add.
fn v2(client: &str) -> Vec<u8> {
    let SocketAddr::V4(client) = client.parse().unwrap() else {
        panic!("IPv4 only")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let tlv = [0x05, 0, 4, b'u', b'i', b'd', b'1'];
    h.extend_from_slice(&(12 + tlv.len() as u16).to_be_bytes());
    h.extend_from_slice(&client.ip().octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

/// A v2 LOCAL header: the balancer speaking for itself.
const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Sends `header` and the login in one write (as a balancer relays a client that speaks
/// first), and checks the login by a message to self.
fn login_via(d: &Daemon, header: &[u8], name: &str) -> Client {
    let mut c = d.connect();
    c.send_raw(&[header, format!("{name}\n").as_bytes()].concat())
        .unwrap();
    c.send(&format!("{name}: ready?"));
    c.expect(&format!("from {name}: ready?"));
    c
}

/// The `peer` of every connection `GET /connections` lists, by login.
fn peers(admin: SocketAddr) -> BTreeMap<String, String> {
    let body = http_get(admin, "/connections").text();
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    list["connections"]
        .as_array()
        .expect("a list of connections")
        .iter()
        .map(|c| {
            (
                c["login"].as_str().unwrap_or("").to_owned(),
                c["peer"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn clients_are_known_by_the_address_their_balancer_gives() {
    let mut d = daemon("max_connections_per_ip = 2");
    let admin = d.admin_addr();
    let mut alice = login_via(&d, &v1("192.0.2.7:5001"), "alice");
    let mut bob = login_via(&d, &v2("192.0.2.7:5002"), "bob");
    // The header in pieces, a byte at a time, then the login: nothing of either is lost.
    let mut carol = d.connect();
    for byte in v2("198.51.100.9:6000") {
        carol.send_raw(&[byte]).unwrap();
    }
    carol.send("carol");
    // A LOCAL header (a balancer's own check) keeps the socket's address.
    let mut dave = login_via(&d, V2_LOCAL, "dave");
    carol.send("alice, bob, dave: hi");
    for c in [&mut alice, &mut bob, &mut dave] {
        c.expect("from carol: hi");
    }
    let seen = peers(admin);
    assert_eq!(seen["alice"], "192.0.2.7:5001");
    assert_eq!(seen["bob"], "192.0.2.7:5002");
    assert_eq!(seen["carol"], "198.51.100.9:6000");
    assert!(seen["dave"].starts_with("127.0.0.1:"), "{seen:?}");

    // max_connections_per_ip = 2 counts clients, not the balancer: 192.0.2.7 is full,
    // 198.51.100.9 and 127.0.0.1 (dave) are not.
    let mut third = d.connect();
    third.send_raw(&v1("192.0.2.7:5003")).unwrap();
    third.expect("error: too many connections from your address");
    third.expect_closed();
    login_via(&d, &v1("198.51.100.9:6001"), "erin");

    // The log names the client; the line that refused the third names the balancer too.
    drop(alice);
    let closed = d
        .wait_log(|l| l.contains("connection closed") && l.contains("login=\"alice\""))
        .expect("alice's close line");
    assert!(closed.contains("peer=192.0.2.7:5001"), "{closed}");
    let refused = d.log_text();
    assert!(
        refused
            .lines()
            .any(|l| l.contains("too many connections from this address")
                && l.contains("peer=192.0.2.7:5003")
                && l.contains("via=127.0.0.1:")),
        "{refused}"
    );
}

#[test]
fn a_balancer_connection_without_a_valid_header_is_refused_and_counted() {
    let mut d = daemon("");
    let admin = d.admin_addr();
    let cases: [(&[u8], &str); 4] = [
        (b"alice\n", "missing"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 5000\r\nalice\n", "malformed"),
        (b"PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n", "too_long"),
        (b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff", "too_long"),
    ];
    for (input, _) in &cases {
        let mut c = d.connect();
        c.send_raw(input).unwrap();
        c.expect("error: bad PROXY protocol header");
        c.expect_closed();
    }
    let samples = scrape(admin);
    let refused = |reason: &str| {
        sample(
            &samples,
            &format!("achat_proxy_headers_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("missing"), 1.0);
    assert_eq!(refused("malformed"), 1.0);
    assert_eq!(refused("too_long"), 2.0);
    // One warning that says what to check; the rest at debug, so a balancer without
    // send-proxy cannot flood the log.
    d.wait_log(|l| l.contains("WARN") && l.contains("PROXY"))
        .expect("a warning about the refused headers");
    let warnings = d
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("PROXY"))
        .count();
    assert_eq!(warnings, 1, "{}", d.log_text());
    assert!(d.log_text().contains("send-proxy-v2"));
    // The daemon serves the next balanced client as if nothing happened.
    login_via(&d, &v1("192.0.2.7:5000"), "alice");
}

#[test]
fn a_header_that_never_ends_is_cut_at_login_timeout() {
    let mut d = daemon("[limits]\nlogin_timeout = \"1s\"");
    let admin = d.admin_addr();
    let mut c = d.connect();
    c.send_raw(b"PROXY TCP4 192.0.2.7 ").unwrap();
    let started = Instant::now();
    c.expect("error: bad PROXY protocol header");
    c.expect_closed();
    let took = started.elapsed();
    // Generous: the defect it guards against (no deadline) never closes at all.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let samples = scrape(admin);
    assert_eq!(
        sample(
            &samples,
            "achat_proxy_headers_refused_total{reason=\"timeout\"}"
        ),
        1.0
    );
}

#[test]
fn a_drain_does_not_wait_for_a_header() {
    let mut d = daemon("[limits]\nlogin_timeout = \"30s\"");
    let mut alice = login_via(&d, &v1("192.0.2.7:5000"), "alice");
    let mut silent = d.connect();
    silent.send_raw(b"PROXY TCP4 ").unwrap();
    let started = Instant::now();
    d.signal(libc::SIGTERM);
    alice.expect("notice: server shutting down");
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon exits");
    assert!(status.success(), "{status}");
    // Generous: waiting for the header would take login_timeout, 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    silent.expect_closed();
}

#[test]
fn clients_not_from_a_listed_balancer_are_never_asked_for_a_header() {
    // The balancer is 127.0.0.2; clients from 127.0.0.1 speak the line protocol directly.
    let d = Daemon::with_toml("[server]\nproxy_protocol_from = [\"127.0.0.2/32\"]\n");
    let mut alice = d.login("alice");
    let mut direct = d.connect();
    direct.send_raw(&v1("192.0.2.7:5000")).unwrap();
    let answer = direct.line().unwrap_or_default();
    assert!(
        answer.starts_with("error: ") && !answer.contains("PROXY"),
        "{answer}"
    );
    let sock = common::connect_from(Ipv4Addr::new(127, 0, 0, 2), d.addr).expect("bind 127.0.0.2");
    let mut bob = Client::from_stream(sock);
    bob.send_raw(&v1("192.0.2.8:5000")).unwrap();
    bob.send("bob");
    bob.send("alice: via the balancer");
    alice.expect("from bob: via the balancer");
}

#[test]
fn failed_logins_are_counted_per_client_behind_the_balancer() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let (status, line, err) = common::run_cli_input(&["passwd", "alice"], b"secret\n");
    assert!(status.success(), "{err}");
    std::fs::write(&users, format!("[users]\n{line}")).unwrap();
    let d = daemon(&format!(
        "[auth]\nusers_file = \"{}\"\nmax_failures_per_ip = 3",
        users.display()
    ));
    // 192.0.2.66 guesses until it is refused without a check...
    let mut refused = false;
    for i in 0..6 {
        let mut c = d.connect();
        c.send_raw(&v1(&format!("192.0.2.66:{}", 7000 + i)))
            .unwrap();
        c.send("alice guess");
        let answer = c.line().unwrap_or_default();
        refused |= answer == "error: too many failed logins";
        if refused {
            break;
        }
        assert_eq!(answer, "error: authentication failed");
    }
    assert!(refused, "192.0.2.66 was never refused");
    // ...while another client of the same balancer logs in at once.
    let mut c = d.connect();
    c.send_raw(&v2("192.0.2.77:7000")).unwrap();
    c.send("alice secret");
    c.send("alice: in");
    c.expect("from alice: in");
}

#[test]
fn a_header_comes_before_the_tls_handshake() {
    let pki = common::Pki::new();
    let mut d = Daemon::with_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nproxy_protocol_from = [\"127.0.0.1\"]\n{}\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        pki.toml(false)
    ));
    let tls = d.tls_addr();
    let admin = d.admin_addr();
    let mut alice =
        common::tlsclient::TlsClient::connect_after(tls, &pki, None, &v2("203.0.113.5:4433"))
            .expect("handshake after the header");
    alice.send("alice");
    alice.send("alice: over TLS");
    alice.expect("from alice: over TLS");
    assert_eq!(peers(admin)["alice"], "203.0.113.5:4433");
}

/// What one flooding balancer connection sends, over and over, without reading.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A good header, a login, then messages to itself, never read.
    GoodThenChat,
    /// Chat lines where a header should be.
    NoHeader,
    /// Half a v1 header, topped up slowly: cut at login_timeout.
    PartialHeader,
    /// A v2 header that claims 1 KiB of TLVs, then garbage that fills them, then garbage.
    LongV2,
    /// v1 headers with garbage instead of addresses.
    MalformedV1,
}

const KINDS: [Kind; 5] = [
    Kind::GoodThenChat,
    Kind::NoHeader,
    Kind::PartialHeader,
    Kind::LongV2,
    Kind::MalformedV1,
];

fn flood_payload(kind: Kind, id: usize, round: usize) -> (Vec<u8>, Vec<u8>) {
    let name = format!("f{id}r{round}");
    let fill = |unit: &[u8]| unit.repeat(64 * 1024 / unit.len());
    match kind {
        Kind::GoodThenChat => (
            [
                v1(&format!(
                    "192.0.2.{}:{}",
                    id % 250 + 1,
                    1000 + round % 60000
                )),
                format!("{name}\n").into_bytes(),
            ]
            .concat(),
            fill(format!("{name}: {}\n", "x".repeat(100)).as_bytes()),
        ),
        Kind::NoHeader => (Vec::new(), fill(b"bob: hello\n")),
        Kind::PartialHeader => (b"PROXY TCP4 ".to_vec(), b"1".to_vec()),
        Kind::LongV2 => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x04\x00".to_vec();
            h.extend_from_slice(&[0xee; 1024]);
            (h, fill(b"\xee"))
        }
        Kind::MalformedV1 => (Vec::new(), fill(b"PROXY TCP4 x y z w\r\n")),
    }
}

#[test]
fn a_flood_of_every_kind_of_header_does_not_disturb_a_pair() {
    const FLOODERS: usize = 50;
    const ROUND_TRIPS: usize = 300;
    const FLOOD_FOR: Duration = Duration::from_secs(6);
    let mut d = daemon(
        "[limits]\noutbound_queue_bytes = 262144\noutbound_queue_hard_bytes = 1048576\n\
         outbound_total_bytes = 8388608\nslow_consumer_grace = \"1s\"\nlogin_timeout = \"2s\"",
    );
    let admin = d.admin_addr();
    let mut alice = login_via(&d, &v2("192.0.2.1:1"), "alice");
    let mut bob = login_via(&d, &v1("192.0.2.2:2"), "bob");
    let chat = d.addr;
    let run = common::flood::chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        (ROUND_TRIPS, FLOOD_FOR),
        FLOODERS,
        move |i, stop| {
            let kind = KINDS[i % KINDS.len()];
            let trickle = matches!(kind, Kind::PartialHeader).then_some(Duration::from_millis(50));
            common::flood_until(chat, stop, trickle, |round| flood_payload(kind, i, round))
        },
    );
    let (base, max, flooded) = (run.bases[0], run.maxes[0], run.flooded);
    let common::RoundTrips {
        done,
        worst,
        took: chatted,
    } = run.trips;
    let samples = scrape(admin);
    let refused: f64 = ["missing", "too_long", "malformed", "timeout"]
        .iter()
        .map(|r| {
            sample(
                &samples,
                &format!("achat_proxy_headers_refused_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    eprintln!(
        "{FLOODERS} balancer connections sent {:.0} MiB in {chatted:?} ({refused} headers refused, \
         {} connections); the pair's {done} round trips: worst {worst:?}; RSS base {base} KiB, \
         max {max} KiB (+{} KiB)",
        flooded as f64 / (1 << 20) as f64,
        sample(&samples, "achat_connections_accepted_total"),
        max.saturating_sub(base)
    );
    eprintln!(
        "the daemon read {:.0} MiB of it, using {:?} of CPU",
        sample(&samples, "achat_received_bytes_total") / (1 << 20) as f64,
        d.cpu_time()
    );
    assert!(refused > 0.0, "no header was refused");
    let warnings = d
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("PROXY"))
        .count();
    assert_eq!(warnings, 1, "one warning a minute about refused headers");
    // The queue budget (8 MiB) and allocator slack, as in tests/floods.rs.
    let bound = base + 8 * 1024 + 16 * 1024;
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");
    assert!(done >= 10, "only {done} round trips in {chatted:?}");
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    let mut carol = login_via(&d, &v1("192.0.2.3:3"), "carol");
    carol.send("alice: after the flood");
    alice.expect("from carol: after the flood");
}

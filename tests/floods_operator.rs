//! The operator's doors under a flood (as tests/floods.rs does for the chat's input):
//! admin requests without a token or with a wrong one, pipelined at full speed; kicks with
//! a good token at full speed against clients that log in again at once; and valid
//! messages past the per-client rate, all while a pair chats. The daemon's memory stays
//! bounded, the pair gets every line, and its worst round trip is reported.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::Daemon;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// Clients the kickers close, by name, again and again.
const VICTIMS: usize = 8;

/// What one flooding connection sends, over and over, without reading.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `POST /connections/1/close` without a token, pipelined.
    NoToken,
    /// `GET /connections` with a token the file does not hold, pipelined.
    WrongToken,
    /// `POST /logins/vN/close` with a good token, pipelined.
    Kicker,
    /// Logs in as `vN` and sends valid lines to itself: kicked, back, kicked...
    Victim,
    /// Valid lines to itself at full speed: past its rate, slowed.
    PastTheRate,
}

const KINDS: [Kind; 5] = [
    Kind::NoToken,
    Kind::WrongToken,
    Kind::Kicker,
    Kind::Victim,
    Kind::PastTheRate,
];

fn repeat(unit: &str) -> Vec<u8> {
    unit.as_bytes().repeat(64 * 1024 / unit.len())
}

/// The login part and the body of one flooding connection.
fn payload(kind: Kind, id: usize, round: usize) -> (Vec<u8>, Vec<u8>) {
    let victim = format!("v{}", id % VICTIMS);
    match kind {
        Kind::NoToken => (
            Vec::new(),
            repeat("POST /connections/1/close HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
        ),
        Kind::WrongToken => (
            Vec::new(),
            repeat("GET /connections HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer wrong-wrong-wrong-wrong\r\n\r\n"),
        ),
        Kind::Kicker => (
            Vec::new(),
            repeat(&format!(
                "POST /logins/{victim}/close?reason=flood HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
            )),
        ),
        Kind::Victim => (format!("{victim}\n").into_bytes(), repeat(&format!("{victim}: hi\n"))),
        Kind::PastTheRate => {
            let name = format!("r{id}x{round}");
            (format!("{name}\n").into_bytes(), repeat(&format!("{name}: fast\n")))
        }
    }
}

fn flooder(kind: Kind, chat: SocketAddr, admin: SocketAddr, id: usize, stop: &AtomicBool) -> u64 {
    let addr = match kind {
        Kind::NoToken | Kind::WrongToken | Kind::Kicker => admin,
        Kind::Victim | Kind::PastTheRate => chat,
    };
    common::flood_until(addr, stop, None, |round| payload(kind, id, round))
}

#[test]
fn unauthorized_requests_kicks_and_fast_senders_at_full_speed_do_not_disturb_a_pair() {
    const FLOODERS: usize = 60;
    const ROUND_TRIPS: usize = 300;
    const FLOOD_FOR: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, format!("[tokens]\nops = \"{TOKEN}\"\n")).unwrap();
    let mut d = Daemon::with_toml(&format!(
        "[limits]\noutbound_queue_bytes = 262144\noutbound_queue_hard_bytes = 1048576\n\
         outbound_total_bytes = 8388608\nslow_consumer_grace = \"1s\"\nlogin_timeout = \"2s\"\n\
         messages_per_second = 100\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"{}\"\n",
        tokens.display()
    ));
    let admin = d.admin_addr();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let chat = d.addr;
    let run = common::flood::chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        (ROUND_TRIPS, FLOOD_FOR),
        FLOODERS,
        move |i, stop| flooder(KINDS[i % KINDS.len()], chat, admin, i, stop),
    );
    let (base, max) = (run.bases[0], run.maxes[0]);
    let common::RoundTrips { done, worst, took } = run.trips;
    let metrics = common::http_raw(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("metrics with the token")
    .text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    let unauthorized = value("achat_admin_unauthorized_total");
    let kicked = value("achat_kicks_total");
    let slowed = value("achat_rate_limited_total");
    eprintln!(
        "{FLOODERS} flooders for {took:?}: {unauthorized} requests refused without a good token, \
         {kicked} clients kicked, {slowed} pauses of fast senders; the pair's {done} round \
         trips: worst {worst:?}; RSS base {base} KiB, max {max} KiB (+{} KiB); CPU {:?}",
        max.saturating_sub(base),
        d.cpu_time()
    );
    assert!(unauthorized > 100.0, "{unauthorized}");
    // Victims were kicked while the kickers flooded (a kicked flooder does not come back:
    // it never reads, so it never learns it was closed; its name's other flooders take the
    // name and are kicked in turn, as far as the flood lasts).
    assert!(kicked >= 1.0, "{kicked}");
    assert!(slowed > 0.0, "{slowed}");
    // The queue budget (8 MiB), the admin endpoint's 32 connections, and allocator
    // slack: a bound a leak per request or per kick would pass many times over.
    let bound = base + 8 * 1024 + 16 * 1024;
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");
    assert!(done >= 10, "only {done} round trips in {took:?}");
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    // The audit log holds one line per kick, at info: bounded by the kicks themselves,
    // not by the requests (most found nobody to kick).
    let log = d.log_text();
    let audited = log.matches("connection kicked by the operator").count();
    assert_eq!(audited as f64, kicked, "{log}");
    let mut carol = d.login("carol");
    carol.send("alice: hello after the flood");
    alice.expect("from carol: hello after the flood");
}

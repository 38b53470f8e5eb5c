//! Hostile input at full speed (ARCHITECTURE §1 and §4b): 100 connections flood the daemon with
//! every kind of input it handles, on every port, while a pair chats. The daemon's memory
//! stays bounded, the pair gets every line, and its worst round trip is reported.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::Daemon;

/// What one flooding connection sends, over and over, without reading.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Empty lines after a login: each one is a bad line.
    EmptyLines,
    /// Lines without a colon.
    NoColon,
    /// Messages to a login nobody has.
    UnknownRecipient,
    /// More recipients than `max_recipients`.
    TooManyRecipients,
    /// Valid messages to itself, never read: a slow consumer.
    GoodToSelf,
    /// Half a line, never finished, topped up slowly.
    Partial,
    /// A line longer than `max_line_bytes`.
    TooLong,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// Garbage before any login.
    NoLogin,
    /// Garbage at the admin endpoint.
    AdminGarbage,
}

const KINDS: [Kind; 10] = [
    Kind::EmptyLines,
    Kind::NoColon,
    Kind::UnknownRecipient,
    Kind::TooManyRecipients,
    Kind::GoodToSelf,
    Kind::Partial,
    Kind::TooLong,
    Kind::InvalidUtf8,
    Kind::NoLogin,
    Kind::AdminGarbage,
];

/// 64 KiB of one kind of input, after the login line `name` where the kind logs in.
fn payload(kind: Kind, name: &str) -> (Vec<u8>, Vec<u8>) {
    const SIZE: usize = 64 * 1024;
    let login = format!("{name}\n").into_bytes();
    let fill = |unit: &[u8]| unit.repeat(SIZE / unit.len());
    match kind {
        Kind::EmptyLines => (login, fill(b"\n")),
        Kind::NoColon => (login, fill(b"hello there\n")),
        Kind::UnknownRecipient => (login, fill(b"z:\n")),
        Kind::TooManyRecipients => {
            let names: Vec<String> = (0..70).map(|i| format!("n{i}")).collect();
            (login, fill(format!("{}: hi\n", names.join(",")).as_bytes()))
        }
        Kind::GoodToSelf => (
            login,
            fill(format!("{name}: {}\n", "x".repeat(100)).as_bytes()),
        ),
        Kind::Partial => (login, vec![b'p'; 4000]),
        Kind::TooLong => (login, vec![b'l'; SIZE]),
        Kind::InvalidUtf8 => (login, fill(b"me: \xff\xfe\xfd\n")),
        Kind::NoLogin => (Vec::new(), fill(b"\x00\x01garbage")),
        Kind::AdminGarbage => (Vec::new(), fill(b"GARBAGE / HTTP/9.9\r\nX: y\r\n")),
    }
}

/// Floods as `kind` until `stop` (see `common::flood_until`); returns the bytes sent.
fn flooder(kind: Kind, chat: SocketAddr, admin: SocketAddr, id: usize, stop: &AtomicBool) -> u64 {
    let addr = match kind {
        Kind::AdminGarbage => admin,
        _ => chat,
    };
    // A trickle: the partial line grows towards the limit, slowly.
    let trickle = matches!(kind, Kind::Partial).then_some(Duration::from_millis(50));
    common::flood_until(addr, stop, trickle, |round| {
        payload(kind, &format!("f{id}r{round}"))
    })
}

#[test]
fn a_hundred_hostile_connections_of_every_kind_do_not_disturb_a_pair() {
    const FLOODERS: usize = 100;
    const ROUND_TRIPS: usize = 300;
    const FLOOD_FOR: Duration = Duration::from_secs(8);
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 262144\noutbound_queue_hard_bytes = 1048576\n\
         outbound_total_bytes = 8388608\nslow_consumer_grace = \"1s\"\nlogin_timeout = \"2s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let admin = d.admin_addr();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let chat = d.addr;
    // The pair chats all through the flood; every line must arrive, in order. Bounded in
    // count and in time, whichever comes first (a debug build is slow).
    let run = common::flood::chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        (ROUND_TRIPS, FLOOD_FOR),
        FLOODERS,
        move |i, stop| flooder(KINDS[i % KINDS.len()], chat, admin, i, stop),
    );
    let (base, max, flooded) = (run.bases[0], run.maxes[0], run.flooded);
    let common::RoundTrips {
        done,
        worst,
        took: chatted,
    } = run.trips;
    let in_mib = flooded as f64 / (1 << 20) as f64;
    eprintln!(
        "{FLOODERS} flooders sent {in_mib:.0} MiB in {chatted:?}; the pair's {done} round \
         trips: worst {worst:?}; RSS base {base} KiB, max {max} KiB (+{} KiB)",
        max.saturating_sub(base)
    );
    let samples = common::scrape(admin);
    let read_mib = common::sample(&samples, "achat_received_bytes_total") / (1 << 20) as f64;
    let cpu = d.cpu_time();
    eprintln!(
        "the daemon read {read_mib:.0} MiB of it, using {cpu:?} of CPU; {} connections accepted",
        common::sample(&samples, "achat_connections_accepted_total")
    );
    let bad = common::sample(&samples, "achat_bad_line_disconnects_total");
    assert!(bad > 0.0, "nobody was closed for bad lines");
    // The queue budget (8 MiB), the router's queue of reads (64 of at most 64 KiB) and
    // allocator slack: a bound the flood would pass many times over without the limits.
    let bound = base + 8 * 1024 + 16 * 1024;
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");
    assert!(done >= 10, "only {done} round trips in {chatted:?}");
    // Generous: a stalled thread took the pair 3 to 11 s per round trip.
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    // The daemon still serves newcomers.
    let mut carol = d.login("carol");
    carol.send("alice: hello after the flood");
    alice.expect("from carol: hello after the flood");
}

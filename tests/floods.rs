//! Hostile input at full speed (ARCHITECTURE §1 and §4b): 100 connections flood the daemon with
//! every kind of input it handles, on every port, while a pair chats. The daemon's memory
//! stays bounded, the pair gets every line, and its worst round trip is reported.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::ws::WsClient;
use common::Daemon;

/// Queue bounds small enough for a flood to reach them in seconds, and the admin endpoint
/// for the counts.
const FLOOD_LIMITS: &str = "[limits]\noutbound_queue_bytes = 262144\n\
    outbound_queue_hard_bytes = 1048576\noutbound_total_bytes = 8388608\n\
    slow_consumer_grace = \"1s\"\nlogin_timeout = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The floods run one at a time: two at once would each measure the other.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    /// Valid messages to itself, never read: a slow consumer. Each read is one run of
    /// lines to the same recipient, which a-chat routes as one item.
    GoodToSelf,
    /// The same, but consecutive lines name the recipient two ways (`me:`, `me :`), so
    /// that no two join: every line is routed and queued on its own.
    GoodToSelfApart,
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

const KINDS: [Kind; 11] = [
    Kind::EmptyLines,
    Kind::NoColon,
    Kind::UnknownRecipient,
    Kind::TooManyRecipients,
    Kind::GoodToSelf,
    Kind::GoodToSelfApart,
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
        Kind::GoodToSelfApart => {
            let x = "x".repeat(100);
            (
                login,
                fill(format!("{name}: {x}\n{name} : {x}\n").as_bytes()),
            )
        }
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
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    const FLOODERS: usize = 100;
    const ROUND_TRIPS: usize = 300;
    const FLOOD_FOR: Duration = Duration::from_secs(8);
    let mut d = Daemon::with_toml(FLOOD_LIMITS);
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

/// What one flooding connection to the WebSocket listener sends.
#[derive(Clone, Copy, Debug)]
enum WsKind {
    /// Bytes that are not an HTTP request, at full speed.
    HandshakeGarbage,
    /// A request head that never ends, a header at a time.
    HandshakeNever,
    /// A session that sends pings at full speed and never reads the pongs.
    Pings,
    /// Frames that announce a gigabyte.
    HugeFrames,
    /// Good lines (to itself, never read), each frame a byte at a time, a byte a millisecond.
    ByteAtATime,
    /// Binary frames.
    Binary,
}

const WS_KINDS: [WsKind; 6] = [
    WsKind::HandshakeGarbage,
    WsKind::HandshakeNever,
    WsKind::Pings,
    WsKind::HugeFrames,
    WsKind::ByteAtATime,
    WsKind::Binary,
];

/// A client frame (masked, as RFC 6455 wants from clients) of `opcode` carrying `payload`.
fn ws_frame(opcode: u8, payload: &[u8], claimed: Option<u64>) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let len = claimed.unwrap_or(payload.len() as u64);
    let mut frame = vec![0x80 | opcode];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&len.to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The request that opens a session, then a login frame for `name`.
fn ws_open(name: &str) -> Vec<u8> {
    let mut bytes =
        b"GET / HTTP/1.1\r\nHost: a-chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
    bytes.extend(ws_frame(0x1, name.as_bytes(), None));
    bytes
}

/// The login part and the body (sent over and over) of a WebSocket flooder.
fn ws_payload(kind: WsKind, name: &str) -> (Vec<u8>, Vec<u8>) {
    let fill = |unit: Vec<u8>| unit.repeat(64 * 1024 / unit.len());
    match kind {
        WsKind::HandshakeGarbage => (Vec::new(), fill(b"\x16\x03\x01garbage\x00".to_vec())),
        WsKind::HandshakeNever => (b"GET / HTTP/1.1\r\n".to_vec(), b"X-Slow: y\r\n".to_vec()),
        WsKind::Pings => (ws_open(name), fill(ws_frame(0x9, b"ping", None))),
        WsKind::HugeFrames => (ws_open(name), ws_frame(0x1, b"x", Some(1 << 30))),
        WsKind::ByteAtATime => (
            ws_open(name),
            ws_frame(0x1, format!("{name}: hi").as_bytes(), None),
        ),
        WsKind::Binary => (ws_open(name), fill(ws_frame(0x2, &[0; 100], None))),
    }
}

/// Floods the WebSocket listener as `kind` until `stop`; returns the bytes sent.
fn ws_flooder(kind: WsKind, ws: SocketAddr, id: usize, stop: &AtomicBool) -> u64 {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let make = |round| ws_payload(kind, &format!("w{id}r{round}"));
    match kind {
        WsKind::HandshakeNever => {
            common::flood_until(ws, stop, Some(Duration::from_millis(50)), make)
        }
        WsKind::ByteAtATime => {
            let mut sent = 0;
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let Ok(mut stream) = std::net::TcpStream::connect(ws) else {
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let (open, frame) = make(round);
                if stream.write_all(&open).is_err() {
                    continue;
                }
                'session: while !stop.load(Ordering::Relaxed) {
                    for byte in &frame {
                        match stream.write(std::slice::from_ref(byte)) {
                            Ok(n) => sent += n as u64,
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break 'session,
                        }
                        // A slow drip, as a client on a bad link (or a slowloris) sends.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            sent
        }
        _ => common::flood_until(ws, stop, None, make),
    }
}

#[test]
fn websocket_floods_do_not_disturb_a_tcp_pair_or_a_websocket_pair() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    const FLOODERS: usize = 48;
    const ROUND_TRIPS: usize = 300;
    const FLOOD_FOR: Duration = Duration::from_secs(8);
    let mut d = Daemon::with_toml(&format!(
        "{FLOOD_LIMITS}[websocket]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let admin = d.admin_addr();
    let ws = d.ws_addr(false);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let mut carol = WsClient::login(ws, "carol");
    let mut dave = WsClient::login(ws, "dave");
    // The WebSocket pair chats on its own thread through the same flood.
    let ws_pair = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let (mut done, mut worst) = (0, Duration::ZERO);
        while done < ROUND_TRIPS && started.elapsed() < FLOOD_FOR {
            let sent = std::time::Instant::now();
            carol.send(&format!("dave: ping {done}"));
            dave.expect(&format!("from carol: ping {done}"));
            dave.send(&format!("carol: pong {done}"));
            carol.expect(&format!("from dave: pong {done}"));
            worst = worst.max(sent.elapsed());
            done += 1;
        }
        (done, worst)
    });
    let run = common::flood::chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        (ROUND_TRIPS, FLOOD_FOR),
        FLOODERS,
        move |i, stop| ws_flooder(WS_KINDS[i % WS_KINDS.len()], ws, i, stop),
    );
    let (ws_done, ws_worst) = ws_pair.join().expect("the WebSocket pair");
    let (base, max) = (run.bases[0], run.maxes[0]);
    let (done, worst) = (run.trips.done, run.trips.worst);
    eprintln!(
        "{FLOODERS} WebSocket flooders sent {:.0} MiB; the TCP pair's {done} round trips: worst \
         {worst:?}; the WebSocket pair's {ws_done}: worst {ws_worst:?}; RSS base {base} KiB, \
         max {max} KiB (+{} KiB)",
        run.flooded as f64 / (1 << 20) as f64,
        max.saturating_sub(base)
    );
    let samples = common::scrape(admin);
    let count = |name: &str| common::sample(&samples, name);
    for reason in ["too_big", "binary"] {
        let refused = count(&format!(
            "achat_websocket_refused_total{{reason=\"{reason}\"}}"
        ));
        assert!(refused > 0.0, "no session was refused as {reason}");
    }
    assert!(count("achat_websocket_requests_total{answer=\"bad_request\"}") > 0.0);
    // As the TCP flood's bound: the queue budget, the reads in flight, allocator slack.
    let bound = base + 8 * 1024 + 16 * 1024;
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");
    assert!(
        done >= 10 && ws_done >= 10,
        "round trips: {done} TCP, {ws_done} WebSocket"
    );
    assert!(
        worst < Duration::from_secs(2),
        "TCP pair's worst round trip {worst:?}"
    );
    assert!(
        ws_worst < Duration::from_secs(2),
        "WebSocket pair's worst round trip {ws_worst:?}"
    );
}

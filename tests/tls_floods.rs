//! Floods of TLS records after the handshake, against a-chat's own TLS layer: every way a
//! client can cut what it sends (a record per byte, a record a byte at a time, records
//! of the largest size carrying a line that never ends, records that do not open), from
//! many connections at full speed while a pair chats on the same daemon.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use a_chat::tls;
use futures_rustls::rustls::{ClientConfig, ClientConnection};

use common::Daemon;

/// What one flooding TLS connection sends after its handshake and its login, over and
/// over, without reading; it connects again whenever the daemon closes it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Good lines to itself, one byte per record: the most records per byte of chat.
    Crumbs,
    /// Records of a long message, each written a byte at a time: always a record
    /// incomplete, its bytes kept by the daemon until the rest comes.
    Dribble,
    /// Records of the largest size (16 KiB) of one line that never ends.
    Jumbo,
    /// Application-data records whose ciphertext is noise: they fail to open.
    Forged,
}

const KINDS: [Kind; 4] = [Kind::Crumbs, Kind::Dribble, Kind::Jumbo, Kind::Forged];

/// A connection with its handshake done, or `None` when the daemon was not taking one.
fn session(addr: SocketAddr, config: &Arc<ClientConfig>) -> Option<(ClientConnection, TcpStream)> {
    let mut sock = TcpStream::connect(addr).ok()?;
    sock.set_nodelay(true).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.set_write_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut conn = ClientConnection::new(config.clone(), "127.0.0.1".try_into().unwrap()).ok()?;
    conn.complete_io(&mut sock).ok()?;
    Some((conn, sock))
}

/// Seals `plaintext` as one record per `record` bytes, in `out`.
fn seal(conn: &mut ClientConnection, plaintext: &[u8], record: usize, out: &mut Vec<u8>) {
    for piece in plaintext.chunks(record) {
        conn.writer().write_all(piece).unwrap();
        while conn.wants_write() {
            conn.write_tls(out).unwrap();
        }
    }
}

/// One connection's flood as `kind`, until the daemon closes it or `stop`: the bytes sent.
fn flood_once(
    kind: Kind,
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    name: &str,
    stop: &AtomicBool,
) -> u64 {
    let mut sent = 0u64;
    let mut out = Vec::new();
    seal(conn, format!("{name}\n").as_bytes(), 1 << 14, &mut out);
    let noise: Vec<u8> = (0..1000u32).map(|k| (k * 7919) as u8).collect();
    while !stop.load(Ordering::Relaxed) {
        match kind {
            Kind::Crumbs => seal(conn, format!("{name}: crumbs\n").as_bytes(), 1, &mut out),
            Kind::Jumbo => seal(conn, &[b'j'; 1 << 14], 1 << 14, &mut out),
            Kind::Forged => {
                out.extend_from_slice(&[23, 3, 3, 0x03, 0xe8]);
                out.extend_from_slice(&noise);
            }
            Kind::Dribble => {
                let line = format!("{name}: {}\n", "d".repeat(8000));
                seal(conn, line.as_bytes(), 1 << 14, &mut out);
                for byte in out.drain(..) {
                    if stop.load(Ordering::Relaxed) || sock.write_all(&[byte]).is_err() {
                        return sent;
                    }
                    sent += 1;
                }
                continue;
            }
        }
        if sock.write_all(&out).is_err() {
            return sent;
        }
        sent += out.len() as u64;
        out.clear();
    }
    sent
}

/// Floods as `kind` until `stop`, connecting again each time the daemon closes the
/// connection; returns the bytes sent.
fn flooder(
    kind: Kind,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    id: usize,
    stop: &AtomicBool,
) -> u64 {
    // The flooders share the daemon's two cores, which attackers elsewhere would not:
    // at the lowest priority, what they cost is the daemon's own work on their input,
    // not the machine's time they spend making it (sealing a record per byte, a write
    // per byte).
    // SAFETY: setpriority on this thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
    let mut sent = 0;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if let Some((mut conn, mut sock)) = session(addr, &config) {
            sent += flood_once(kind, &mut conn, &mut sock, &format!("t{id}r{round}"), stop);
        }
    }
    sent
}

#[test]
fn tls_record_floods_of_every_kind_do_not_disturb_a_pair() {
    const FLOODERS: usize = 24;
    let pki = common::Pki::new();
    let mut d = Daemon::with_toml(&format!(
        "{}[limits]\noutbound_queue_bytes = 262144\noutbound_queue_hard_bytes = 1048576\n\
         slow_consumer_grace = \"1s\"\nlogin_timeout = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        pki.toml(false)
    ));
    let admin = d.admin_addr();
    let addr = d.tls_addr();
    let config = Arc::new(
        tls::client_config(Some(std::path::Path::new(&pki.path("ca.pem"))), None)
            .expect("client config"),
    );
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let run = common::flood::chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        (usize::MAX, Duration::from_secs(4)),
        FLOODERS,
        move |i, stop| flooder(KINDS[i % KINDS.len()], addr, config.clone(), i, stop),
    );
    let (base, max) = (run.bases[0], run.maxes[0]);
    let trips = &run.trips;
    eprintln!(
        "{FLOODERS} TLS flooders sent {} MiB; the pair's {} round trips in {:?}: worst {:?}; \
         RSS {base} KiB -> {max} KiB (+{} KiB)",
        run.flooded >> 20,
        trips.done,
        trips.took,
        trips.worst,
        max.saturating_sub(base)
    );
    // Every line of the pair arrived (ping_pong checks each); the flood never held it up.
    assert!(trips.done >= 20, "the pair barely got through");
    assert!(
        trips.worst < Duration::from_millis(500),
        "{:?}",
        trips.worst
    );
    // Each flooder holds at most a record, a read of plaintext and a line in the daemon.
    let grew_mib = max.saturating_sub(base) / 1024;
    assert!(grew_mib <= 32, "RSS grew by {grew_mib} MiB");
    // Every kind reached the daemon and was dealt with as it should be.
    let samples = common::scrape(admin);
    let closed = |reason: &str| {
        common::sample(
            &samples,
            &format!("achat_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    // (A record that does not open ends its connection: a unit test of
    // src/runtime/tls_stream.rs shows it, with rustls's alert.)
    assert!(closed("line_too_long") > 0.0, "no jumbo line was refused");
    let received = common::sample(&samples, "achat_messages_received_total");
    assert!(received > 100.0, "only {received} messages were received");
}

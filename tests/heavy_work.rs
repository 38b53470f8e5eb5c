//! Heavy work an outsider can trigger, while a pair chats: SIGHUP storms with strong
//! password hash settings, admin clients pipelining `GET /connections` at thousands of
//! connections, bursts of RSA handshakes, and half-sent ClientHellos on the TLS port. The
//! pair loses nothing, its worst round trip stays under half a second (it took seconds
//! when this work ran on the chat's thread), and the daemon's memory stays bounded.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use a_chat::auth::hash;
use common::flood::{chat_through_flood, FloodRun};
use common::{raise_open_file_limit, sample, scrape, Client, Daemon, Start};
use futures_rustls::rustls::{self, ClientConnection};

/// Each test here floods the daemon and measures a pair's round trips and the daemon's
/// memory: run them one at a time, so that one test's flood (or its password hashing) is
/// not another's, on a machine with two cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bound on the pair's worst round trip during every flood here.
const WORST: Duration = Duration::from_millis(500);

/// The pair makes round trips for this long during each flood.
const ROUNDS: (usize, Duration) = (usize::MAX, Duration::from_secs(4));

/// Logs in `name` (with `password` when auth is on), confirmed by a message to itself.
fn login(addr: SocketAddr, name: &str, password: Option<&str>) -> Client {
    let mut c = Client::connect(addr);
    match password {
        Some(pw) => c.send(&format!("{name} {pw}")),
        None => c.send(name),
    }
    c.send(&format!("{name}: ready?"));
    c.expect(&format!("from {name}: ready?"));
    c
}

/// Prints what a flood came to and checks the pair's round trips and the daemon's memory
/// growth (at most `rss_mib`).
fn check(what: &str, run: &FloodRun, rss_mib: u64) {
    let grew = run.maxes[0].saturating_sub(run.bases[0]) / 1024;
    eprintln!(
        "{what}: {} round trips in {:?}, worst {:?}; RSS {} MiB -> {} MiB (+{grew} MiB)",
        run.trips.done,
        run.trips.took,
        run.trips.worst,
        run.bases[0] / 1024,
        run.maxes[0] / 1024
    );
    assert!(run.trips.done >= 20, "{what}: the pair barely got through");
    assert!(
        run.trips.worst < WORST,
        "{what}: a round trip took {:?} (bound {WORST:?})",
        run.trips.worst
    );
    assert!(
        grew <= rss_mib,
        "{what}: RSS grew by {grew} MiB (bound {rss_mib} MiB)"
    );
}

/// A users file whose strong users are hashed with `t` passes (m=128 MiB): a reload that
/// finds other settings than the last hashes a new dummy with them.
fn users_text(t: u32) -> String {
    let strong = argon2::Params::new(128 * 1024, t, 1, None).unwrap();
    let strong = hash::make(b"strong secret", strong).unwrap();
    let cheap = hash::make(b"pw", argon2::Params::new(64, 1, 1, None).unwrap()).unwrap();
    let mut text = format!("[users]\nalice = \"{cheap}\"\nbob = \"{cheap}\"\n");
    for name in ["carol", "dave", "erin"] {
        text += &format!("{name} = \"{strong}\"\n");
    }
    text
}

#[test]
fn a_sighup_storm_with_strong_hash_settings_never_stalls_a_chat() {
    let _serial = serial();
    // Most users hashed with strong settings that change between two reloads: each
    // reload hashes a new dummy with them (about half a second of one core), which used
    // to stall every chat that long.
    let texts = [users_text(4), users_text(5)];
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, &texts[0]).unwrap();
    let mut d = Daemon::with_toml(&format!(
        "[auth]\nusers_file = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    ));
    let admin = d.admin_addr();
    let (mut alice, mut bob) = (
        login(d.addr, "alice", Some("pw")),
        login(d.addr, "bob", Some("pw")),
    );
    let pid = d.pid();
    let (file, next) = (users.clone(), dir.path().join("next.toml"));
    let run = chat_through_flood(&[pid], &mut alice, &mut bob, ROUNDS, 1, move |_, stop| {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            // The other settings, replaced whole (a reload never reads half a file).
            std::fs::write(&next, &texts[(sent + 1) % 2]).unwrap();
            std::fs::rename(&next, &file).unwrap();
            // SAFETY: kill with a pid we started and a signal number has no preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGHUP) };
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent as u64
    });
    eprintln!("{} SIGHUPs sent", run.flooded);
    // Reloads run one at a time (a storm is taken a reload at a time, never piled up):
    // the memory of one dummy hash (128 MiB) at most, with room for the allocator.
    check("SIGHUP storm", &run, 200);
    // On a loaded machine the first reload (at a lower priority) may still be hashing.
    d.wait_log(|l| l.contains("configuration reloaded"))
        .expect("no reload finished");
    let reloads = sample(&scrape(admin), "achat_config_reloads_total{result=\"ok\"}");
    eprintln!("{reloads} reloads done");
    assert!(
        reloads < run.flooded as f64,
        "SIGHUPs during a reload are taken together"
    );
}

/// A storm of reloads that change no hash settings costs no hash: each reload keeps the
/// dummy it has, so every SIGHUP is served at once and the daemon's CPU stays low.
#[test]
fn reloads_with_the_same_hash_settings_cost_no_hash() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, users_text(4)).unwrap();
    let mut d = Daemon::with_toml(&format!(
        "[auth]\nusers_file = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        users.display()
    ));
    let admin = d.admin_addr();
    let _ = login(d.addr, "alice", Some("pw"));
    let before = d.cpu_time();
    for _ in 0..20 {
        let answer = common::http_raw(admin, b"POST /reload HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("an answer");
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let spent = d.cpu_time() - before;
    // A dummy with these settings takes about half a second of CPU: 20 of them, 10 s.
    eprintln!("20 reloads cost {spent:?} of CPU");
    assert!(
        spent < Duration::from_secs(2),
        "20 reloads cost {spent:?} of CPU"
    );
    assert_eq!(
        sample(&scrape(admin), "achat_config_reloads_total{result=\"ok\"}"),
        20.0
    );
}

/// Sends `GET /connections?limit=1000` 100 times on one connection at once (pipelined),
/// reads the answers, and starts again, until `stop`; returns the bytes read.
fn pipeline_connections(admin: SocketAddr, stop: &AtomicBool) -> u64 {
    let request = b"GET /connections?limit=1000&sort=since HTTP/1.1\r\nHost: a\r\n\r\n".repeat(100);
    let mut read = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(admin) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if s.write_all(&request).is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => read += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
    }
    read
}

#[test]
fn admin_clients_pipelining_connections_never_stall_a_chat() {
    let _serial = serial();
    raise_open_file_limit();
    let mut d = Daemon::start_with(Start {
        toml: "[limits]\nlogin_timeout = \"120s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        nofile: Some(8192),
        ..Start::default()
    });
    let admin = d.admin_addr();
    // Thousands of open connections: each answer looks at every one of them.
    let idle: Vec<TcpStream> = (0..3000)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    let (mut alice, mut bob) = (login(d.addr, "alice", None), login(d.addr, "bob", None));
    let run = chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        ROUNDS,
        32,
        move |_, stop| pipeline_connections(admin, stop),
    );
    eprintln!("{} MiB of /connections answers read", run.flooded >> 20);
    assert!(run.flooded > 0, "no answer came");
    check("pipelined /connections", &run, 100);
    drop(idle);
}

/// The `openssl` command, which must succeed.
fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A daemon with a plaintext listener, a TLS listener with a self-signed RSA-2048
/// certificate (a signature costs about a millisecond: the expensive kind), and admin.
fn tls_daemon(dir: &std::path::Path) -> Daemon {
    let (cert, key) = (dir.join("rsa.pem"), dir.join("rsa.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    Daemon::start_with(Start {
        toml: format!(
            "[limits]\nlogin_timeout = \"60s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        nofile: Some(16384),
        ..Start::default()
    })
}

/// A ClientHello as rustls's client sends it (TLS 1.3 and 1.2, X25519 key share).
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut conn = ClientConnection::new(Arc::new(config), "127.0.0.1".try_into().unwrap())
        .expect("a client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Opens `burst` connections at once, sends each a ClientHello, waits until the server
/// has answered each (it signed for each one), closes them, and starts again, until
/// `stop`; returns how many handshakes the server answered.
fn handshake_bursts(tls: SocketAddr, burst: usize, stop: &AtomicBool) -> u64 {
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut burst: Vec<TcpStream> = (0..burst)
            .filter_map(|_| TcpStream::connect(tls).ok())
            .collect();
        for s in &mut burst {
            let _ = s.write_all(&client_hello());
        }
        for s in &mut burst {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                answered += 1;
            }
        }
    }
    answered
}

#[test]
fn bursts_of_rsa_handshakes_never_stall_a_chat() {
    let _serial = serial();
    raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut d = tls_daemon(dir.path());
    let (tls, admin) = (d.tls_addr(), d.admin_addr());
    let (mut alice, mut bob) = (login(d.addr, "alice", None), login(d.addr, "bob", None));
    // Four bursts of 60 handshakes at once, again and again: a quarter of a second of
    // signing arrives at once each time. (The bursts stay under the 256 handshakes in
    // progress at once: these clients never finish theirs, so slots free up only when a
    // burst's connections close.)
    let run = chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        ROUNDS,
        4,
        move |_, stop| handshake_bursts(tls, 60, stop),
    );
    eprintln!("{} handshakes answered during the flood", run.flooded);
    // On a machine busy with other work the handshake threads (at nice 10) get little CPU:
    // the flood is slow then, but it happened.
    assert!(run.flooded >= 60, "the flood got {} answers", run.flooded);
    check("RSA handshake bursts", &run, 100);
    let samples = scrape(admin);
    assert_eq!(sample(&samples, "achat_tls_handshakes_waiting"), 0.0);
}

/// Opens `n` connections to `tls` that each send a record header and handshake header
/// announcing a ClientHello of `announced` bytes, then `sent` bytes of it, and nothing
/// more; returns them (to be held open).
fn half_sent_hellos(tls: SocketAddr, n: usize, announced: usize, sent: usize) -> Vec<TcpStream> {
    let l = (announced as u32).to_be_bytes();
    let record = (announced + 4).min(16384) as u16;
    let mut hello = vec![22, 3, 1];
    hello.extend_from_slice(&record.to_be_bytes());
    hello.extend_from_slice(&[1, l[1], l[2], l[3], 3, 3]);
    hello.resize(5 + sent, 0x5a);
    (0..n)
        .filter_map(|i| {
            // A steady stream rather than one burst: what is measured is what the
            // handshakes hold, not how the accept loop takes a storm of connections.
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut s = TcpStream::connect(tls).ok()?;
            s.write_all(&hello).ok()?;
            Some(s)
        })
        .collect()
}

#[test]
fn half_sent_client_hellos_hold_little_memory() {
    let _serial = serial();
    raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut d = tls_daemon(dir.path());
    let (tls, admin) = (d.tls_addr(), d.admin_addr());
    let (mut alice, mut bob) = (login(d.addr, "alice", None), login(d.addr, "bob", None));
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    // 4 × 400 connections, each with 15 KiB of a 16 KiB ClientHello, then 4 × 100 that
    // announce 61 KiB and send 16. Before: +67 MiB for these (34 KiB each); now a few MiB
    // for the 256 in progress, and a small task for each waiting one.
    let run = chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        ROUNDS,
        4,
        move |_, stop| {
            let mut opened = half_sent_hellos(tls, 400, 16 * 1024 - 4, 15 * 1024);
            opened.extend(half_sent_hellos(tls, 100, 61 * 1024, 16 * 1024));
            let n = opened.len() as u64;
            keep.lock().unwrap().extend(opened);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        },
    );
    eprintln!("{} half-sent ClientHellos held open", run.flooded);
    assert!(
        run.flooded >= 1900,
        "only {} connections opened",
        run.flooded
    );
    check("half-sent ClientHellos", &run, 30);
    let samples = scrape(admin);
    let (in_progress, waiting) = (
        sample(&samples, "achat_tls_handshakes_in_progress"),
        sample(&samples, "achat_tls_handshakes_waiting"),
    );
    let too_large = sample(
        &samples,
        "achat_tls_handshake_failures_total{reason=\"too_large\"}",
    );
    eprintln!("in progress {in_progress}, waiting {waiting}, too large {too_large}");
    assert!(in_progress <= 256.0 && in_progress + waiting >= 1500.0);
    assert!(
        too_large >= 400.0,
        "{too_large} ClientHellos refused as too large"
    );
    drop(held);
}

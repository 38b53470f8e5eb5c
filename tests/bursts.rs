//! ARCHITECTURE §4b against the real binary: bursts never cut off clients that read, slow
//! consumers are judged over time (the grace) and at once (the hard bound), all queues
//! together stay within `outbound_total_bytes` by cutting the largest first, and a
//! reconnect storm within the listen backlog overflows nothing.
mod common;

use std::collections::HashMap;
use std::io::{BufRead, ErrorKind, Read};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Daemon, WAIT};

/// These tests measure memory and count kernel overflows: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

/// A reader that reads at full speed and checks, per sender, that the numbered lines
/// `from S: N ...` arrive in order without a gap. It reports its count after every line.
fn steady_reader(
    client: Client,
    senders: usize,
) -> (mpsc::Receiver<Result<u64, String>>, TcpStream) {
    let (stream, reader) = client.split();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut count = 0u64;
        for line in reader.lines() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    let _ = tx.send(Err(format!("read failed after {count} lines: {e}")));
                    return;
                }
            };
            let parsed = line
                .strip_prefix("from ")
                .and_then(|rest| rest.split_once(": "))
                .and_then(|(from, text)| {
                    Some((from, text.split(' ').next()?.parse::<u64>().ok()?))
                });
            let Some((from, n)) = parsed else {
                let _ = tx.send(Err(format!("unexpected line after {count}: {line:.80}")));
                return;
            };
            let want = next.entry(from.to_owned()).or_insert(0);
            if n != *want {
                let _ = tx.send(Err(format!("from {from}: got {n}, wanted {want}")));
                return;
            }
            *want += 1;
            count += 1;
            if tx.send(Ok(count)).is_err() {
                return;
            }
        }
        let _ = tx.send(Err(format!(
            "the connection ended after {count} lines (senders: {senders})"
        )));
    });
    (rx, stream)
}

/// Waits until a steady reader has counted `want` lines; panics on its error or at `WAIT`.
fn wait_count(rx: &mpsc::Receiver<Result<u64, String>>, who: &str, want: u64) {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(n)) if n >= want => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{who}: {e}"),
            Err(_) => panic!("{who}: not every line arrived within {:?}", WAIT * 3),
        }
    }
}

/// 20 bursts of 8 MiB towards each of two clients that read at full speed: far past
/// `outbound_queue_bytes` (1 MiB) for a moment, yet worked off well within the grace,
/// so neither is ever cut off and every line arrives in order.
#[test]
fn bursts_never_cut_off_clients_that_read() {
    let _serial = serial();
    const ROUNDS: usize = 20;
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 2 * MIB; // to each reader: SENDERS * PER_SENDER = 8 MiB
    const LINE: usize = 1024;
    let d = Daemon::start();
    let (r0, _keep0) = steady_reader(d.login("r0"), SENDERS);
    let (r1, _keep1) = steady_reader(d.login("r1"), SENDERS);
    let mut senders: Vec<Client> = (0..SENDERS).map(|i| d.login(&format!("s{i}"))).collect();
    let lines_per_sender = PER_SENDER / LINE;
    let mut seq = [0u64; SENDERS];
    let mut took = Vec::new();
    for round in 0..ROUNDS {
        // Each sender's burst, built before the clock starts: one write of 2 MiB.
        let bursts: Vec<Vec<u8>> = (0..SENDERS)
            .map(|i| {
                let mut burst = Vec::with_capacity(PER_SENDER + LINE);
                for _ in 0..lines_per_sender {
                    let head = format!("r0, r1: {} ", seq[i]);
                    seq[i] += 1;
                    burst.extend_from_slice(head.as_bytes());
                    burst.resize(burst.len() + LINE - head.len() - 1, b'x');
                    burst.push(b'\n');
                }
                burst
            })
            .collect();
        let started = Instant::now();
        thread::scope(|s| {
            for (sender, burst) in senders.iter_mut().zip(&bursts) {
                s.spawn(move || sender.send_raw(burst).expect("the burst was refused"));
            }
        });
        let want = seq.iter().sum::<u64>();
        wait_count(&r0, "r0", want);
        wait_count(&r1, "r1", want);
        took.push(started.elapsed());
        eprintln!(
            "round {round}: {} MiB to each reader in {:?}",
            SENDERS * PER_SENDER / MIB,
            started.elapsed()
        );
    }
    took.sort();
    eprintln!(
        "bursts of 8 MiB per reader: median {:?}, worst {:?}",
        took[ROUNDS / 2],
        took[ROUNDS - 1]
    );
    let log = d.log_text();
    assert!(
        !log.contains("slow consumer"),
        "a client that reads was cut off:\n{log}"
    );
}

/// Sends about `bytes` of 1 KB messages from `client` to `to` as fast as the daemon takes
/// them; returns how many lines that was.
fn flood_to(client: &mut Client, to: &str, bytes: usize) -> usize {
    let line = format!("{to}: {}\n", "x".repeat(1000));
    let batch = line.repeat(64);
    let batches = bytes / batch.len();
    for _ in 0..batches {
        client.send_raw(batch.as_bytes()).expect("send");
    }
    batches * 64
}

/// Reads what a cut-off client still gets, and asserts the daemon closed it.
fn assert_closed(client: Client, who: &str) {
    let (stream, mut reader) = client.split();
    drop(stream);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{who}: the connection is still open: {e}"),
        }
    }
}

#[test]
fn a_client_that_stops_reading_is_cut_off_after_the_grace_not_before() {
    let _serial = serial();
    let grace = Duration::from_secs(1);
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 65536\nslow_consumer_grace = \"1s\"\n\
         outbound_queue_hard_bytes = 268435456\nwrite_timeout = \"60s\"\n",
    );
    let slow = d.login_small_rcvbuf("slow", 4096);
    let mut talker = d.login("talker");
    let started = Instant::now();
    // 4 MiB: far more than the sockets hold, so the queue stays over 64 KiB.
    flood_to(&mut talker, "slow", 4 * MIB);
    let line = d
        .wait_log(|l| l.contains("slow consumer disconnected"))
        .unwrap_or_else(|| panic!("no slow-consumer line; log:\n{}", d.log_text()));
    let after = started.elapsed();
    eprintln!("cut off {after:?} after the flood began: {line}");
    assert!(line.contains("reason=\"grace\""), "{line}");
    assert!(line.contains("slow_consumer_grace"), "{line}");
    // The grace runs from when the queue went over, which is after the flood began.
    assert!(after >= grace, "cut off after {after:?}, before the grace");
    assert!(after < grace + WAIT / 2, "cut off only after {after:?}");
    assert_closed(slow, "slow");
    talker.send("talker: still here");
    loop {
        match talker.line().as_deref() {
            Some("from talker: still here") => break,
            Some(l) if l.starts_with("error: no such user \"slow\"") => {}
            other => panic!("talker got {other:?}"),
        }
    }
}

#[test]
fn past_the_hard_bound_a_client_is_cut_off_at_once() {
    let _serial = serial();
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 65536\noutbound_queue_hard_bytes = 262144\n\
         slow_consumer_grace = \"60s\"\nwrite_timeout = \"60s\"\n",
    );
    let slow = d.login_small_rcvbuf("slow", 4096);
    let mut talker = d.login("talker");
    let started = Instant::now();
    flood_to(&mut talker, "slow", 4 * MIB);
    let line = d
        .wait_log(|l| l.contains("slow consumer disconnected"))
        .unwrap_or_else(|| panic!("no slow-consumer line; log:\n{}", d.log_text()));
    eprintln!(
        "cut off {:?} after the flood began: {line}",
        started.elapsed()
    );
    assert!(line.contains("reason=\"hard_limit\""), "{line}");
    // Far sooner than the 60 s grace or write timeout could have done it.
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    assert_closed(slow, "slow");
}

/// 200 clients that never read: 150 are sent 512 KiB each (small), 50 are sent 6 MiB each
/// (big), with `outbound_total_bytes` = 64 MiB. The kernel's socket buffers take the first
/// few MiB of each; what is left of the big floods is far more than the budget. The
/// daemon's memory stays within the budget, only big queues are cut (the largest first;
/// the unit tests of `outbox` check the order exactly), and a pair that reads meanwhile
/// gets every line.
#[test]
fn all_queues_together_stay_within_the_total_cutting_the_largest_first() {
    let _serial = serial();
    const SMALL: usize = 150;
    const BIG: usize = 50;
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 8388608\noutbound_queue_hard_bytes = 16777216\n\
         outbound_total_bytes = 67108864\nslow_consumer_grace = \"60s\"\nwrite_timeout = \"60s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let admin = d.admin_addr();
    let smalls: Vec<Client> = (0..SMALL)
        .map(|i| d.login_small_rcvbuf(&format!("small{i}"), 4096))
        .collect();
    let bigs: Vec<Client> = (0..BIG)
        .map(|i| d.login_small_rcvbuf(&format!("big{i}"), 4096))
        .collect();
    let (pair, _keep) = steady_reader(d.login("pair"), 1);
    let mut pal = d.login("pal");
    let mut sender = d.login("sender");
    let base = d.rss_kib();
    let watch = common::RssWatch::start(d.pid());
    // The small queues fill first: they are never the largest once the big ones grow.
    let mut small_lines = 0;
    for i in 0..SMALL {
        small_lines = flood_to(&mut sender, &format!("small{i}"), 512 * 1024);
    }
    let mut pal_sent = 0u64;
    for i in 0..BIG {
        flood_to(&mut sender, &format!("big{i}"), 6 * MIB);
        pal.send(&format!("pair: {pal_sent} between big floods"));
        pal_sent += 1;
    }
    sender.send("sender: done");
    loop {
        match sender.line().as_deref() {
            Some("from sender: done") => break,
            Some(l) if l.starts_with("error: no such user \"big") => {}
            other => panic!("sender got {other:?}"),
        }
    }
    wait_count(&pair, "pair", pal_sent);
    let max = watch.stop();
    let samples = common::scrape(admin);
    let cut = common::sample(
        &samples,
        "achat_slow_consumers_total{reason=\"total_limit\"}",
    );
    let queued = common::sample(&samples, "achat_outbound_queued_bytes");
    eprintln!(
        "RSS base {base} KiB, max {max} KiB (+{} MiB); {cut} cut for the total; {queued} bytes queued at the end",
        (max - base) / 1024
    );
    assert!(
        cut > 0.0,
        "300 MiB for 64 MiB of budget, yet nobody was cut"
    );
    assert!(queued <= 64.0 * MIB as f64, "{queued} bytes queued");
    // The budget, the router's queue of reads and allocator slack; never the 375 MiB sent.
    let bound = base + 64 * 1024 + 40 * 1024;
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");
    // No small queue was cut: each still gets all it was sent once it reads.
    for (i, small) in smalls.into_iter().enumerate() {
        let (_w, mut r) = small.split();
        let mut got = 0;
        let mut line = String::new();
        while got < small_lines {
            line.clear();
            r.read_line(&mut line)
                .unwrap_or_else(|e| panic!("small{i}: {e} after {got} lines"));
            assert!(line.starts_with("from sender: "), "small{i}: {line:.60}");
            got += 1;
        }
    }
    drop(bigs);
}

/// 1000 clients (as many as the default backlog holds) connect at once and all log in;
/// the kernel's ListenOverflows counter does not move.
#[test]
fn a_connect_storm_within_the_backlog_overflows_nothing() {
    let _serial = serial();
    const CLIENTS: usize = 1000;
    common::raise_open_file_limit();
    let d = Daemon::start();
    let before = common::listen_overflows();
    let started = Instant::now();
    let addr = d.addr;
    let streams: Vec<TcpStream> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    (0..CLIENTS / 8)
                        .map(|_| TcpStream::connect(addr).expect("connect"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let connected = started.elapsed();
    let mut clients: Vec<Client> = streams.into_iter().map(Client::from_stream).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_raw(format!("storm{i}\nstorm{i}: in\n").as_bytes())
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect(&format!("from storm{i}: in"));
    }
    let all_in = started.elapsed();
    let after = common::listen_overflows();
    eprintln!("{CLIENTS} connected in {connected:?}, all logged in after {all_in:?}");
    match (before, after) {
        (Some(before), Some(after)) => assert_eq!(
            after - before,
            0,
            "the accept queue overflowed during a storm of {CLIENTS}"
        ),
        _ => eprintln!("skipped the overflow check: /proc/net/netstat cannot be read here"),
    }
}

//! The per-client message rate (`[limits] messages_per_second`, `message_burst`), against
//! the real binary: a client past its rate is slowed by not being read (TCP back-pressure),
//! told once with `notice: slow down`, and loses nothing; the rate counts deliveries (a
//! line to five names costs five); other clients are not disturbed.
mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::{ping_pong, Client, Daemon};

/// Logs in `name` on `d`.
fn login(d: &Daemon, name: &str) -> Client {
    d.login(name)
}

/// Sends `n` lines `to: i` from `flooder` in one write (as fast as the socket takes
/// them), on a thread of its own so that a slowed reader cannot stall the test.
fn flood(mut flooder: Client, to: &str, n: usize) -> thread::JoinHandle<Client> {
    let to = to.to_owned();
    thread::spawn(move || {
        let mut all = Vec::new();
        for i in 0..n {
            writeln!(all, "{to}: {i}").unwrap();
        }
        flooder
            .stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        flooder.send_raw(&all).expect("the flood is taken, slowly");
        flooder
    })
}

/// Reads `n` lines `from <sender>: i` on `reader`, in order; how long it took.
fn receive(reader: &mut Client, sender: &str, n: usize) -> Duration {
    reader.set_read_timeout(Duration::from_secs(30));
    let started = Instant::now();
    for i in 0..n {
        reader.expect(&format!("from {sender}: {i}"));
    }
    started.elapsed()
}

#[test]
fn at_its_defaults_a_flooder_is_slowed_told_once_and_loses_nothing_while_a_pair_chats() {
    // The defaults (100 deliveries a second after a burst of 1000); the key is named in
    // a comment so that the harness leaves the limit on.
    let d = Daemon::with_toml("# limits.messages_per_second: the default\n");
    let mut alice = login(&d, "alice");
    let mut bob = login(&d, "bob");
    let mut carol = login(&d, "carol");
    let flooder = login(&d, "mallory");
    // 1250 lines: 1000 in the burst, 250 more at 100 a second: about 2.5 s.
    let sending = flood(flooder, "carol", 1250);
    let reading = thread::spawn(move || receive(&mut carol, "mallory", 1250));
    let pair = ping_pong(&mut alice, &mut bob, 100, Duration::from_secs(20));
    let took = reading.join().unwrap();
    let mut flooder = sending.join().unwrap();
    println!(
        "1250 lines at the default rate took {took:?}; the pair's worst round trip {:?} over {} rounds",
        pair.worst, pair.done
    );
    assert_eq!(pair.done, 100, "the pair was held up");
    assert!(took >= Duration::from_millis(1500), "not slowed: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(pair.worst < Duration::from_secs(1), "{:?}", pair.worst);
    flooder.expect("notice: slow down");
    // Told once: the next line is the answer to this one.
    flooder.send("mallory: still me");
    flooder.set_read_timeout(Duration::from_secs(10));
    flooder.expect("from mallory: still me");
}

#[test]
fn the_rate_counts_deliveries_not_lines() {
    let toml = "[limits]\nmessages_per_second = 100\nmessage_burst = 64\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let mut d = Daemon::with_toml(toml);
    let names = ["r1", "r2", "r3", "r4", "r5"];
    let mut readers: Vec<Client> = names.iter().map(|n| login(&d, n)).collect();
    let mut to_one = login(&d, "one");
    let mut to_five = login(&d, "five");
    // 64 lines to one name: within the burst, at once.
    let started = Instant::now();
    let mut lines = Vec::new();
    for i in 0..64 {
        writeln!(lines, "r1: {i}").unwrap();
    }
    to_one.send_raw(&lines).unwrap();
    for i in 0..64 {
        readers[0].expect(&format!("from one: {i}"));
    }
    let one = started.elapsed();
    // 64 lines to five names: 320 deliveries, 256 past the burst: about 2.5 s.
    let started = Instant::now();
    let mut lines = Vec::new();
    for i in 0..64 {
        writeln!(lines, "{}: {i}", names.join(", ")).unwrap();
    }
    let sending = thread::spawn(move || {
        to_five.send_raw(&lines).unwrap();
        to_five
    });
    for reader in readers.iter_mut() {
        reader.set_read_timeout(Duration::from_secs(30));
    }
    for i in 0..64 {
        for reader in readers.iter_mut() {
            reader.expect(&format!("from five: {i}"));
        }
    }
    let five = started.elapsed();
    let mut to_five = sending.join().unwrap();
    println!("64 lines to one name: {one:?}; to five names: {five:?}");
    assert!(one < Duration::from_secs(1), "{one:?}");
    assert!(five >= Duration::from_millis(1500), "{five:?}");
    to_five.expect("notice: slow down");
    let admin = d.admin_addr();
    let paused = common::sample(&common::scrape(admin), "achat_rate_limited_total");
    assert!(paused >= 1.0, "{paused}");
}

#[test]
fn a_burst_that_cannot_hold_one_full_line_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    std::fs::write(&path, "[limits]\nmessage_burst = 10\n").unwrap();
    let (status, _, err) = common::run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("limits.message_burst") && err.contains("max_recipients"),
        "{err}"
    );
}

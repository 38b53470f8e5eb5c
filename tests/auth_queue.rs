//! The queue of logins waiting for a password check, under one attacker with many
//! addresses: a real user's login gets through a flood of wrong ones, a full queue
//! refuses at once instead of growing, and a login that never reached its check (it
//! timed out in the queue, or its client left) is no failure of its address.
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use a_chat::auth::hash;
use common::users::{heavier, try_login, UsersFile};
use common::{connect_from, scrape, Client, WAIT};

/// The sample `name`, or 0 where the daemon has none.
fn metric(admin: SocketAddr, name: &str) -> f64 {
    let samples = scrape(admin);
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

/// Polls the admin endpoint until the sample `name` reaches `at_least` (or WAIT passes).
fn wait_metric(admin: SocketAddr, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(admin, name);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const BUSY: &str = "achat_auth_failures_total{reason=\"busy\"}";
const BAD: &str = "achat_auth_failures_total{reason=\"bad_credentials\"}";

/// Floods `chat` with wrong logins from the addresses `127.1.<thread>.1..=addrs` until
/// `stop`, keeping up to 64 unanswered logins per thread, like a botnet that waits for
/// its answers. Returns how many it sent.
fn flood(chat: SocketAddr, thread: u8, addrs: u8, stop: &AtomicBool) -> u64 {
    let mut open = std::collections::VecDeque::new();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let from = Ipv4Addr::new(127, 1, thread, 1 + (sent % addrs as u64) as u8);
        if let Ok(mut c) = connect_from(from, chat).map(Client::from_stream) {
            if c.send_raw(b"mallory wrong\n").is_ok() {
                sent += 1;
                open.push_back(c);
            }
        }
        if open.len() >= 64 {
            let mut oldest: Client = open.pop_front().unwrap();
            oldest.set_read_timeout(Duration::from_millis(500));
            let _ = oldest.line_within(Duration::from_millis(500));
        }
    }
    sent
}

#[test]
fn a_real_login_gets_through_a_flood_of_wrong_ones_from_many_addresses() {
    const THREADS: u8 = 8;
    const ADDRS: u8 = 2;
    let users = UsersFile::new(&[("alice", "wonderland")]);
    let mut d = users.daemon(
        "max_failures_per_ip = 40\n[limits]\nlogin_timeout = \"6s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (admin, chat) = (d.admin_addr(), d.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..THREADS)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || flood(chat, t, ADDRS, &stop))
        })
        .collect();
    // Every flooding address has failed at least once: the flood is in full swing.
    let addresses = f64::from(THREADS) * f64::from(ADDRS);
    wait_metric(admin, BAD, addresses);
    let waiting = metric(admin, "achat_connections_open");
    let from = Ipv4Addr::new(127, 0, 0, 1);
    let started = Instant::now();
    let answer = try_login(
        &connect_from(from, chat).unwrap(),
        "alice",
        "wonderland",
        WAIT,
    );
    let took = started.elapsed();
    let (busy, checks) = (
        metric(admin, BUSY),
        metric(admin, "achat_auth_checks_total"),
    );
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "{sent} wrong logins from {addresses} addresses ({waiting} connections open); the real login took {took:?}: {answer:?}; {busy} busy refusals, {checks} checks",
    );
    assert_eq!(answer.as_deref(), Some("from alice: ready?"));
    // Generous: behind the flood in one line, it took 4.3 s or timed out (6 s).
    assert!(
        took < Duration::from_secs(3),
        "the real login took {took:?}"
    );
    // After the flood, the real user's address is not locked out.
    let again = try_login(
        &connect_from(from, chat).unwrap(),
        "alice",
        "wonderland",
        WAIT,
    );
    assert_eq!(again.as_deref(), Some("from alice: ready?"));
    assert!(d.wait_log(|l| l.contains("logged in")).is_some());
}

/// Keeps the queue full of clean logins (each from a fresh address, held open for 3.5 s)
/// until `stop`: a login from an address with a failure waits behind all of them.
fn clean_flood(chat: SocketAddr, stop: &AtomicBool) -> u64 {
    let mut open = std::collections::VecDeque::new();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = sent as u32;
        let from = Ipv4Addr::new(127, 2, (n / 250) as u8, (n % 250) as u8 + 1);
        if let Ok(mut c) = connect_from(from, chat).map(Client::from_stream) {
            if c.send_raw(b"nobody x\n").is_ok() {
                open.push_back((Instant::now(), c));
            }
        }
        sent += 1;
        while open
            .front()
            .is_some_and(|(at, _)| at.elapsed() > Duration::from_millis(3500))
        {
            open.pop_front();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sent
}

#[test]
fn a_login_that_timed_out_in_the_queue_or_left_it_is_no_failure_of_its_address() {
    let users = UsersFile::with_params(&[
        ("alice", "wonderland", hash::default_params()),
        ("bob", "builder", hash::default_params()),
        // Four times the default cost: every failed check costs as much.
        ("carol", "sea shells", heavier(2, 2)),
    ]);
    let mut d = users.daemon(
        "max_failures_per_ip = 2\n[limits]\nlogin_timeout = \"3s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (admin, chat) = (d.admin_addr(), d.addr);
    // Two addresses with one failure each: one more and they are locked out.
    let (late, leaving) = (Ipv4Addr::new(127, 4, 0, 1), Ipv4Addr::new(127, 4, 0, 2));
    for from in [late, leaving] {
        let c = connect_from(from, chat).unwrap();
        let answer = try_login(&c, "alice", "nope", WAIT);
        assert_eq!(answer.as_deref(), Some("error: authentication failed"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || clean_flood(chat, &stop))
    };
    wait_metric(admin, "achat_auth_checks_total", 5.0);
    // Behind the clean logins: one times out in the queue, one client leaves it.
    let mut timed_out = Client::from_stream(connect_from(late, chat).unwrap());
    timed_out.send("alice wonderland");
    let left = connect_from(leaving, chat).unwrap();
    std::io::Write::write_all(&mut &left, b"bob wrong\n").unwrap();
    left.shutdown(std::net::Shutdown::Both).unwrap();
    drop(left);
    timed_out.expect("error: login timeout");
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    eprintln!("{sent} clean logins kept the queue full");
    // Neither counted as a failure: both addresses still log in.
    let answer = try_login(
        &connect_from(late, chat).unwrap(),
        "alice",
        "wonderland",
        WAIT,
    );
    assert_eq!(answer.as_deref(), Some("from alice: ready?"));
    let answer = try_login(
        &connect_from(leaving, chat).unwrap(),
        "bob",
        "builder",
        WAIT,
    );
    assert_eq!(answer.as_deref(), Some("from bob: ready?"));
    assert!(d.wait_log(|l| l.contains("logged in")).is_some());
}

#[test]
fn a_full_queue_refuses_at_once_and_a_clean_address_still_gets_in() {
    const LOGINS: usize = 300;
    let users = UsersFile::with_params(&[
        ("alice", "wonderland", hash::default_params()),
        ("carol", "sea shells", heavier(2, 4)),
    ]);
    let mut d = users.daemon(
        "max_failures_per_ip = 100000\n[limits]\nlogin_timeout = \"60s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (admin, chat) = (d.admin_addr(), d.addr);
    // From one address: after its first, every login waits in the suspects' line.
    let from = Ipv4Addr::new(127, 3, 0, 1);
    let sent = Instant::now();
    let mut flood: Vec<Client> = (0..LOGINS)
        .map(|_| {
            let mut c = Client::from_stream(connect_from(from, chat).unwrap());
            c.send("nobody x");
            c
        })
        .collect();
    // One check runs per core but one; the queue holds MAX_WAITING; the rest are refused.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let refused = (LOGINS - a_chat::auth::MAX_WAITING - cores.saturating_sub(1).max(1)) as f64;
    let busy = wait_metric(admin, BUSY, refused);
    let refused_within = sent.elapsed();
    let answered = flood
        .iter_mut()
        .filter_map(|c| c.line_within(Duration::from_millis(10)).flatten())
        .filter(|l| l == "error: server busy, try again")
        .count();
    eprintln!("{LOGINS} slow logins: {busy} refused as busy within {refused_within:?}, {answered} answers read");
    assert!(busy >= refused, "{busy} busy refusals");
    assert!(answered >= 1);
    // A clean address takes a suspect's place and is served first.
    let started = Instant::now();
    let real = try_login(
        &connect_from(Ipv4Addr::new(127, 3, 0, 2), chat).unwrap(),
        "alice",
        "wonderland",
        WAIT,
    );
    assert_eq!(real.as_deref(), Some("from alice: ready?"));
    eprintln!("the clean login took {:?}", started.elapsed());
    let warnings = d
        .log_text()
        .matches("queue of password checks is full")
        .count();
    assert_eq!(warnings, 1, "one warning a minute");
    drop(flood);
    assert!(d.wait_log(|l| l.contains("logged in")).is_some());
}

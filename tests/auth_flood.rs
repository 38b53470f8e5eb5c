//! The hash-check queue under a flood from many source addresses (127.0.0.0/8): wrong
//! logins from thousands of addresses keep the password checks busy while a pair that
//! logged in with passwords chats. The pair loses nothing, the daemon's memory stays
//! bounded (the queue is), and the pair's worst round trip is reported.
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::users::UsersFile;
use common::{connect_from, sample, scrape, Client, Daemon};

/// Wrong logins from `127.<20 + id>.x.y`, a new address for each, keeping up to 32
/// unanswered at once, until `stop`. Returns the bytes sent.
fn flooder(chat: SocketAddr, id: usize, stop: &AtomicBool) -> u64 {
    let mut open = std::collections::VecDeque::new();
    let (mut sent, mut n) = (0u64, 0u32);
    let line = format!("mallory wrong-{id}\n");
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let from = Ipv4Addr::new(
            127,
            20 + id as u8,
            (n / 250 % 250) as u8,
            (n % 250) as u8 + 1,
        );
        if let Ok(mut c) = connect_from(from, chat).map(Client::from_stream) {
            if c.send_raw(line.as_bytes()).is_ok() {
                sent += line.len() as u64;
                open.push_back(c);
            }
        }
        if open.len() >= 32 {
            let mut oldest: Client = open.pop_front().unwrap();
            let _ = oldest.line_within(Duration::from_secs(2));
        }
    }
    sent
}

/// Logs in with a password, confirmed by a message to self.
fn login(d: &Daemon, name: &str, password: &str) -> Client {
    let mut c = d.connect();
    c.send(&format!("{name} {password}"));
    c.send(&format!("{name}: ready?"));
    c.expect(&format!("from {name}: ready?"));
    c
}

#[test]
fn a_flood_of_wrong_logins_from_many_addresses_does_not_disturb_a_pair() {
    const FLOODERS: usize = 16;
    const ROUND_TRIPS: usize = 100_000;
    const FLOOD_FOR: Duration = Duration::from_secs(5);
    let users = UsersFile::new(&[
        ("alice", "wonderland"),
        ("bob", "builder"),
        ("carol", "sea shells"),
    ]);
    let mut d = users.daemon("[admin]\nlisten = \"127.0.0.1:0\"\n");
    let admin = d.admin_addr();
    let mut alice = login(&d, "alice", "wonderland");
    let mut bob = login(&d, "bob", "builder");
    let chat = d.addr;
    let run = common::flood::chat_through_flood(
        &[d.pid()],
        &mut alice,
        &mut bob,
        (ROUND_TRIPS, FLOOD_FOR),
        FLOODERS,
        move |i, stop| flooder(chat, i, stop),
    );
    let (base, max) = (run.bases[0], run.maxes[0]);
    let common::RoundTrips { done, worst, took } = run.trips;
    let samples = scrape(admin);
    let failure = |reason: &str| {
        sample(
            &samples,
            &format!("achat_auth_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    eprintln!(
        "{FLOODERS} flooders from fresh 127.x addresses for {took:?}: {} connections, {} checks, {} wrong, {} busy; the pair's {done} round trips: worst {worst:?}; RSS base {base} KiB, max {max} KiB (+{} KiB)",
        sample(&samples, "achat_connections_accepted_total"),
        sample(&samples, "achat_auth_checks_total"),
        failure("bad_credentials"),
        failure("busy"),
        max.saturating_sub(base)
    );
    assert!(
        failure("bad_credentials") > 0.0,
        "the flood reached the checks"
    );
    assert!(failure("busy") > 0.0, "the flood filled the queue");
    // One check's memory (19 MiB at the default settings) per checker, the waiting
    // logins (256 at most) and the flood's connections, with allocator slack.
    let bound = base + 64 * 1024;
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");
    assert!(done >= 10, "only {done} round trips in {took:?}");
    // Generous, as in floods.rs: the flooders run on the same two cores as the daemon
    // and the pair (a stalled chat thread took 3 to 11 s per round trip).
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    // The daemon still lets a user in.
    let mut carol = login(&d, "carol", "sea shells");
    carol.send("alice: hello after the flood");
    alice.expect("from carol: hello after the flood");
}

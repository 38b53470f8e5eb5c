//! What a party that can publish to the cluster's Redis can no longer do: forged relay
//! records and kicks that break the client rules are refused and counted, and forged directory
//! events cannot grow a node's copy past its caps (docs/CLUSTER.md, "What a node takes
//! from Redis").
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::cluster::{login, node, node_with, serial, Node, Redis};

/// A relay frame as a-chat writes it: `A1`, a first record that names the sending node
/// (no sender, no recipient, the node as its line; `None`: no such record, as a node of
/// an earlier version writes), then each record: sender, recipients, line.
fn frame(node: Option<&str>, records: &[(&str, &[&str], &[u8])]) -> Vec<u8> {
    let mut out = b"A1".to_vec();
    if let Some(node) = node {
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(node.len() as u32).to_le_bytes());
        out.extend_from_slice(node.as_bytes());
    }
    for (sender, recipients, line) in records {
        out.extend_from_slice(&(sender.len() as u16).to_le_bytes());
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(&(recipients.len() as u16).to_le_bytes());
        for r in *recipients {
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend_from_slice(r.as_bytes());
        }
        out.extend_from_slice(&(line.len() as u32).to_le_bytes());
        out.extend_from_slice(line);
    }
    out
}

/// Forged records for `to` (a login on the node they are published to), each breaking
/// one rule, with the reason each is counted under. `alice` is a real login of `n2`.
fn forgeries(to: &str) -> Vec<(Vec<u8>, &'static str)> {
    let one = |node: Option<&str>, sender: &str, line: &[u8]| frame(node, &[(sender, &[to], line)]);
    let long = format!("from alice: {}\n", "x".repeat(9000));
    vec![
        // A sender nobody holds, in a frame that names no node.
        (one(None, "admin", b"from admin: you are fired\n"), "sender"),
        // alice, from a node that does not hold her.
        (one(Some("n3"), "alice", b"from alice: n3 says\n"), "sender"),
        // Not a login at all.
        (
            one(Some("n2"), "bad name", b"from bad name: hi\n"),
            "sender",
        ),
        // A line under another sender's name.
        (one(Some("n2"), "alice", b"from admin: spoofed\n"), "line"),
        // Terminal escapes: retitle the window, clear the screen.
        (
            one(None, "alice", b"from alice: \x1b]0;pwned\x07\x1b[2J\n"),
            "control",
        ),
        // Two lines in one delivery.
        (
            one(None, "alice", b"from alice: one\nfrom admin: two\n"),
            "control",
        ),
        // No line ending: it would glue onto the next real line.
        (one(None, "alice", b"from alice: glue "), "line"),
        // Longer than max_line_bytes (8192).
        (one(Some("n2"), "alice", long.as_bytes()), "too_long"),
        // A recipient that is not a login.
        (
            frame(Some("n2"), &[("alice", &["bo b"], b"from alice: hi\n")]),
            "recipient",
        ),
        // A kick whose reason would write a second line on the client's screen.
        (kick(to, b"bye\r\nfrom admin: forged"), "kick"),
        // A kick cut short.
        (kick(to, b"bye")[..9].to_vec(), "kick"),
    ]
}

/// A kick frame from `n2` for `login`: `K1`, then node, login, token name and reason,
/// each after its length (`src/cluster/kick.rs`).
fn kick(login: &str, reason: &[u8]) -> Vec<u8> {
    let mut out = b"K1\x02n2".to_vec();
    out.extend_from_slice(&(login.len() as u16).to_le_bytes());
    out.extend_from_slice(login.as_bytes());
    out.extend_from_slice(b"\x03ops");
    out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    out.extend_from_slice(reason);
    out
}

fn refused(node: &Node, reason: &str) -> f64 {
    node.metric(&format!(
        "achat_cluster_refused_total{{reason=\"{reason}\"}}"
    ))
}

/// Forged records published straight to a node's channel reach none of its clients; a
/// real message from a real peer node arrives after them intact and on a line of its
/// own; each forgery is counted by reason, and the log holds one summary warning.
#[test]
fn forged_records_are_refused_and_real_ones_arrive_intact() {
    let _one = serial();
    let redis = Redis::start();
    let n1 = node(&redis, "n1", "10s");
    let n2 = node(&redis, "n2", "10s");
    let mut bob = login(&n1, "bob");
    let mut alice = login(&n2, "alice");
    n1.wait_remote(1);
    n2.wait_remote(1);
    let forged = forgeries("bob");
    for (payload, _) in &forged {
        let reply = redis.command(&[b"PUBLISH", b"achat:to:n1", payload]);
        assert_eq!(reply, ":1", "n1 is subscribed");
    }
    // Published after the forgeries, on the same channel: when it arrives, every
    // forgery has been through n1's router.
    alice.send("bob: the real one");
    bob.expect("from alice: the real one");
    assert_eq!(bob.line_within(Duration::from_millis(300)), None);
    for reason in ["sender", "line", "control", "too_long", "recipient", "kick"] {
        let expected = forged.iter().filter(|(_, r)| *r == reason).count();
        assert_eq!(refused(&n1, reason), expected as f64, "reason {reason}");
    }
    assert_eq!(
        n1.metric("achat_cluster_deliveries_total{direction=\"in\"}"),
        1.0
    );
    // The reverse way is as before.
    bob.send("alice: and back");
    alice.expect("from bob: and back");
    let warnings = n1
        .daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("broke a-chat's rules"))
        .count();
    assert_eq!(
        warnings,
        1,
        "one summary warning:\n{}",
        n1.daemon.log_text()
    );
}

/// A login event for each of `count` names `prefix0`, `prefix1`... on `node`, published
/// by one script inside Redis.
fn forge_logins(redis: &Redis, node: &str, prefix: &str, count: usize) {
    let script = b"for i=0,tonumber(ARGV[3])-1 do local l=ARGV[2]..i; \
                   redis.call('PUBLISH','achat:directory','L\\n'..ARGV[1]..'\\n'..l..'\\n'..l) end \
                   return 1";
    let count = count.to_string();
    let reply = redis.command(&[
        b"EVAL",
        script,
        b"0",
        node.as_bytes(),
        prefix.as_bytes(),
        count.as_bytes(),
    ]);
    assert_eq!(reply, ":1");
}

/// Forged login events cannot grow a node's directory copy past `max_logins_per_node`
/// for one node and `max_remote_logins` in all, however many arrive.
#[test]
fn forged_directory_events_stay_within_the_caps() {
    let _one = serial();
    let redis = Redis::start();
    let caps = "max_logins_per_node = 500\nmax_remote_logins = 2000\n";
    let n1 = node_with(&redis, "n1", "10s", caps);
    let n2 = node(&redis, "n2", "10s");
    let mut bob = login(&n1, "bob");
    let mut alice = login(&n2, "alice");
    n1.wait_remote(1);
    let mut sync = 0;
    let mut sync_up = |alice: &mut common::Client, bob: &mut common::Client| {
        // After the events on n1's subscription: n1 has taken them all when it arrives.
        sync += 1;
        alice.send(&format!("bob: sync {sync}"));
        bob.expect(&format!("from alice: sync {sync}"));
    };
    // One node: 500 of its 1000 logins. Three more: the copy fills at 2000 in all.
    forge_logins(&redis, "g0", "g0u", 1000);
    sync_up(&mut alice, &mut bob);
    assert_eq!(n1.metric("achat_cluster_remote_logins"), 501.0);
    assert_eq!(refused(&n1, "node_full"), 500.0);
    for g in ["g1", "g2", "g3"] {
        forge_logins(&redis, g, &format!("{g}u"), 1000);
    }
    sync_up(&mut alice, &mut bob);
    assert_eq!(n1.metric("achat_cluster_remote_logins"), 2000.0);
    assert_eq!(refused(&n1, "node_full"), 1500.0);
    assert_eq!(refused(&n1, "directory_full"), 501.0);

    // Many events at once: more than the queue takes, so that some are lost to it and
    // the copy is read again.
    let base = n1.daemon.rss_kib();
    for i in 0..10 {
        forge_logins(&redis, &format!("f{i}"), &format!("f{i}u"), 3000);
    }
    sync_up(&mut alice, &mut bob);
    let after = n1.daemon.rss_kib();
    println!("n1 RSS: {base} KiB before 30 000 forged logins, {after} KiB after");
    assert!(n1.metric("achat_cluster_remote_logins") <= 2000.0);
    assert!(after < base + 32 * 1024, "RSS {base} -> {after} KiB");
    bob.send("alice: still here");
    alice.expect("from bob: still here");
}

/// Login events with 4 MiB names (before: +340 MB per node for 40 of them, kept until
/// restart) are refused as they arrive, with the default settings: the node keeps
/// nothing of them.
#[test]
fn forged_names_of_megabytes_are_not_kept() {
    let _one = serial();
    let redis = Redis::start();
    let n1 = node(&redis, "n1", "10s");
    let n2 = node(&redis, "n2", "10s");
    let mut bob = login(&n1, "bob");
    let mut alice = login(&n2, "alice");
    n1.wait_remote(1);
    common::warm_up(&mut alice, &mut bob);
    let base = n1.daemon.rss_kib();
    let watch = common::RssWatch::start(n1.daemon.pid());
    let huge = "a".repeat(4 << 20);
    for i in 0..40 {
        let event = format!("L\nn2\n{huge}{i}\n{huge}{i}");
        redis.command(&[b"PUBLISH", b"achat:directory", event.as_bytes()]);
        // One at a time: four of them at once would pass what Redis holds for a
        // subscriber (32 MiB), and Redis would cut n1 whatever n1 does with them.
        let deadline = std::time::Instant::now() + common::WAIT;
        while refused(&n1, "event") < (i + 1) as f64 {
            assert!(
                std::time::Instant::now() < deadline,
                "event {i} never refused"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
    // After the events on n1's subscription: n1 has taken them all when it arrives.
    alice.send("bob: after the names");
    bob.expect("from alice: after the names");
    let max = watch.stop();
    let after = n1.daemon.rss_kib();
    println!("n1 RSS: {base} KiB before, {max} KiB at most, {after} KiB after");
    assert_eq!(n1.metric("achat_cluster_remote_logins"), 1.0);
    assert_eq!(refused(&n1, "event"), 40.0);
    // What stays is the buffers that read one 8 MiB message, not the names.
    assert!(after < base + 64 * 1024, "RSS {base} -> {after} KiB");
    assert!(max < base + 160 * 1024, "RSS {base} -> {max} KiB at most");
}

/// A client of Redis that publishes `payloads` (in turn) on `channel` until `stop`,
/// pausing `pause` after each round (none: as fast as Redis takes them), draining the
/// answers on a thread.
fn publisher(
    redis: SocketAddr,
    channel: &str,
    payloads: Vec<Vec<u8>>,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    let channel = channel.to_owned();
    thread::spawn(move || {
        let mut stream = TcpStream::connect(redis).unwrap();
        let mut drain = stream.try_clone().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
        });
        let mut many = Vec::new();
        for payload in &payloads {
            many.extend_from_slice(
                format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
                    channel.len(),
                    payload.len()
                )
                .as_bytes(),
            );
            many.extend_from_slice(payload);
            many.extend_from_slice(b"\r\n");
        }
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && stream.write_all(&many).is_ok() {
            sent += payloads.len() as u64;
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
        sent
    })
}

/// The flood column: forged records published to both nodes while a pair chats across
/// them (about 25 000 a second together, 500 µs between rounds of nine, far beyond any
/// real traffic; `FORGED_PAUSE_US=0` publishes as fast as Redis takes them, and then
/// Redis cuts the nodes' subscriptions for falling behind, losing relays, as
/// docs/CLUSTER.md says). The pair loses nothing and sees no forged line.
#[test]
fn a_pair_chats_through_forged_records() {
    let _one = serial();
    let redis = Redis::start();
    let n1 = node(&redis, "n1", "10s");
    let n2 = node(&redis, "n2", "10s");
    let mut alice = login(&n1, "alice");
    let mut bob = login(&n2, "bob");
    n1.wait_remote(1);
    n2.wait_remote(1);
    common::warm_up(&mut alice, &mut bob);
    let stop = Arc::new(AtomicBool::new(false));
    let pause = std::env::var("FORGED_PAUSE_US")
        .map(|us| Duration::from_micros(us.parse().unwrap()))
        .unwrap_or(Duration::from_millis(2));
    let strip = |forged: Vec<(Vec<u8>, &str)>| forged.into_iter().map(|(p, _)| p).collect();
    let publishers = [
        publisher(
            redis.addr,
            "achat:to:n1",
            strip(forgeries("alice")),
            pause,
            stop.clone(),
        ),
        publisher(
            redis.addr,
            "achat:to:n2",
            strip(forgeries("bob")),
            pause,
            stop.clone(),
        ),
    ];
    let trips = common::ping_pong(&mut alice, &mut bob, usize::MAX, Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let published: u64 = publishers.into_iter().map(|p| p.join().unwrap()).sum();
    let refusals: f64 = ["sender", "line", "control", "too_long", "recipient", "kick"]
        .iter()
        .map(|r| refused(&n1, r) + refused(&n2, r))
        .sum();
    println!(
        "{published} forged records published in {:?}, {refusals} refused; the pair: {} round trips, worst {:?}",
        trips.took, trips.done, trips.worst
    );
    assert!(trips.done >= 10, "only {} round trips", trips.done);
    assert!(
        trips.worst < Duration::from_secs(2),
        "worst {:?}",
        trips.worst
    );
    assert!(refusals > 1000.0, "{refusals} refusals");
    // Nothing forged is waiting either.
    assert_eq!(alice.line_within(Duration::from_millis(300)), None);
    assert_eq!(bob.line_within(Duration::from_millis(300)), None);
}

/// A relayed line is held to this node's `max_line_bytes`, as a reload sets it: a line
/// another node accepted under its own larger limit is refused here until this node's
/// limit is raised by SIGHUP, and then arrives.
#[test]
fn relayed_lines_follow_the_line_limit_a_reload_sets() {
    let _one = serial();
    let redis = Redis::start();
    let mut n1 = node_with(&redis, "n1", "10s", "[limits]\nmax_line_bytes = 100\n");
    let n2 = node(&redis, "n2", "10s");
    let mut bob = login(&n1, "bob");
    let mut alice = login(&n2, "alice");
    n1.wait_remote(1);
    let long = "y".repeat(150);
    alice.send(&format!("bob: {long}"));
    alice.send("bob: short");
    bob.expect("from alice: short");
    assert_eq!(refused(&n1, "too_long"), 1.0);
    let toml = std::fs::read_to_string(&n1.daemon.config_path).unwrap();
    let raised = toml.replace("max_line_bytes = 100", "max_line_bytes = 8192");
    assert_ne!(toml, raised);
    std::fs::write(&n1.daemon.config_path, raised).unwrap();
    let seen = n1.daemon.log.lock().unwrap().len();
    n1.daemon.signal(1); // SIGHUP
    let reloaded = |d: &common::Daemon| {
        d.log.lock().unwrap()[seen..]
            .iter()
            .any(|l| l.contains("configuration reloaded"))
    };
    n1.daemon.wait_log(|l| l.contains("configuration reloaded"));
    assert!(reloaded(&n1.daemon), "no reload:\n{}", n1.daemon.log_text());
    alice.send(&format!("bob: {long}"));
    bob.expect(&format!("from alice: {long}"));
}

//! ARCHITECTURE §10 against real processes: a `redis-server` and two or three a-chat nodes on
//! loopback ports, started by each test, talking over TCP like users. One login
//! namespace, messages across nodes in order, a killed node's logins free within its
//! lease, a drained node's logins free at once, a Redis outage survived, and a race for
//! one login won by exactly one client.
mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{joined, login, node, node_at, node_with, serial, try_login, Node, Redis};
use common::{Client, Daemon, WAIT};

#[test]
fn one_namespace_and_messages_across_nodes_in_order() {
    let _one = serial();
    let redis = Redis::start();
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(&redis, id, "10s"))
        .collect();
    let mut alice = login(&nodes[0], "alice");
    let mut bob = login(&nodes[1], "bob");
    let mut carol = login(&nodes[2], "carol");
    for n in &nodes {
        n.wait_remote(2);
    }
    // Unique across nodes, for the same name and for one that looks the same.
    for (n, name) in [(1, "alice"), (2, "Alice"), (0, "bob"), (0, "саrol")] {
        let refused = try_login(nodes[n].daemon.addr, name).err();
        assert_eq!(
            refused.as_deref(),
            Some(format!("error: login \"{name}\" is taken").as_str()),
            "{name} on n{}",
            n + 1
        );
    }
    alice.send("bob, carol: hi");
    bob.expect("from alice: hi");
    carol.expect("from alice: hi");
    // Another spelling reaches the same person, once.
    bob.send("Alice, alice: hello");
    alice.expect("from bob: hello");
    // No such user, cluster-wide.
    carol.send("nobody, bob: anyone?");
    carol.expect("error: no such user \"nobody\"");
    bob.expect("from carol: anyone?");
    // In order and exactly once across nodes, many at a time.
    const LINES: usize = 2000;
    let mut batch = String::new();
    for i in 0..LINES {
        batch.push_str(&format!("bob: {i}\n"));
    }
    alice.send_raw(batch.as_bytes()).unwrap();
    for i in 0..LINES {
        bob.expect(&format!("from alice: {i}"));
    }
    assert_eq!(bob.line_within(Duration::from_millis(200)), None);
    let published = nodes[0].metric("achat_cluster_publishes_total");
    assert!(
        published < LINES as f64 / 4.0,
        "{published} publishes for {LINES} lines: deliveries are not batched"
    );
    assert_eq!(
        nodes[1].metric("achat_cluster_deliveries_total{direction=\"in\"}"),
        LINES as f64 + 2.0
    );
}

#[test]
fn two_clients_racing_for_one_login_on_two_nodes_one_wins() {
    let _one = serial();
    let redis = Redis::start();
    let nodes = [node(&redis, "n1", "10s"), node(&redis, "n2", "10s")];
    let addrs = [nodes[0].daemon.addr, nodes[1].daemon.addr];
    for round in 0..30 {
        let name = format!("racer{round}");
        let start = Arc::new(Barrier::new(2));
        let racers: Vec<_> = addrs
            .iter()
            .map(|&addr| {
                let (start, name) = (start.clone(), name.clone());
                thread::spawn(move || {
                    start.wait();
                    try_login(addr, &name)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            won,
            1,
            "round {round}: {:?}",
            results.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
        );
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(lost, &format!("error: login \"{name}\" is taken"));
    }
}

/// Lines `from` sends to `to` while `running`, each read back before the next: every one
/// must arrive. Returns how many went through.
fn chat_pair(mut from: Client, mut to: Client, rounds: usize) -> usize {
    for i in 0..rounds {
        from.send(&format!("bob: {i}"));
        to.expect(&format!("from alice: {i}"));
    }
    rounds
}

#[test]
fn a_killed_node_frees_its_logins_within_the_lease() {
    let _one = serial();
    let redis = Redis::start();
    let lease = Duration::from_secs(2);
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(&redis, id, "2s"))
        .collect();
    let alice = login(&nodes[0], "alice");
    let bob = login(&nodes[1], "bob");
    let _dave = login(&nodes[2], "dave");
    nodes[0].wait_remote(2);
    nodes[1].wait_remote(2);
    // The pair keeps chatting across the kill.
    let pair = thread::spawn(move || chat_pair(alice, bob, 3000));
    thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    nodes[2].daemon.signal(libc::SIGKILL);
    let _ = nodes[2].daemon.wait_exit(WAIT);
    let mut tries = 0;
    let dave = loop {
        tries += 1;
        match try_login(nodes[0].daemon.addr, "dave") {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(e, "error: login \"dave\" is taken");
                assert!(killed.elapsed() < lease * 3, "dave never freed");
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let freed = killed.elapsed();
    println!("dave free again {freed:?} after the kill ({tries} tries)");
    assert!(
        freed <= lease + Duration::from_millis(500),
        "freed after {freed:?}, lease {lease:?}"
    );
    assert_eq!(pair.join().unwrap(), 3000, "the pair lost lines");
    drop(dave);
    nodes.pop();
}

#[test]
fn a_drained_node_delivers_then_frees_its_logins() {
    let _one = serial();
    let redis = Redis::start();
    // A long lease: the logins must be freed by the drain, not by the lease.
    let mut nodes = [node(&redis, "n1", "60s"), node(&redis, "n2", "60s")];
    let mut alice = login(&nodes[0], "alice");
    let mut erin = login(&nodes[1], "erin");
    nodes[0].wait_remote(1);
    for i in 0..100 {
        alice.send(&format!("erin: {i}"));
    }
    for i in 0..100 {
        erin.expect(&format!("from alice: {i}"));
    }
    nodes[1].daemon.signal(libc::SIGTERM);
    erin.expect("notice: server shutting down");
    erin.expect_closed();
    let status = nodes[1].daemon.wait_exit(WAIT).expect("n2 exited");
    assert!(status.success());
    let released = nodes[1].daemon.log_text().contains("left the cluster");
    assert!(released, "{}", nodes[1].daemon.log_text());
    // Free at once on the other node, 60 s before the lease would have freed it.
    let erin_again = try_login(nodes[0].daemon.addr, "erin");
    assert!(erin_again.is_ok(), "{:?}", erin_again.err());
    nodes[0].wait_remote(0);
}

#[test]
fn a_redis_outage_keeps_local_chat_and_recovers() {
    let _one = serial();
    let mut redis = Redis::start();
    let nodes = [node(&redis, "n1", "3s"), node(&redis, "n2", "3s")];
    let mut alice = login(&nodes[0], "alice");
    let mut bob = login(&nodes[0], "bob");
    let mut carol = login(&nodes[1], "carol");
    nodes[0].wait_remote(1);
    nodes[1].wait_remote(2);
    assert_eq!(nodes[0].ready(), 200);

    redis.stop();
    nodes[0].wait_ready(503, WAIT);
    // Chat inside one node goes on.
    alice.send("bob: still here?");
    bob.expect("from alice: still here?");
    // New logins are refused and closed.
    let mut newcomer = Client::connect(nodes[0].daemon.addr);
    newcomer.send("dave");
    newcomer.expect("error: cluster unavailable, try again");
    newcomer.expect_closed();
    // Another node's client cannot be reached, and the sender is told.
    alice.send("carol, bob: across?");
    alice.expect("error: could not deliver to \"carol\"");
    bob.expect("from alice: across?");
    assert!(nodes[0].metric("achat_cluster_dropped_total{reason=\"link_down\"}") >= 1.0);
    assert_eq!(nodes[0].metric("achat_cluster_link_up"), 0.0);

    // Redis comes back (empty): each node reconnects and claims its logins again.
    let back = Instant::now();
    redis.restart();
    nodes[0].wait_ready(200, Duration::from_secs(20));
    nodes[1].wait_ready(200, Duration::from_secs(20));
    println!(
        "both nodes ready again {:?} after Redis came back",
        back.elapsed()
    );
    nodes[0].wait_remote(1);
    nodes[1].wait_remote(2);
    alice.send("carol: back?");
    carol.expect("from alice: back?");
    carol.send("bob: yes");
    bob.expect("from carol: yes");
    let taken = try_login(nodes[1].daemon.addr, "alice").err();
    assert_eq!(taken.as_deref(), Some("error: login \"alice\" is taken"));
    assert!(nodes[0].metric("achat_cluster_connects_total{result=\"ok\"}") >= 2.0);
}

/// A node that joins a registry larger than one page of its snapshot (`HSCAN`) knows
/// every login in it: 5000 logins of a live node that exists only in Redis.
#[test]
fn a_joining_node_reads_the_whole_registry_in_pages() {
    let _one = serial();
    let redis = Redis::start();
    const LOGINS: usize = 5000;
    redis.live_node("elsewhere");
    // Keyed as the nodes key them: by canonical form.
    let entries: Vec<(String, String)> = (0..LOGINS)
        .map(|i| {
            let name = format!("user{i}");
            (
                a_chat::names::canonical(&name),
                format!("elsewhere\n{name}"),
            )
        })
        .collect();
    let mut args: Vec<&[u8]> = vec![b"HSET", b"achat:logins"];
    for (look, entry) in &entries {
        args.push(look.as_bytes());
        args.push(entry.as_bytes());
    }
    assert_eq!(redis.command(&args), format!(":{LOGINS}"));
    let n1 = node(&redis, "n1", "10s");
    n1.wait_remote(LOGINS);
    // Held elsewhere: taken here; a message to one goes to that node (nobody listens).
    let refused = try_login(n1.daemon.addr, "user4321").err();
    assert_eq!(
        refused.as_deref(),
        Some("error: login \"user4321\" is taken")
    );
    let mut alice = login(&n1, "alice");
    alice.send("user4999: hello?");
    alice.expect("error: could not deliver to \"user4999\"");
}

/// A node whose lease ran out while someone else took one of its logins (the registry
/// says so) gives that login up: its client is told and disconnected, and the node
/// claims its other logins again.
#[test]
fn a_login_taken_elsewhere_while_the_lease_was_out_is_given_up() {
    let _one = serial();
    let redis = Redis::start();
    let n1 = node(&redis, "n1", "1s");
    let mut alice = login(&n1, "alice");
    let mut bob = login(&n1, "bob");
    // What Redis would hold had n1's lease run out and another node taken alice: n1
    // gone from the leases, alice held by a live node.
    let look = a_chat::names::canonical("alice");
    assert_eq!(redis.command(&[b"ZREM", b"achat:nodes", b"n1"]), ":1");
    redis.live_node("elsewhere");
    assert_eq!(
        redis.command(&[
            b"HSET",
            b"achat:logins",
            look.as_bytes(),
            b"elsewhere\nalice"
        ]),
        ":0"
    );
    // n1's next renewal (a third of a second away) finds out.
    alice.expect("notice: another node took this login while the cluster was unavailable");
    alice.expect_closed();
    assert!(n1.metric("achat_cluster_lease_renewals_total{result=\"expired\"}") >= 1.0);
    // bob was claimed again in Redis (a bulk reply, not the nil `$-1`), and still chats.
    let bob_look = a_chat::names::canonical("bob");
    let held = redis.command(&[b"HGET", b"achat:logins", bob_look.as_bytes()]);
    assert!(held.starts_with('$') && held != "$-1", "{held}");
    assert_ne!(
        redis.command(&[b"ZSCORE", b"achat:nodes", b"n1"]),
        "$-1",
        "n1 holds no lease"
    );
    bob.send("bob: still here");
    bob.expect("from bob: still here");
}

/// `n1` and `n2`, two fresh nodes, share one login namespace and relay a line each way.
fn one_namespace_and_a_relay(n1: &Node, n2: &Node, text: &str) {
    let mut alice = login(n1, "alice");
    n2.wait_remote(1);
    let mut again = n2.daemon.connect();
    again.send("alice");
    again.expect("error: login \"alice\" is taken");
    let mut bob = login(n2, "bob");
    n1.wait_remote(1);
    alice.send(&format!("bob: {text}"));
    bob.expect(&format!("from alice: {text}"));
    bob.send("alice: and back");
    alice.expect("from bob: and back");
}

#[test]
fn nodes_share_a_redis_on_a_unix_socket() {
    let _serial = serial();
    let redis = Redis::start_unix();
    assert!(redis.url().starts_with("unix:///"), "{}", redis.url());
    let n1 = node(&redis, "n1", "5s");
    let n2 = node(&redis, "n2", "5s");
    one_namespace_and_a_relay(&n1, &n2, "over a unix socket");
    // Redis counts the nodes' connections on its unix socket: two per node. (Its TCP port
    // is only ever given to this test.)
    let list = redis.bulk(&[b"CLIENT", b"LIST"]);
    let on_socket = list.lines().filter(|l| l.contains(" laddr=/")).count();
    assert_eq!(on_socket, 4, "{list}");
}

#[test]
fn nodes_share_a_redis_that_speaks_only_tls() {
    let _serial = serial();
    let pki = common::Pki::new();
    let redis = Redis::start_tls(&pki);
    let keys = |ca: &str, cert: &str| {
        format!(
            "tls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            pki.path(&format!("{ca}.pem")),
            pki.path(&format!("{cert}.pem")),
            pki.path(&format!("{cert}.key"))
        )
    };
    let n1 = node_with(&redis, "n1", "5s", &keys("ca", "client"));
    let n2 = node_with(&redis, "n2", "5s", &keys("ca", "client"));
    one_namespace_and_a_relay(&n1, &n2, "over TLS to Redis");

    // A node that trusts another CA never joins: it names the failed handshake, refuses
    // logins, and its /readyz says why.
    let mut stranger = Daemon::with_toml(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[cluster]\nredis = \"{}\"\nnode_id = \"n3\"\n{}",
        redis.url(),
        keys("other-ca", "client")
    ));
    let warned = stranger
        .wait_log(|l| l.contains("cannot reach the cluster's Redis"))
        .expect("a warning about Redis");
    assert!(warned.contains("TLS handshake with Redis"), "{warned}");
    let admin = stranger.admin_addr();
    let ready = common::http_get(admin, "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    let mut refused = stranger.connect();
    refused.send("carol");
    refused.expect("error: cluster unavailable, try again");
}

/// The Redis commands a node needs (docs/OPERATIONS.md §6 lists them for an ACL user).
const NODE_COMMANDS: &str = "+hello +auth +ping +script|load +evalsha \
     +hlen +hscan +smembers +subscribe +publish +time +hget +hset +hdel +del +zadd +zrem \
     +zscore +zrangebyscore +sadd +srem";

/// A Redis user allowed the listed commands only, on `achat:` keys and channels, is
/// enough for nodes to share one namespace. A user that lacks one of them (here HSCAN,
/// the snapshot's) keeps the node out of the cluster: it retries with backoff, not at
/// once and for ever.
#[test]
fn a_node_needs_only_the_listed_commands_and_backs_off_without_one() {
    let _one = serial();
    let redis = Redis::start();
    let acl = |user: &str, commands: &str| {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", user.as_bytes(), b"on", b">pw"];
        args.extend([
            &b"resetkeys"[..],
            b"~achat:*",
            b"resetchannels",
            b"&achat:*",
            b"-@all",
        ]);
        args.extend(commands.split_whitespace().map(str::as_bytes));
        assert_eq!(redis.command(&args), "+OK", "ACL SETUSER {user}");
    };
    acl("achat", NODE_COMMANDS);
    let url = |user: &str| format!("redis://{user}:pw@{}/", redis.addr);
    let n1 = joined(node_at(&url("achat"), "n1", "5s", ""), "n1");
    let n2 = joined(node_at(&url("achat"), "n2", "5s", ""), "n2");
    let mut alice = login(&n1, "alice");
    n2.wait_remote(1);
    let mut bob = login(&n2, "bob");
    n1.wait_remote(1);
    alice.send("bob: with the listed commands only");
    bob.expect("from alice: with the listed commands only");

    acl("noscan", &NODE_COMMANDS.replace("+hscan", ""));
    let connections = |redis: &Redis| -> u64 {
        let stats = redis.bulk(&[b"INFO", b"stats"]);
        let line = stats
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .expect("total_connections_received");
        line.trim().parse().unwrap()
    };
    let before = connections(&redis);
    let mut n3 = node_at(&url("noscan"), "n3", "5s", "");
    let failed = n3
        .wait_log(|l| l.contains("joining the cluster failed"))
        .expect("a warning that joining failed");
    assert!(
        failed.contains("hscan") || failed.contains("HSCAN"),
        "{failed}"
    );
    let admin = n3.admin_addr();
    // Two seconds of retries: with backoff from 100 ms (doubling, with jitter) that is a
    // handful of attempts of two connections each; without it, hundreds.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(common::http_get(admin, "/readyz").status, 503);
        thread::sleep(Duration::from_millis(100));
    }
    let made = connections(&redis) - before;
    println!("n3 opened {made} connections to Redis in 2 s of failed joins");
    assert!(made <= 30, "{made} connections in 2 s: no backoff");
    let warned = n3
        .log_text()
        .lines()
        .filter(|l| l.contains("joining the cluster failed"))
        .count();
    assert!(warned <= 2, "{warned} warnings in 2 s");
}

/// What a node's dashboard shows of the cluster: the live nodes, as its lease renewals
/// see them (a killed node drops out within the lease), and Redis's round trip.
#[test]
fn the_live_nodes_and_the_redis_round_trip_are_series() {
    let _one = serial();
    let redis = Redis::start();
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(&redis, id, "1s"))
        .collect();
    let until = |node: &Node, want: f64| {
        let deadline = Instant::now() + WAIT;
        while node.metric("achat_cluster_live_nodes") != want {
            assert!(Instant::now() < deadline, "live nodes never {want}");
            thread::sleep(Duration::from_millis(50));
        }
    };
    until(&nodes[0], 3.0);
    let rtt = nodes[0].metric("achat_cluster_redis_round_trip_seconds");
    assert!(rtt > 0.0 && rtt < 1.0, "{rtt}");
    nodes[2].daemon.signal(libc::SIGKILL);
    let _ = nodes[2].daemon.wait_exit(WAIT);
    until(&nodes[0], 2.0);
    nodes.pop();
}

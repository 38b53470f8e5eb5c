//! An operator's kick in a cluster, against real processes (a `redis-server` and two
//! a-chat nodes): asked of any node, it closes the login on whichever node holds it,
//! carried over the cluster's own channel; a kick frame forged on Redis that breaks the
//! rules is refused and counted, and closes nobody.
mod common;

use std::time::Instant;

use common::cluster::{joined, login, serial, Node, Redis};
use common::{Daemon, HttpResponse, WAIT};

const OPS: &str = "0123456789abcdef0123456789abcdef";

/// A node whose admin endpoint wants the token `ops` for every act (`/metrics` stays
/// open, as the cluster helpers read it).
fn node_with_token(redis: &Redis, id: &str, dir: &std::path::Path) -> Node {
    let tokens = dir.join(format!("{id}-tokens.toml"));
    std::fs::write(&tokens, format!("[tokens]\nops = \"{OPS}\"\n")).unwrap();
    let daemon = Daemon::with_toml(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"{}\"\n\
         open_paths = [\"/healthz\", \"/readyz\", \"/metrics\"]\n\
         [shutdown]\ndrain_timeout = \"5s\"\n\
         [cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nlease = \"10s\"\n",
        tokens.display(),
        redis.url()
    ));
    joined(daemon, id)
}

fn post(node: &Node, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    common::http_raw(node.admin, request.as_bytes()).expect("an answer")
}

#[test]
fn a_kick_asked_of_one_node_closes_the_login_on_the_node_that_holds_it() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let mut n1 = node_with_token(&redis, "n1", dir.path());
    let mut n2 = node_with_token(&redis, "n2", dir.path());
    let mut alice = login(&n1, "alice");
    let mut bob = login(&n2, "bob");
    let mut carol = login(&n2, "carol");
    n1.wait_remote(2);

    // Without a token: refused, and nothing travels.
    assert_eq!(post(&n1, "/logins/bob/close", None).status, 401);
    // Asked of n1 by a spelling that looks the same: n2 holds bob and closes him.
    let answer = post(&n1, "/logins/Bob/close?reason=spam%20again", Some(OPS));
    assert_eq!(answer.status, 202, "{}", answer.text());
    assert_eq!(
        answer.text(),
        "{\"forwarded\":{\"login\":\"Bob\",\"node\":\"n2\"}}\n"
    );
    bob.expect("notice: disconnected by the operator: spam again");
    bob.expect_closed();
    let audit = n2
        .daemon
        .wait_log(|l| l.contains("kicked by the operator, through another node"))
        .expect("the audit line on the node that closed it");
    assert!(
        audit.contains("by=\"ops\"")
            && audit.contains("node=\"n1\"")
            && audit.contains("login=\"bob\""),
        "{audit}"
    );
    n2.daemon
        .wait_log(|l| l.contains("connection closed") && l.contains("reason=\"kicked\""))
        .expect("bob's close line says kicked");
    n1.daemon
        .wait_log(|l| l.contains("kick sent to the node that holds the login"))
        .expect("the audit line on the node that was asked");
    assert_eq!(n2.metric("achat_kicks_total"), 1.0);

    // The others chat on, across the nodes.
    alice.send("carol: still here?");
    carol.expect("from alice: still here?");
    carol.send("alice: yes");
    alice.expect("from carol: yes");

    // Asking again is harmless: once n1 has heard bob left, the answer is 404.
    let deadline = Instant::now() + WAIT;
    loop {
        let again = post(&n1, "/logins/bob/close", Some(OPS));
        if again.status == 404 {
            break;
        }
        assert_eq!(again.status, 202, "{}", again.text());
        assert!(Instant::now() < deadline, "n1 still forwards kicks for bob");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(post(&n1, "/logins/nobody/close", Some(OPS)).status, 404);
    assert_eq!(n2.metric("achat_kicks_total"), 1.0, "one kick, one close");
}

/// A kick frame: `K1`, then the node, login, token name and reason, each after its length.
fn kick_frame(node: &str, login: &str, by: &str, reason: &[u8]) -> Vec<u8> {
    let mut out = b"K1".to_vec();
    out.push(node.len() as u8);
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(&(login.len() as u16).to_le_bytes());
    out.extend_from_slice(login.as_bytes());
    out.push(by.len() as u8);
    out.extend_from_slice(by.as_bytes());
    out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    out.extend_from_slice(reason);
    out
}

#[test]
fn forged_kicks_that_break_the_rules_close_nobody() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let n1 = node_with_token(&redis, "n1", dir.path());
    let n2 = node_with_token(&redis, "n2", dir.path());
    let mut alice = login(&n1, "alice");
    let mut bob = login(&n2, "bob");
    n1.wait_remote(1);
    let good = kick_frame("n1", "bob", "ops", b"");
    let forged: Vec<Vec<u8>> = vec![
        good[..good.len() - 1].to_vec(),
        [good.as_slice(), b"x"].concat(),
        kick_frame("n1", "bob", "ops", b"bye\r\nfrom alice: forged"),
        kick_frame("n1", "bob", "ops\x1b[2J", b""),
        kick_frame("n 1", "bob", "ops", b""),
        kick_frame("n1", "bob:x", "ops", b""),
        kick_frame("n1", "bob", "", b""),
        kick_frame("n1", "bob", "ops", &[0xff, 0xfe]),
    ];
    for frame in &forged {
        redis.command(&[b"PUBLISH", b"achat:to:n2", frame]);
    }
    // A well-formed kick for a login n2 does not hold closes nobody either.
    redis.command(&[
        b"PUBLISH",
        b"achat:to:n2",
        &kick_frame("n1", "nobody", "ops", b""),
    ]);
    let deadline = Instant::now() + WAIT;
    while n2.metric("achat_cluster_refused_total{reason=\"kick\"}") < forged.len() as f64 {
        assert!(
            Instant::now() < deadline,
            "the forged kicks were not all refused"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        n2.metric("achat_cluster_refused_total{reason=\"kick\"}"),
        forged.len() as f64
    );
    alice.send("bob: still connected?");
    bob.expect("from alice: still connected?");
    assert_eq!(n2.metric("achat_kicks_total"), 0.0);
}

//! ARCHITECTURE §1 over TCP against the real binary: the wire protocol and its hardening rules,
//! as a user on a socket sees them.
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{Client, Daemon};

/// Asserts that the server answers with one `error: ...` line starting with `prefix`,
/// then closes the connection.
fn expect_error_then_close(c: &mut Client, prefix: &str) {
    let rest = c.read_until_closed();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with(prefix) && text.ends_with('\n') && text.lines().count() == 1,
        "expected one line starting with {prefix:?} and then the close, got {text:?}"
    );
}

#[test]
fn two_hundred_clients_every_message_delivered_exactly_once_in_order() {
    const CLIENTS: usize = 200;
    const SEQS: usize = 10;
    const FANOUT: usize = 3;
    let d = Daemon::start();
    let name = |i: usize| format!("u{}", i % CLIENTS);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|i| d.login(&name(i))).collect();

    // Each client sends SEQS numbered messages, each to the next FANOUT clients, with
    // the senders interleaved so the router sees them mixed.
    for seq in 0..SEQS {
        for (i, c) in clients.iter_mut().enumerate() {
            let to: Vec<String> = (1..=FANOUT).map(|k| name(i + k)).collect();
            c.send(&format!("{}: {} {}", to.join(", "), i, seq));
        }
    }

    for (j, c) in clients.iter_mut().enumerate() {
        let mut next_seq: HashMap<usize, usize> = HashMap::new();
        for _ in 0..SEQS * FANOUT {
            let line = c.line().expect("the connection closed early");
            let (from, text) = line
                .strip_prefix("from ")
                .and_then(|l| l.split_once(": "))
                .unwrap_or_else(|| panic!("{} got an unexpected line {line:?}", name(j)));
            let (sender, seq) = text.split_once(' ').unwrap();
            let (sender, seq): (usize, usize) = (sender.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(from, name(sender), "{line:?}");
            assert!(
                (1..=FANOUT).any(|k| (sender + k) % CLIENTS == j),
                "{} got a message meant for others: {line:?}",
                name(j)
            );
            let expected = next_seq.entry(sender).or_insert(0);
            assert_eq!(
                seq,
                *expected,
                "{} got {line:?} out of order or twice",
                name(j)
            );
            *expected += 1;
        }
        assert_eq!(next_seq.len(), FANOUT);
        assert!(next_seq.values().all(|&n| n == SEQS));
    }
    // Nothing more is pending for anyone: a message to self is the very next line.
    for (j, c) in clients.iter_mut().enumerate() {
        c.send(&format!("{}: done", name(j)));
        c.expect(&format!("from {}: done", name(j)));
    }
}

#[test]
fn a_taken_login_is_refused_and_the_first_connection_keeps_it() {
    let mut d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");

    let mut impostor = d.connect();
    impostor.send("alice");
    impostor.send("bob: sent as alice?");
    expect_error_then_close(&mut impostor, "error: login \"alice\" is taken");

    // The first alice still works, and nothing was sent in her name.
    alice.send("bob: the real alice");
    bob.expect("from alice: the real alice");
    bob.send("alice: hi alice");
    alice.expect("from bob: hi alice");

    // Once alice has gone, the login can be taken again.
    drop(alice);
    d.wait_log(|l| l.contains("connection closed") && l.contains("login=\"alice\"}"))
        .expect("alice's connection never closed");
    let mut alice2 = d.login("alice");
    bob.send("alice: welcome back");
    alice2.expect("from bob: welcome back");
}

#[test]
fn invalid_logins_get_an_error_then_close() {
    let d = Daemon::with_toml("[limits]\nmax_login_bytes = 8\n");
    let bad: &[&[u8]] = &[
        b"\n",
        b"\r\n",
        b"abcdefghi\n", // 9 bytes
        b"a b\n",
        b" alice\n",
        b"a\tb\n",
        b"a:b\n",
        b"a,b\n",
        b"a\x07b\n",
        b"a\x1bb\n",
        "a\u{a0}b\n".as_bytes(),
    ];
    for line in bad {
        let mut c = d.connect();
        c.send_raw(line).unwrap();
        let rest = c.read_until_closed();
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.starts_with("error: ") && text.lines().count() == 1,
            "login {:?}: expected an error line then the close, got {text:?}",
            String::from_utf8_lossy(line)
        );
    }
    // Exactly max_login_bytes is fine, and multi-byte characters count in bytes.
    let mut c = d.login("abcdefgh");
    c.send("abcdefgh: still here");
    c.expect("from abcdefgh: still here");
    let mut c = d.connect();
    c.send("éééé\u{e9}"); // 10 bytes
    expect_error_then_close(&mut c, "error: ");
    d.login("éééé"); // 8 bytes
}

#[test]
fn a_line_without_a_colon_is_answered_and_the_connection_stays() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    alice.send("hello everybody");
    let line = alice.line().unwrap();
    assert!(line.starts_with("error: "), "{line:?}");
    alice.send("alice: still connected");
    alice.expect("from alice: still connected");
}

#[test]
fn too_many_recipients_is_refused_and_nothing_is_delivered() {
    let d = Daemon::with_toml("[limits]\nmax_recipients = 3\n");
    let mut a = d.login("a");
    let mut b = d.login("b");
    let mut c = d.login("c");
    a.send("b, c, a, zed: too many");
    a.expect("error: too many recipients");
    // A name listed twice still counts toward the limit.
    a.send("b, b, b, b: repeats");
    a.expect("error: too many recipients");
    // Exactly max_recipients is fine; the next line each gets is this one, so nothing
    // from the refused lines was delivered.
    a.send("b, c, a: three");
    b.expect("from a: three");
    c.expect("from a: three");
    a.expect("from a: three");
}

#[test]
fn an_unknown_recipient_is_reported_and_the_others_still_get_it() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let mut carol = d.login("carol");
    alice.send("bob, zed, carol: hi all");
    alice.expect("error: no such user \"zed\"");
    bob.expect("from alice: hi all");
    carol.expect("from alice: hi all");
    // The connection stays.
    alice.send("alice: ok");
    alice.expect("from alice: ok");
}

#[test]
fn crlf_line_endings_are_accepted() {
    let d = Daemon::start();
    let mut bob = d.login("bob");
    let mut carol = d.connect();
    carol
        .send_raw(b"carol\r\nbob, carol:  hello over crlf \r\n")
        .unwrap();
    bob.expect("from carol: hello over crlf");
    carol.expect("from carol: hello over crlf");
}

#[test]
fn names_and_text_are_trimmed_and_a_name_listed_twice_gets_one_copy() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    alice.send("  bob ,bob,, bob :   twice?  ");
    bob.expect("from alice: twice?");
    alice.send("bob: next");
    bob.expect("from alice: next");
    // Only the first colon splits.
    alice.send("bob: a: b");
    bob.expect("from alice: a: b");
}

#[test]
fn sending_to_yourself_works() {
    let d = Daemon::start();
    let mut alice = d.connect();
    alice.send("alice");
    alice.send("alice: note to self");
    alice.expect("from alice: note to self");
}

#[test]
fn messages_from_one_sender_arrive_in_order() {
    const N: usize = 2000;
    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    // All in one write, so many lines arrive in one read.
    let mut burst = String::new();
    for i in 0..N {
        burst.push_str(&format!("bob: {i}\n"));
    }
    alice.send_raw(burst.as_bytes()).unwrap();
    for i in 0..N {
        bob.expect(&format!("from alice: {i}"));
    }
    // One line at a time, too.
    for i in 0..100 {
        alice.send(&format!("bob: single {i}"));
    }
    for i in 0..100 {
        bob.expect(&format!("from alice: single {i}"));
    }
}

#[test]
fn invalid_utf8_gets_an_error_then_close() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    alice.send_raw(b"bob: caf\xc3\n").unwrap();
    expect_error_then_close(&mut alice, "error: invalid utf-8");
    // Bob got nothing from it and still chats.
    bob.send("bob: fine");
    bob.expect("from bob: fine");

    // In the login line too.
    let mut c = d.connect();
    c.send_raw(b"\xff\xfe\n").unwrap();
    expect_error_then_close(&mut c, "error: invalid utf-8");
}

#[test]
fn a_line_of_exactly_max_line_bytes_is_fine_one_byte_more_is_not() {
    let d = Daemon::with_toml("[limits]\nmax_line_bytes = 100\n");
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let text = "x".repeat(100 - "bob: ".len());
    let line = format!("bob: {text}");
    assert_eq!(line.len(), 100);
    alice.send(&line);
    bob.expect(&format!("from alice: {text}"));
    // With \r\n the \r does not count either.
    alice.send_raw(format!("{line}\r\n").as_bytes()).unwrap();
    bob.expect(&format!("from alice: {text}"));

    alice.send(&format!("{line}y"));
    expect_error_then_close(&mut alice, "error: line too long");
    // Nothing of it was delivered.
    bob.send("bob: after");
    bob.expect("from bob: after");

    // Before its newline arrives, too: 101 bytes and no \n yet.
    let mut carol = d.login("carol");
    carol.send_raw(format!("{line}z").as_bytes()).unwrap();
    expect_error_then_close(&mut carol, "error: line too long");
}

/// A client sends 50 MB without a newline. Its connection is closed; the daemon's memory
/// stays bounded; another pair keeps chatting during and after.
#[test]
fn a_fifty_megabyte_line_is_cut_off_and_memory_stays_bounded() {
    const TOTAL: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    /// Allowed growth of the daemon's resident memory over the test, in KiB.
    const BOUND_KIB: u64 = 16 << 10;

    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let mut flood = d.login("flood");
    let before = d.rss_kib();
    assert!(before > 0, "no RSS figure from /proc");

    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let mut writer = flood.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; CHUNK];
        let mut sent = 0;
        while sent < TOTAL {
            // Fails once the server has closed the connection: that is the point.
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += CHUNK;
        }
        done2.store(true, Ordering::SeqCst);
        sent
    });

    let mut peak = before;
    let mut rounds = 0;
    while !done.load(Ordering::SeqCst) || rounds < 20 {
        alice.send(&format!("bob: round {rounds}"));
        bob.expect(&format!("from alice: round {rounds}"));
        bob.send(&format!("alice: back {rounds}"));
        alice.expect(&format!("from bob: back {rounds}"));
        peak = peak.max(d.rss_kib());
        rounds += 1;
        assert!(rounds < 100_000, "the flood never ended");
    }
    let sent = sender.join().unwrap();
    assert!(
        sent < TOTAL,
        "the daemon took all {TOTAL} bytes of one line"
    );
    let rest = flood.read_until_closed();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest == "error: line too long\n",
        "unexpected answer to the flood: {rest:?}"
    );

    alice.send("bob: after the flood");
    bob.expect("from alice: after the flood");
    let after = d.rss_kib();
    peak = peak.max(after);
    eprintln!(
        "RSS before {before} KiB, peak {peak} KiB, after {after} KiB; \
         flood sent {sent} bytes before the close; {rounds} chat rounds"
    );
    assert!(
        peak <= before + BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB (bound: +{BOUND_KIB} KiB)"
    );
}

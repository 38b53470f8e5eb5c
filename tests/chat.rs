//! ARCHITECTURE §1 over TCP against the real binary: two users chat.
mod common;
use common::Daemon;

#[test]
fn two_clients_chat() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    alice.send("bob: hello bob");
    bob.expect("from alice: hello bob");
    bob.send("alice, bob: hi both");
    alice.expect("from bob: hi both");
    bob.expect("from bob: hi both");
}

#[test]
fn error_answers_keep_their_place_among_the_senders_own_lines() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    alice
        .send_raw(b"alice: one\nno colon here\nalice, zed: two\nalice: three\n")
        .unwrap();
    alice.expect("from alice: one");
    alice.expect("error: not a message: write \"name1, name2: text\"");
    alice.expect("from alice: two");
    alice.expect("error: no such user \"zed\"");
    alice.expect("from alice: three");
}

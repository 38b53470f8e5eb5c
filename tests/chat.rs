//! DESIGN §1 over TCP against the real binary: two users chat.
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

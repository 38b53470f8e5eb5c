//! With `[auth]`, a user who proves the password takes their own login over from an older
//! connection (one left stale by a dropped network, as IRC's ghost command does), against
//! the real binary: the older connection is told and closed, the newer one chats, and a
//! wrong password takes nothing over.
mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::users::{try_login, UsersFile};
use common::{Client, WAIT};

#[test]
fn the_right_password_takes_a_login_over_and_a_wrong_one_does_not() {
    let users = UsersFile::new(&[("alice", "secret"), ("bob", "hunter2")]);
    let mut d = users.daemon("");
    let stale = TcpStream::connect(d.addr).unwrap();
    let granted = try_login(&stale, "alice", "secret", WAIT);
    assert_eq!(granted.as_deref(), Some("from alice: ready?"));
    let mut stale = Client::from_stream(stale);

    // A wrong password takes nothing over.
    let thief = TcpStream::connect(d.addr).unwrap();
    let refused = try_login(&thief, "alice", "guess", WAIT);
    assert_eq!(refused.as_deref(), Some("error: authentication failed"));

    // The right one does: the new connection chats as alice, the old one is told and closed.
    let fresh = TcpStream::connect(d.addr).unwrap();
    let granted = try_login(&fresh, "alice", "secret", WAIT);
    assert_eq!(granted.as_deref(), Some("from alice: ready?"));
    stale.expect("notice: logged in from another connection");
    stale.expect_closed();
    let mut fresh = Client::from_stream(fresh);
    let bob = TcpStream::connect(d.addr).unwrap();
    assert_eq!(
        try_login(&bob, "bob", "hunter2", WAIT).as_deref(),
        Some("from bob: ready?")
    );
    let mut bob = Client::from_stream(bob);
    bob.send("alice: still there?");
    fresh.expect("from bob: still there?");
    fresh.send("bob: yes, on my phone now");
    bob.expect("from alice: yes, on my phone now");
    let close = d
        .wait_log_for(Duration::from_secs(5), |l| {
            l.contains("connection closed") && l.contains("reason=\"replaced\"")
        })
        .unwrap_or_else(|| {
            panic!(
                "no close line for the replaced connection:\n{}",
                d.log_text()
            )
        });
    assert!(close.contains("login=\"alice\""), "{close}");
}

#[test]
fn without_auth_the_first_connection_keeps_its_login() {
    let d = common::Daemon::start();
    let mut first = d.login("alice");
    let mut second = Client::connect(d.addr);
    second.send("alice");
    second.expect("error: login \"alice\" is taken");
    first.send("alice: still mine");
    first.expect("from alice: still mine");
}

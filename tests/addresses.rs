//! Client addresses as the per-address limits count them: `::ffff:127.0.0.1` (an IPv4
//! client of a dual-stack listener) is the same client as `127.0.0.1`, for
//! `max_connections_per_ip` and for `[auth] max_failures_per_ip`, and the mapped loopback
//! is loopback for the warning about passwords in clear.
mod common;

use common::users::UsersFile;
use common::{Client, Daemon, WAIT};
use std::net::{SocketAddr, TcpStream};

/// Every chat address the daemon reports (`listening on ADDR` lines), once the
/// dual-stack one (the second) is among them.
fn chat_addrs(d: &mut Daemon) -> Vec<SocketAddr> {
    d.wait_log(|l| l.contains("listening on [::]"))
        .unwrap_or_else(|| panic!("no dual-stack listener; log:\n{}", d.log_text()));
    d.log_text()
        .lines()
        .filter(|l| l.contains("listening on ") && !l.contains("admin"))
        .filter_map(|l| l.split("listening on ").nth(1))
        .filter_map(|rest| rest.split([' ', '"']).next())
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// The IPv4 listener's address and the dual-stack listener's port reached through the
/// v4-mapped loopback (`[::ffff:127.0.0.1]:PORT`): the daemon sees `127.0.0.1` on the
/// first and `::ffff:127.0.0.1` on the second.
fn both_ways(d: &mut Daemon) -> (SocketAddr, SocketAddr) {
    let addrs = chat_addrs(d);
    let v4 = *addrs
        .iter()
        .find(|a| a.is_ipv4())
        .expect("an IPv4 listener");
    let v6 = addrs
        .iter()
        .find(|a| a.is_ipv6())
        .expect("a dual-stack listener");
    let mapped = SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), v6.port());
    (v4, mapped)
}

const BOTH: &str = "[server]\nlisten = [\"127.0.0.1:0\", \"[::]:0\"]\n";

#[test]
fn a_mapped_ipv4_client_counts_as_the_same_address_for_the_connection_cap() {
    let mut d = Daemon::with_toml(&format!("{BOTH}max_connections_per_ip = 2\n"));
    let (v4, mapped) = both_ways(&mut d);
    let mut first = Client::connect(v4);
    first.send("first");
    first.send("first: here");
    first.expect("from first: here");
    let mut second = Client::from_stream(TcpStream::connect_timeout(&mapped, WAIT).unwrap());
    second.send("second");
    second.send("second: here");
    second.expect("from second: here");
    for addr in [v4, mapped] {
        let mut third = Client::from_stream(TcpStream::connect_timeout(&addr, WAIT).unwrap());
        third.expect("error: too many connections from your address");
        third.expect_closed();
    }
}

#[test]
fn a_mapped_ipv4_client_counts_as_the_same_address_for_the_failure_limit() {
    let users = UsersFile::new(&[("alice", "wonderland")]);
    let mut d = users.daemon(&format!("max_failures_per_ip = 2\n{BOTH}"));
    let (v4, mapped) = both_ways(&mut d);
    for addr in [v4, mapped] {
        let mut c = Client::from_stream(TcpStream::connect_timeout(&addr, WAIT).unwrap());
        c.send("alice guess");
        c.expect("error: authentication failed");
    }
    for addr in [v4, mapped] {
        let mut c = Client::from_stream(TcpStream::connect_timeout(&addr, WAIT).unwrap());
        c.send("alice wonderland");
        c.expect("error: too many failed logins");
    }
}

#[test]
fn the_mapped_loopback_is_loopback_for_the_warning_about_passwords_in_clear() {
    let users = UsersFile::new(&[("alice", "wonderland")]);
    let d = users.daemon("[server]\nlisten = \"[::ffff:127.0.0.1]:0\"\n");
    let log = d.log_text();
    assert!(log.contains("logins are authenticated"), "{log}");
    assert!(!log.contains("not loopback"), "{log}");
    // The check still warns about an address that is not loopback.
    let d = users.daemon("[server]\nlisten = \"[::]:0\"\n");
    let log = d.log_text();
    assert!(log.contains("plaintext and not loopback"), "{log}");
}

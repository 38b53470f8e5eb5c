//! Timed bans and the connect-rate throttle, against the real binary: a ban set over the
//! admin endpoint closes what it covers at once, refuses it at accept or at login with a
//! clear line, outlives a reload, and ends when lifted; an address that reconnects too
//! often is refused until its window ends, and listed addresses never are.
mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::{Client, Daemon, HttpResponse};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn daemon(extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, format!("[tokens]\nops = \"{TOKEN}\"\n")).unwrap();
    let d = Daemon::with_toml(&format!(
        "{extra}[admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"{}\"\n",
        tokens.display()
    ));
    (d, dir)
}

fn ask(admin: SocketAddr, method: &str, target: &str) -> HttpResponse {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    common::http_raw(admin, request.as_bytes()).expect("an answer")
}

/// A client from `source` (a loopback address) that sends `name` as its login.
fn from(source: [u8; 4], addr: SocketAddr) -> Client {
    Client::from_stream(common::connect_from(Ipv4Addr::from(source), addr).expect("connect"))
}

#[test]
fn a_login_ban_closes_refuses_outlives_a_reload_and_is_lifted() {
    let (mut d, _dir) = daemon("");
    let admin = d.admin_addr();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let set = ask(admin, "POST", "/bans?login=Alice&for=1h&reason=spam");
    assert_eq!(set.status, 200, "{}", set.text());
    assert!(set.text().contains("\"closed\":1"), "{}", set.text());
    alice.expect("notice: login \"Alice\" is banned: spam");
    alice.expect_closed();
    // At login: refused with the ban's line, whatever the look.
    let mut again = d.connect();
    again.send("aLice");
    again.expect("error: login \"aLice\" is banned: spam");
    again.expect_closed();
    let listed = ask(admin, "GET", "/bans").text();
    assert!(
        listed.contains("\"login\":\"Alice\"") && listed.contains("\"by\":\"ops\""),
        "{listed}"
    );
    // A reload keeps it.
    d.signal(libc::SIGHUP);
    d.wait_log(|l| l.contains("reload") && (l.contains("applied") || l.contains("nothing")))
        .expect("the reload's line");
    let mut after_reload = d.connect();
    after_reload.send("alice");
    assert!(after_reload.line().unwrap().contains("is banned"));
    // Lifted: back.
    let id = listed
        .split("\"id\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(ask(admin, "POST", &format!("/bans/{id}/lift")).status, 200);
    assert_eq!(ask(admin, "POST", &format!("/bans/{id}/lift")).status, 404);
    let mut alice = d.login("alice");
    alice.send("bob: back");
    bob.expect("from alice: back");
    let samples = common::scrape_with(admin, TOKEN);
    assert_eq!(
        common::sample(
            &samples,
            "achat_connections_refused_total{reason=\"banned\"}"
        ),
        2.0
    );
}

#[test]
fn an_address_ban_covers_its_network_at_once_and_at_accept() {
    let (mut d, _dir) = daemon("");
    let admin = d.admin_addr();
    let mut carol = from([127, 0, 0, 2], d.addr);
    carol.send("carol");
    carol.send("carol: hi");
    carol.expect("from carol: hi");
    let mut dave = d.login("dave");
    let set = ask(admin, "POST", "/bans?address=127.0.0.2&for=10m");
    assert_eq!(set.status, 200, "{}", set.text());
    carol.expect("notice: your address is banned");
    carol.expect_closed();
    let mut refused = from([127, 0, 0, 2], d.addr);
    refused.expect("error: your address is banned");
    refused.expect_closed();
    // Another address is not covered.
    let mut erin = from([127, 0, 0, 3], d.addr);
    erin.send("erin");
    erin.send("dave: hello");
    dave.expect("from erin: hello");
    // What cannot be a ban is refused with the reason.
    assert_eq!(ask(admin, "POST", "/bans").status, 400);
    assert_eq!(ask(admin, "POST", "/bans?address=nowhere").status, 400);
    assert_eq!(ask(admin, "POST", "/bans?login=x&for=0s").status, 400);
    assert_eq!(
        ask(admin, "POST", "/bans?login=x&address=127.0.0.9").status,
        400
    );
    let no_token = b"POST /bans?address=127.0.0.1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(common::http_raw(admin, no_token).unwrap().status, 401);
}

#[test]
fn an_address_that_reconnects_too_often_waits_and_listed_ones_never_do() {
    let (d, _dir) = daemon(
        "[server]\nconnects_per_address = 3\nconnects_window = \"10m\"\nconnects_exempt = [\"127.0.0.1\"]\n",
    );
    for i in 0..3 {
        let mut c = from([127, 0, 0, 4], d.addr);
        c.send(&format!("t{i}"));
        c.send(&format!("t{i}: in"));
        c.expect(&format!("from t{i}: in"));
    }
    let mut fourth = from([127, 0, 0, 4], d.addr);
    fourth.expect("error: too many connections from your address, try again later");
    fourth.expect_closed();
    // Exempt: any number.
    for i in 0..10 {
        let mut c = d.login(&format!("e{i}"));
        c.send(&format!("e{i}: ok"));
        c.expect(&format!("from e{i}: ok"));
    }
}

/// A PROXY v1 header for `client` (`ip:port`), as a balancer sends it.
fn proxy_v1(client: &str) -> Vec<u8> {
    let (ip, port) = client.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 8080\r\n").into_bytes()
}

#[test]
fn behind_a_balancer_the_ban_and_the_throttle_see_the_client_not_the_balancer() {
    let (mut d, _dir) = daemon(
        "[server]\nlisten = \"127.0.0.1:0\"\nproxy_protocol_from = [\"127.0.0.1\"]\nconnects_per_address = 2\nconnects_exempt = []\n",
    );
    let admin = d.admin_addr();
    let via = |client: &str, name: &str| {
        let mut c = d.connect();
        c.send_raw(&[proxy_v1(client), format!("{name}\n").into_bytes()].concat())
            .unwrap();
        c
    };
    let mut far = via("198.51.100.7:5000", "far");
    far.send("far: here");
    far.expect("from far: here");
    let set = ask(admin, "POST", "/bans?address=198.51.100.0/24&for=1h");
    assert_eq!(set.status, 200, "{}", set.text());
    far.expect("notice: your address is banned");
    far.expect_closed();
    let mut again = via("198.51.100.9:5001", "again");
    again.expect("error: your address is banned");
    again.expect_closed();
    // The balancer's own address is not banned, and the throttle counts each client: a
    // third client address through the same balancer still gets in twice.
    for i in 0..2 {
        let mut near = via(&format!("203.0.113.5:{}", 6000 + i), &format!("near{i}"));
        near.send(&format!("near{i}: in"));
        near.expect(&format!("from near{i}: in"));
    }
    let mut third = via("203.0.113.5:6002", "near2");
    third.expect("error: too many connections from your address, try again later");
}

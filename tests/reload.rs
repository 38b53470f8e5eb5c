//! SIGHUP (ARCHITECTURE §3 and §11) against the real binary: a renewed certificate reaches new
//! connections while an old one keeps chatting; new limits and a new log level apply
//! without dropping anyone; a broken file changes nothing; a change that needs a restart
//! is reported and ignored.
mod common;

use std::fs;

use common::tlsclient::TlsClient;
use common::{Daemon, Pki};
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::CertificateDer;

const SIGHUP: i32 = 1;

/// Rewrites the daemon's config file and sends SIGHUP; returns the reload's log line.
fn reload(d: &mut Daemon, toml: &str, expect: &str) -> String {
    let seen = d.log.lock().unwrap().len();
    fs::write(&d.config_path, toml).unwrap();
    d.signal(SIGHUP);
    let line = d
        .wait_log(|l| l.contains(expect) && !l.is_empty())
        .unwrap_or_else(|| panic!("no {expect:?} after SIGHUP; log:\n{}", d.log_text()));
    // Only lines logged after this SIGHUP count.
    let later: Vec<String> = d.log.lock().unwrap()[seen..].to_vec();
    assert!(
        later.iter().any(|l| l == &line),
        "{line} was logged before the SIGHUP"
    );
    line
}

fn metric(d: &mut Daemon, name: &str) -> f64 {
    let admin = d.admin_addr();
    common::sample(&common::scrape(admin), name)
}

#[test]
fn a_renewed_certificate_reaches_new_connections_while_an_old_one_keeps_chatting() {
    let pki = Pki::new();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        pki.toml(false)
    );
    let mut d = Daemon::with_toml(&toml);
    let addr = d.tls_addr();
    let first = fs::read(pki.path("server.pem")).unwrap();
    let mut old = TlsClient::login(addr, &pki, "old");
    assert_eq!(old.server_certificate().as_ref(), der(&first).as_ref());
    pki.renew_server();
    // The same file names, as a renewal leaves them, so only the contents changed.
    let current = fs::read_to_string(&d.config_path).unwrap();
    reload(&mut d, &current, "configuration reloaded");
    let renewed = fs::read(pki.path("server.pem")).unwrap();
    assert_ne!(first, renewed);
    let mut new = TlsClient::login(addr, &pki, "new");
    assert_eq!(new.server_certificate().as_ref(), der(&renewed).as_ref());
    // The old connection still chats, with the new one too.
    old.send("new: from before the renewal");
    new.expect("from old: from before the renewal");
    new.send("old: from after it");
    old.expect("from new: from after it");
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"ok\"}"),
        1.0
    );
}

fn der(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem).expect("a PEM certificate")
}

#[test]
fn new_limits_and_log_level_apply_without_dropping_anyone() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let mut d = Daemon::with_toml(base);
    let mut alice = d.login("alice");
    let long = format!("alice: {}", "x".repeat(200));
    alice.send(&long);
    alice.expect(&format!("from {long}"));
    let line = reload(
        &mut d,
        &format!("{base}[limits]\nmax_line_bytes = 100\n[log]\nlevel = \"debug\"\n"),
        "configuration reloaded",
    );
    assert!(
        line.contains("limits") && line.contains("log.level"),
        "{line}"
    );
    // A connection from before keeps its limits and its chat.
    alice.send(&long);
    alice.expect(&format!("from {long}"));
    // A new one gets the new limits.
    let mut bob = d.login("bob");
    bob.send(&format!("bob: {}", "y".repeat(200)));
    bob.expect("error: line too long");
    // Debug events now show: a refused line is logged at debug.
    alice.send("no colon here");
    alice.expect("error: not a message: write \"name1, name2: text\"");
    assert!(
        d.wait_log(|l| l.contains("DEBUG") && l.contains("line refused"))
            .is_some(),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_broken_file_changes_nothing_and_says_where_it_is_broken() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let mut d = Daemon::with_toml(base);
    let mut alice = d.login("alice");
    let line = reload(
        &mut d,
        &format!("{base}[limits]\nmax_line_bytes = 100\nmax_lines = 3\n"),
        "reload failed",
    );
    assert!(
        line.contains("line 7") && line.contains("limits.max_lines"),
        "{line}"
    );
    // max_line_bytes = 100 was not applied either: a new client sends 200 bytes.
    let mut bob = d.login("bob");
    let long = format!("alice: {}", "z".repeat(200));
    bob.send(&long);
    alice.expect(&format!("from bob: {}", "z".repeat(200)));
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"error\"}"),
        1.0
    );
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"ok\"}"),
        0.0
    );
}

#[test]
fn a_listen_change_is_reported_as_needing_a_restart() {
    let mut d = Daemon::with_toml("[server]\nlisten = \"127.0.0.1:0\"\n");
    let elsewhere = common::free_addr();
    let line = reload(
        &mut d,
        &format!("[server]\nlisten = \"{elsewhere}\"\n"),
        "needs a restart",
    );
    assert!(line.contains("server.listen"), "{line}");
    // Still where it was; nothing listens at the new address.
    let mut alice = d.login("alice");
    alice.send("alice: still here");
    alice.expect("from alice: still here");
    assert!(std::net::TcpStream::connect(elsewhere).is_err());
}

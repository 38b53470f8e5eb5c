//! The admin endpoint has no authentication and serves logins and client addresses: the
//! daemon warns once at start when it listens beyond loopback (the container config used
//! to suggest 0.0.0.0:9100 without a word about it).
mod common;

use common::Daemon;

/// Starts a daemon with its admin endpoint on `admin`, logs in once (every start-up line
/// is in the log before that login's), and gives back the admin warnings.
fn admin_warnings(admin: &str) -> Vec<String> {
    let mut d = Daemon::with_toml(&format!("[admin]\nlisten = \"{admin}\"\n"));
    d.admin_addr();
    let _alice = d.login("alice");
    d.wait_log(|l| l.contains("logged in") && l.contains("login=\"alice\""))
        .expect("alice's login");
    let log = d.log_text();
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("admin"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_admin_endpoint_beyond_loopback_is_a_warning_at_start() {
    let warnings = admin_warnings("0.0.0.0:0");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let line = &warnings[0];
    assert!(line.contains("0.0.0.0:"), "the address is named: {line}");
    assert!(line.contains("not loopback"), "{line}");
}

#[test]
fn an_admin_endpoint_on_loopback_is_no_warning() {
    assert_eq!(admin_warnings("127.0.0.1:0"), Vec::<String>::new());
    // The IPv4 loopback as an IPv6 socket sees it is loopback too.
    assert_eq!(admin_warnings("[::ffff:127.0.0.1]:0"), Vec::<String>::new());
}

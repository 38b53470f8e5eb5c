//! What an operator can do to a running daemon through its admin endpoint, against the
//! real binary: tokens (who may ask), kicks (by id and by login), lame duck mode and the
//! drain asked over HTTP. Each act is checked from the clients' side (what they read,
//! when they are closed) and from the daemon's (its metrics and audit lines).
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{Daemon, HttpResponse};

const OPS: &str = "0123456789abcdef0123456789abcdef";
const PROM: &str = "fedcba9876543210fedcba9876543210";

/// A daemon whose admin endpoint wants the tokens `ops` and `prometheus`.
fn with_tokens(extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    fs::write(
        &tokens,
        format!("[tokens]\nops = \"{OPS}\"\nprometheus = \"{PROM}\"\n"),
    )
    .unwrap();
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"{}\"\n{extra}",
        tokens.display()
    );
    (Daemon::with_toml(&toml), dir)
}

/// `method path` with an optional bearer token; the response.
fn ask(d: &mut Daemon, method: &str, path: &str, token: Option<&str>) -> HttpResponse {
    let admin = d.admin_addr();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    common::http_raw(admin, request.as_bytes()).expect("an answer")
}

/// The id `/connections` gives the connection logged in as `login`.
fn id_of(d: &mut Daemon, login: &str) -> u64 {
    let json = ask(d, "GET", &format!("/connections?login={login}"), Some(OPS)).text();
    let at = json.find("\"id\":").expect("a connection") + 5;
    json[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn metric(d: &mut Daemon, name: &str) -> f64 {
    let admin = d.admin_addr();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {PROM}\r\nConnection: close\r\n\r\n");
    let text = common::http_raw(admin, request.as_bytes()).unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn paths_need_a_token_the_file_holds_except_the_open_ones() {
    let (mut d, _dir) = with_tokens("");
    assert_eq!(ask(&mut d, "GET", "/healthz", None).status, 200);
    assert_eq!(ask(&mut d, "GET", "/readyz", None).status, 200);
    let refused = ask(&mut d, "GET", "/metrics", None);
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(
        ask(&mut d, "GET", "/connections", Some("not-a-token-at-all")).status,
        401
    );
    assert_eq!(
        ask(&mut d, "POST", "/connections/1/close", None).status,
        401
    );
    assert_eq!(ask(&mut d, "POST", "/drain", Some(&OPS[1..])).status, 401);
    assert_eq!(ask(&mut d, "GET", "/metrics", Some(PROM)).status, 200);
    assert_eq!(ask(&mut d, "GET", "/connections", Some(OPS)).status, 200);
    assert_eq!(metric(&mut d, "achat_admin_unauthorized_total"), 4.0);
    // Nothing of the refused requests reached the daemon: it still serves.
    let mut alice = d.login("alice");
    alice.send("alice: hi");
    alice.expect("from alice: hi");
}

#[test]
fn a_kicked_client_is_told_why_closed_and_counted_and_others_chat_on() {
    let (mut d, _dir) = with_tokens("");
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let id = id_of(&mut d, "bob");
    let kicked = ask(
        &mut d,
        "POST",
        &format!("/connections/{id}/close?reason=spam+links"),
        Some(OPS),
    );
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    assert!(
        kicked
            .text()
            .contains(&format!("{{\"id\":{id},\"login\":\"bob\"}}")),
        "{}",
        kicked.text()
    );
    bob.expect("notice: disconnected by the operator: spam links");
    bob.expect_closed();
    // Asked again: the connection is gone (or still closing): never a second notice.
    let again = ask(
        &mut d,
        "POST",
        &format!("/connections/{id}/close"),
        Some(OPS),
    )
    .status;
    assert!(again == 404 || again == 200, "{again}");
    assert_eq!(
        ask(&mut d, "POST", "/connections/999999/close", Some(OPS)).status,
        404
    );
    alice.send("alice: still here");
    alice.expect("from alice: still here");
    alice.send("bob: gone?");
    assert!(alice.line().unwrap().starts_with("error: no such user"));
    let line = d
        .wait_log(|l| l.contains("connection kicked by the operator"))
        .expect("an audit line");
    assert!(
        line.contains("by=\"ops\"") && line.contains("login=\"bob\""),
        "{line}"
    );
    let closed = d
        .wait_log(|l| l.contains("connection closed") && l.contains("reason=\"kicked\""))
        .expect("a close line");
    assert!(closed.contains(&format!("conn={id} ")), "{closed}");
    assert_eq!(
        metric(&mut d, "achat_connections_closed_total{reason=\"kicked\"}"),
        1.0
    );
}

#[test]
fn every_connection_of_a_login_is_closed_by_its_name() {
    let (mut d, _dir) = with_tokens("");
    let mut carol = d.login("carol");
    let mut dave = d.login("dave");
    let answer = ask(&mut d, "POST", "/logins/Carol/close", Some(OPS));
    assert_eq!(answer.status, 200, "{}", answer.text());
    carol.expect("notice: disconnected by the operator");
    carol.expect_closed();
    assert_eq!(
        ask(&mut d, "POST", "/logins/nobody/close", Some(OPS)).status,
        404
    );
    assert_eq!(
        ask(&mut d, "GET", "/logins/dave/close", Some(OPS)).status,
        405
    );
    dave.send("dave: ok");
    dave.expect("from dave: ok");
}

#[test]
fn lame_duck_turns_readyz_503_then_closes_clients_spread_out_then_drains() {
    let (mut d, _dir) =
        with_tokens("[shutdown]\ndrain_delay = \"300ms\"\nlame_duck_duration = \"1s\"\n");
    let mut clients: Vec<_> = (0..5).map(|i| d.login(&format!("user{i}"))).collect();
    let started = ask(&mut d, "POST", "/lame-duck", Some(OPS));
    assert_eq!(started.status, 200, "{}", started.text());
    let asked = Instant::now();
    let ready = ask(&mut d, "GET", "/readyz", None);
    assert_eq!((ready.status, ready.text().trim()), (503, "lame duck"));
    assert_eq!(ask(&mut d, "POST", "/lame-duck", Some(OPS)).status, 409);
    assert_eq!(metric(&mut d, "achat_lame_duck"), 1.0);
    // Within the delay the listeners still accept, and chats go on.
    clients[0].send("user1: still on");
    clients[1].expect("from user0: still on");
    let mut told_at = Vec::new();
    for client in clients.iter_mut() {
        client.set_read_timeout(Duration::from_secs(10));
        client.expect("notice: server going away, reconnect to another");
        told_at.push(asked.elapsed());
        client.expect_closed();
    }
    // Closed one at a time over the second, not all at once: the first after the delay,
    // the last at least half a second later (all at once would be within milliseconds).
    assert!(told_at[0] >= Duration::from_millis(250), "{told_at:?}");
    assert!(
        told_at[4] - told_at[0] >= Duration::from_millis(500),
        "{told_at:?}"
    );
    let status = d
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon exits");
    assert!(status.success(), "{status:?}");
    let log = d.log_text();
    assert!(
        log.contains("accepting stopped") && log.contains("drain finished"),
        "{log}"
    );
    assert_eq!(log.matches("reason=\"lame_duck\"").count(), 5, "{log}");
}

#[test]
fn a_drain_asked_over_http_is_the_drain_sigterm_starts() {
    let (mut d, _dir) = with_tokens("");
    let mut alice = d.login("alice");
    assert_eq!(ask(&mut d, "POST", "/drain", None).status, 401);
    assert_eq!(ask(&mut d, "POST", "/drain", Some(OPS)).status, 200);
    alice.expect("notice: server shutting down");
    let status = d
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon exits");
    assert!(status.success(), "{status:?}");
    let log = d.log_text();
    assert!(log.contains("drain asked by=\"admin token ops\""), "{log}");
}

#[test]
fn tokens_are_re_read_at_a_reload_and_a_bad_file_changes_nothing() {
    let (mut d, dir) = with_tokens("");
    let tokens = dir.path().join("tokens.toml");
    let newer = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    fs::write(&tokens, format!("[tokens]\nops = \"{newer}\"\n")).unwrap();
    let reloaded = ask(&mut d, "POST", "/reload", Some(OPS));
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert!(
        reloaded.text().contains("admin tokens"),
        "{}",
        reloaded.text()
    );
    // The old token is revoked, the new one works.
    assert_eq!(ask(&mut d, "GET", "/connections", Some(OPS)).status, 401);
    assert_eq!(ask(&mut d, "GET", "/connections", Some(newer)).status, 200);
    fs::write(&tokens, "[tokens]\nops = \"short\"\n").unwrap();
    let refused = ask(&mut d, "POST", "/reload", Some(newer));
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert!(
        refused.text().contains("at least 16") && !refused.text().contains("short\""),
        "{}",
        refused.text()
    );
    assert_eq!(ask(&mut d, "GET", "/connections", Some(newer)).status, 200);
}

#[test]
fn sigquit_starts_lame_duck_mode() {
    let (mut d, _dir) =
        with_tokens("[shutdown]\ndrain_delay = \"100ms\"\nlame_duck_duration = \"200ms\"\n");
    let mut alice = d.login("alice");
    d.signal(libc::SIGQUIT);
    alice.set_read_timeout(Duration::from_secs(10));
    alice.expect("notice: server going away, reconnect to another");
    alice.expect_closed();
    let status = d
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon exits");
    assert!(status.success(), "{status:?}");
    assert!(d.log_text().contains("lame duck mode"), "{}", d.log_text());
}

#[test]
fn a_chat_reload_presents_a_token_from_the_tokens_file() {
    let (mut d, _dir) = with_tokens("");
    let admin = d.admin_addr();
    let config = d.config_path.display().to_string();
    let admin_arg = admin.to_string();
    let (status, out, err) =
        common::run_cli_within(&["reload", "--config", &config, "--admin", &admin_arg]);
    assert!(status.success(), "{status:?} {out} {err}");
    assert!(out.contains("admin tokens"), "{out}");
    let line = d
        .wait_log(|l| l.contains("admin: reload"))
        .expect("an audit line");
    assert!(line.contains("by=\"ops\""), "{line}");
    // With a token the file does not hold, the command says what is missing.
    let (status, _, err) = common::run_cli_env(
        &["reload", "--admin", &admin.to_string()],
        &[("A_CHAT_ADMIN_TOKEN", "nope-nope-nope-nope")],
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("needs a token"), "{err}");
}

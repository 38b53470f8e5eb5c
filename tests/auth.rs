//! ARCHITECTURE §9 authenticated logins against the real binary: `NAME PASSWORD` checked
//! against a users file made by `a-chat passwd`, one answer for every bad login, the
//! per-address limit without hash checks, and chats that go on during a login storm.
mod common;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{run_cli_input, run_cli_within, sample, scrape, Client, Daemon};

/// Makes the users-file line for `name` with `a-chat passwd`, the password on stdin.
fn passwd(name: &str, password: &str) -> String {
    let (status, out, err) = run_cli_input(&["passwd", name], format!("{password}\n").as_bytes());
    assert!(status.success(), "a-chat passwd {name}: {status}: {err}");
    let line = out.trim_end().to_owned();
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    line
}

/// A users file in its own directory (kept while the test runs).
struct UsersFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn users_file(users: &[(&str, &str)]) -> UsersFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let mut text = String::from("[users]\n");
    for (name, password) in users {
        text += &passwd(name, password);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    UsersFile { _dir: dir, path }
}

/// A daemon whose logins are checked against `users`, with `extra` config after `[auth]`.
fn daemon(users: &UsersFile, auth_keys: &str, extra: &str) -> Daemon {
    Daemon::with_toml(&format!(
        "[auth]\nusers_file = \"{}\"\n{auth_keys}\n{extra}",
        users.path.display()
    ))
}

/// Logs in with a password and confirms the login is live by a message to self.
fn login(d: &Daemon, name: &str, password: &str) -> Client {
    let mut c = d.connect();
    c.send(&format!("{name} {password}"));
    c.send(&format!("{name}: ready?"));
    c.expect(&format!("from {name}: ready?"));
    c
}

/// Sends a login line and asserts the answer and the close that follows.
fn refused(d: &Daemon, line: &str, answer: &str) {
    let mut c = d.connect();
    c.send(line);
    c.expect(answer);
    c.expect_closed();
}

#[test]
fn the_right_password_logs_in_and_chats() {
    let users = users_file(&[("alice", "wonderland"), ("bob", "can we fix it")]);
    let mut d = daemon(&users, "", "");
    d.wait_log_for(Duration::ZERO, |l| l.contains("logins are authenticated"))
        .expect("the start-up log says logins are authenticated");
    let mut alice = login(&d, "alice", "wonderland");
    let mut bob = login(&d, "bob", "can we fix it");
    alice.send("bob: hello bob");
    bob.expect("from alice: hello bob");
    bob.send("alice, bob: hi both");
    alice.expect("from bob: hi both");
    bob.expect("from bob: hi both");
    // After the password, the login is still unique: the right password again takes it
    // over (the older connection is told and closed), so one connection holds it.
    let mut again = login(&d, "alice", "wonderland");
    alice.expect("notice: logged in from another connection");
    alice.expect_closed();
    bob.send("alice: which one?");
    again.expect("from bob: which one?");
    let log = d.log_text();
    assert!(
        !log.contains("wonderland") && !log.contains("fix it"),
        "{log}"
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer_and_close() {
    let users = users_file(&[("alice", "wonderland")]);
    let d = daemon(&users, "", "");
    for line in [
        "alice wonderlan",
        "alice Wonderland",
        "alice  wonderland",
        "alice ",
        "mallory wonderland",
        "alice",
        "alice\twonderland",
        " wonderland",
    ] {
        refused(&d, line, "error: authentication failed");
    }
    let log = d.log_text();
    assert!(
        !log.contains("wonderlan"),
        "passwords are never logged:\n{log}"
    );
    login(&d, "alice", "wonderland");
}

#[test]
fn too_many_failures_from_one_address_are_refused_without_a_hash_check() {
    let users = users_file(&[("alice", "wonderland")]);
    let mut d = daemon(
        &users,
        "max_failures_per_ip = 3",
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let admin = d.admin_addr();
    for _ in 0..3 {
        refused(&d, "alice guess", "error: authentication failed");
    }
    let before = scrape(admin);
    assert_eq!(sample(&before, "achat_auth_checks_total"), 3.0);
    assert_eq!(
        sample(
            &before,
            "achat_auth_failures_total{reason=\"bad_credentials\"}"
        ),
        3.0
    );
    // Over the limit: refused at once, the right password included, and nothing is hashed.
    for line in ["alice guess", "mallory x", "alice wonderland"] {
        refused(&d, line, "error: too many failed logins");
    }
    let after = scrape(admin);
    assert_eq!(
        sample(&after, "achat_auth_checks_total"),
        3.0,
        "no hash check"
    );
    assert_eq!(
        sample(&after, "achat_auth_failures_total{reason=\"rate_limited\"}"),
        3.0
    );
    let warnings = d
        .log_text()
        .lines()
        .filter(|l| l.contains("too many failed logins from this address"))
        .count();
    assert_eq!(warnings, 1, "one warning per address and minute");
}

#[test]
fn passwd_prints_a_users_file_line_from_stdin() {
    let line = passwd("carol", "sea shells by the sea shore");
    assert!(
        line.starts_with("carol = \"$argon2id$v=19$m=19456,t=2,p=1$"),
        "{line}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(&path, format!("[users]\n{line}\n")).unwrap();
    let users = UsersFile { _dir: dir, path };
    let d = daemon(&users, "", "");
    login(&d, "carol", "sea shells by the sea shore");

    // A name that cannot be a login, and an empty password, make nothing.
    let (status, out, err) = run_cli_input(&["passwd", "car:ol"], b"pw\n");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(out.is_empty() && err.contains("cannot be a login"), "{err}");
    let (status, out, err) = run_cli_within(&["passwd", "carol"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        out.is_empty() && err.contains("the password is empty"),
        "{err}"
    );
}

#[test]
fn a_bad_users_file_stops_the_server_and_fails_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[users]\nalice = \"hunter2\"\n").unwrap();
    let config = dir.path().join("a-chat.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nusers_file = \"{}\"\n",
            users.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (status, _, err) = run_cli_within(&["server", "--config", config]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let expected = format!("{}, line 2, key `users.alice`", users.display());
    assert!(err.contains(&expected), "{err}");
    assert!(
        err.contains("not an argon2id hash") && !err.contains("hunter2"),
        "{err}"
    );
    let (status, _, err) = run_cli_within(&["check-config", config]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&expected), "{err}");
    std::fs::write(&users, "[users]\n[groups]\n").unwrap();
    let (status, _, err) = run_cli_within(&["check-config", config]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("line 2") && err.contains("groups"), "{err}");
}

#[test]
fn a_storm_of_wrong_logins_does_not_stall_a_chat_in_progress() {
    const STORM: usize = 200;
    let users = users_file(&[("alice", "wonderland"), ("bob", "builder")]);
    let d = daemon(
        &users,
        "max_failures_per_ip = 1000",
        "[limits]\nlogin_timeout = \"120s\"\n",
    );
    let alice = login(&d, "alice", "wonderland");
    let bob = login(&d, "bob", "builder");

    // The pair: alice pings bob, bob answers, alice times each round trip.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let (mut bob_out, mut bob_in) = bob.split();
    let echo = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            if bob_in.read_line(&mut line).unwrap_or(0) == 0 {
                return n;
            }
            let expected = format!("from alice: ping {n}\n");
            assert_eq!(line, expected, "bob got every ping in order");
            writeln!(bob_out, "alice: pong {n}").unwrap();
            n += 1;
        }
    });
    let (mut alice_out, mut alice_in) = alice.split();
    let pair = std::thread::spawn(move || {
        let mut rounds = Vec::new();
        let mut line = String::new();
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let n = rounds.len();
            let sent = Instant::now();
            writeln!(alice_out, "bob: ping {n}").unwrap();
            line.clear();
            alice_in.read_line(&mut line).expect("a pong");
            assert_eq!(
                line,
                format!("from bob: pong {n}\n"),
                "alice got every pong"
            );
            rounds.push((sent, sent.elapsed()));
            std::thread::sleep(Duration::from_millis(2));
        }
        rounds
    });

    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut storm: Vec<Client> = (0..STORM).map(|_| d.connect()).collect();
    for (i, c) in storm.iter_mut().enumerate() {
        // Half known users with wrong passwords, half unknown users.
        let name = if i % 2 == 0 { "alice" } else { "mallory" };
        c.send_raw(format!("{name} guess{i}\n").as_bytes()).unwrap();
    }
    for c in &mut storm {
        c.set_read_timeout(Duration::from_secs(120));
        c.expect("error: authentication failed");
        c.expect_closed();
    }
    let ended = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = pair.join().unwrap();
    drop(d);
    let pongs = echo.join().unwrap();
    assert_eq!(pongs as usize, rounds.len(), "every ping got its pong");

    let during: Vec<Duration> = rounds
        .iter()
        .filter(|(sent, _)| *sent >= started && *sent < ended)
        .map(|(_, took)| *took)
        .collect();
    let worst = during.iter().max().copied().unwrap_or_default();
    let mut sorted = during.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "storm of {STORM} wrong logins took {:?}; the pair made {} round trips meanwhile, median {median:?}, worst {worst:?}",
        ended - started,
        during.len()
    );
    assert!(
        during.len() >= 20,
        "the pair went on during the storm: {} round trips in {:?}",
        during.len(),
        ended - started
    );
    assert!(worst < Duration::from_secs(1), "worst round trip {worst:?}");
}

/// SIGHUP re-reads the users file: a user no longer in it is told and disconnected, the
/// others keep chatting, and the removed user can no longer log in.
#[test]
fn a_user_removed_from_the_file_is_disconnected_on_sighup() {
    let users = users_file(&[("alice", "first secret"), ("bob", "second secret")]);
    let mut d = daemon(&users, "", "");
    let mut alice = login(&d, "alice", "first secret");
    let mut bob = login(&d, "bob", "second secret");
    let text = std::fs::read_to_string(&users.path).unwrap();
    let without_bob: String = text
        .lines()
        .filter(|l| !l.starts_with("bob"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&users.path, without_bob).unwrap();
    d.signal(1); // SIGHUP
    bob.expect("notice: account removed");
    bob.expect_closed();
    d.wait_log(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("no reload; log:\n{}", d.log_text()));
    alice.send("alice: still here");
    alice.expect("from alice: still here");
    alice.send("bob: are you there?");
    alice.expect("error: no such user \"bob\"");
    refused(&d, "bob second secret", "error: authentication failed");
}

/// `a-chat client --user NAME` sends `NAME PASSWORD` first, the password from
/// A_CHAT_PASSWORD (or asked without echo on a terminal).
#[test]
fn the_client_logs_in_with_user_and_a_password_from_the_environment() {
    let users = users_file(&[("alice", "first secret")]);
    let d = daemon(&users, "", "");
    let addr = d.addr.to_string();
    let run = |password: &str| {
        let (_, out, _) = common::run_cli_env(
            &["client", "--user", "alice", &addr],
            &[("A_CHAT_PASSWORD", password)],
            b"alice: hello from --user\n",
        );
        out
    };
    assert!(run("first secret").contains("from alice: hello from --user"));
    assert!(run("wrong").contains("error: authentication failed"));
}

//! A reload that removes a user wins over the logins already waiting for their password
//! check: once the reload is logged, no login under the removed name is granted, and the
//! name is not logged in (a check that began before the reload used to grant it after).
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use a_chat::auth::hash;
use common::users::UsersFile;
use common::{Client, WAIT};

/// How one login attempt as alice went.
#[derive(Debug)]
enum Outcome {
    /// Refused (the `error:` line).
    Refused(String),
    /// Granted; `closed` says whether the daemon closed the connection afterwards (the
    /// removal reached it) before the test stopped.
    Granted { closed: bool },
    /// Nothing came back in time.
    NoAnswer,
}

/// One attempt: login, a message to self, and if granted, reading until the daemon
/// closes the connection or `stop` is set.
fn attempt(addr: std::net::SocketAddr, stop: &AtomicBool) -> Outcome {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, WAIT) else {
        return Outcome::NoAnswer;
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    if stream
        .write_all(b"alice first secret\nalice: ready?\n")
        .is_err()
    {
        return Outcome::NoAnswer;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => return Outcome::NoAnswer,
    }
    if !line.starts_with("from alice: ready?") {
        return Outcome::Refused(line.trim_end().to_owned());
    }
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Outcome::Granted { closed: true },
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Outcome::Granted { closed: true }
            }
            Err(_) if stop.load(Ordering::Relaxed) => return Outcome::Granted { closed: false },
            Err(_) => {}
        }
    }
}

#[test]
fn a_login_checked_before_a_reload_that_removed_the_user_is_not_granted_after_it() {
    const RETRIERS: usize = 16;
    let params = hash::default_params();
    let users = UsersFile::with_params(&[
        ("alice", "first secret", params.clone()),
        ("bob", "second secret", params.clone()),
    ]);
    let mut d = users.daemon("max_failures_per_ip = 100000\n[limits]\nlogin_timeout = \"60s\"\n");
    let addr = d.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let retriers: Vec<_> = (0..RETRIERS)
        .map(|_| {
            let (stop, attempts) = (stop.clone(), attempts.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    outcomes.push((started, attempt(addr, &stop)));
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
                outcomes
            })
        })
        .collect();
    // The storm is on once alice is logged in and others took her login over (each
    // proves the password, so each takes it from the one before).
    d.wait_log(|l| l.contains("login taken over"))
        .unwrap_or_else(|| panic!("no retrier took the login over; log:\n{}", d.log_text()));
    users.write(&[("bob", "second secret", params)]);
    d.signal(libc::SIGHUP);
    d.wait_log(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("no reload; log:\n{}", d.log_text()));
    let reloaded = Instant::now();
    // Every retrier goes on for a while after the reload: those that were waiting for a
    // check at the reload get their answers.
    let before = attempts.load(Ordering::Relaxed);
    let deadline = reloaded + Duration::from_secs(8);
    while attempts.load(Ordering::Relaxed) < before + 3 * RETRIERS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nobody is logged in as alice: a message to her is refused.
    let mut bob = Client::connect(addr);
    bob.send("bob second secret");
    bob.send("alice: are you there?");
    let answer = bob.line_within(WAIT).flatten();
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<(Instant, Outcome)> = retriers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let granted = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Granted { .. }))
        .count();
    let after = outcomes.iter().filter(|(s, _)| *s > reloaded).count();
    eprintln!(
        "{} attempts, {granted} granted, {after} begun after the reload",
        outcomes.len()
    );
    assert!(granted >= 1, "alice was never logged in: {outcomes:?}");
    for (started, outcome) in &outcomes {
        match outcome {
            // Granted before the reload (as the router saw it), then removed by it. A
            // grant the reload did not reach stays logged in: that is the defect.
            Outcome::Granted { closed, .. } => assert!(
                closed,
                "a login of alice (begun {:?} before the reload was logged) outlived it",
                reloaded.saturating_duration_since(*started)
            ),
            Outcome::Refused(line) if *started > reloaded => {
                assert_eq!(line, "error: authentication failed")
            }
            _ => {}
        }
        if *started > reloaded {
            assert!(
                !matches!(outcome, Outcome::Granted { .. }),
                "a login begun after the reload was granted"
            );
        }
    }
    assert_eq!(
        answer.as_deref(),
        Some("error: no such user \"alice\""),
        "alice is still logged in after the reload that removed her"
    );
}

//! Users whose hashes have other settings than most (after raising them, as the docs
//! invite) must not be told from unknown names by the time a failed login takes: an
//! unknown name costs as long as the costliest settings in the file, and so does a wrong
//! password of a user with cheaper ones. check-config says when the settings are mixed.
mod common;

use std::time::{Duration, Instant};

use a_chat::auth::hash;
use common::users::{heavier, UsersFile};
use common::{run_cli_within, Daemon};

/// The time from sending `line` to `error: authentication failed`.
fn failure_time(d: &Daemon, line: &str) -> Duration {
    let mut c = d.connect();
    let sent = Instant::now();
    c.send(line);
    c.expect("error: authentication failed");
    sent.elapsed()
}

/// The median failure time of each line, over `tries` rounds that take each line in
/// turn (so that a change of the machine's load weighs on all of them alike).
fn median_failures<const N: usize>(d: &Daemon, lines: [&str; N], tries: usize) -> [Duration; N] {
    let mut times = vec![Vec::new(); N];
    for _ in 0..tries {
        for (i, line) in lines.iter().enumerate() {
            times[i].push(failure_time(d, line));
        }
    }
    std::array::from_fn(|i| {
        times[i].sort();
        times[i][tries / 2]
    })
}

#[test]
fn an_unknown_name_takes_as_long_as_the_user_with_the_costliest_hash() {
    const TRIES: usize = 5;
    let default = hash::default_params();
    // About four times the default cost: most users have the default.
    let users = UsersFile::with_params(&[
        ("alice", "wonderland", default.clone()),
        ("bob", "builder", default),
        ("carol", "sea shells", heavier(2, 2)),
    ]);
    let d = users.daemon("max_failures_per_ip = 100000\n");
    // Warm up (the first checks start the blocking threads).
    median_failures(&d, ["nobody x"], 2);
    let [heavy, unknown, cheap] =
        median_failures(&d, ["carol wrong", "nobody wrong", "alice wrong"], TRIES);
    eprintln!("median failed login: carol (4x cost) {heavy:?}, unknown name {unknown:?}, alice (default cost) {cheap:?}");
    // Generous: before, the unknown name took a quarter of carol's time (the majority's
    // settings), and alice's wrong password as little.
    let ratio = |t: Duration| t.as_secs_f64() / heavy.as_secs_f64();
    assert!(
        ratio(unknown) > 0.6,
        "unknown {unknown:?} vs carol {heavy:?}"
    );
    assert!(ratio(cheap) > 0.6, "alice {cheap:?} vs carol {heavy:?}");
    // The right passwords still log in, the cheap one without the floor.
    for (name, password) in [("alice", "wonderland"), ("carol", "sea shells")] {
        let mut c = d.connect();
        c.send(&format!("{name} {password}"));
        c.send(&format!("{name}: ready?"));
        c.expect(&format!("from {name}: ready?"));
    }
}

#[test]
fn check_config_and_the_start_warn_when_the_users_hash_settings_are_mixed() {
    let mixed = UsersFile::with_params(&[
        ("alice", "wonderland", hash::default_params()),
        ("carol", "sea shells", heavier(2, 1)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("a-chat.toml");
    let write = |users: &UsersFile| {
        let toml = format!("[auth]\nusers_file = \"{}\"\n", users.path.display());
        std::fs::write(&config, toml).unwrap();
    };
    write(&mixed);
    let (status, out, err) = run_cli_within(&["check-config", config.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    let warning = out
        .lines()
        .find(|l| l.starts_with("# warning:"))
        .unwrap_or_else(|| panic!("no warning line: {out}"));
    assert!(
        warning.contains("2 different argon2 settings")
            && warning.contains("m=38912,t=2,p=1 (1 user), m=19456,t=2,p=1 (1 user)"),
        "{warning}"
    );
    let d = mixed.daemon("");
    assert!(
        d.log_text().contains("different argon2 settings"),
        "{}",
        d.log_text()
    );

    let alike = UsersFile::new(&[("alice", "wonderland"), ("bob", "builder")]);
    write(&alike);
    let (status, out, err) = run_cli_within(&["check-config", config.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert!(!out.contains("warning"), "{out}");
}

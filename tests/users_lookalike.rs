//! A users file may not hold two names that look alike (`alice` and `Alice`): they would
//! be one chat login with two passwords. Such a file is refused at start and by
//! check-config, naming both lines. Names log in spelled exactly as in the file.
mod common;

use common::{run_cli, run_cli_input, Daemon};

/// The users-file line for `name`, made by `a-chat passwd`.
fn passwd(name: &str, password: &str) -> String {
    let (status, out, err) = run_cli_input(&["passwd", name], format!("{password}\n").as_bytes());
    assert!(status.success(), "{err}");
    out
}

#[test]
fn look_alike_users_are_refused_by_check_config_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users]\n{}# the same person?\n{}",
        passwd("alice", "one"),
        passwd("Alice", "two")
    );
    std::fs::write(&users, text).unwrap();
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
    let (status, _, err) = run_cli(&["check-config", config]);
    assert_eq!(status.code(), Some(1), "{err}");
    let both = |err: &str| {
        err.contains("line 4, key `users.Alice`")
            && err.contains("user \"Alice\" looks like user \"alice\" (line 2)")
    };
    assert!(both(&err), "{err}");
    let (status, _, err) = run_cli_input(&["server", "--config", config], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(both(&err), "{err}");
}

/// A login is spelled as in the users file: another case of the same name is an unknown
/// user, with the one answer every failed login gets.
#[test]
fn a_user_logs_in_under_the_spelling_of_the_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, format!("[users]\n{}", passwd("alice", "pw"))).unwrap();
    let d = Daemon::with_toml(&format!("[auth]\nusers_file = \"{}\"\n", users.display()));
    let mut c = d.connect();
    c.send("ALICE pw");
    c.expect("error: authentication failed");
    c.expect_closed();
    let mut alice = d.connect();
    alice.send("alice pw");
    alice.send("ALICE: found by look");
    alice.expect("from alice: found by look");
}

//! `a-chat passwd NAME --file PATH` against a temporary directory: a new file gets its
//! `[users]` header and mode 0600, a second user is added, a password is replaced (the old
//! one then fails, the new one logs in), comments stay, and the result passes check-config.
mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{run_cli, run_cli_input, Daemon};

/// Runs `a-chat passwd NAME --file PATH` with `password` on stdin; (success, stderr).
fn passwd_file(name: &str, path: &Path, password: &str) -> (bool, String) {
    let path = path.to_str().unwrap();
    let input = format!("{password}\n");
    let (status, out, err) = run_cli_input(&["passwd", name, "--file", path], input.as_bytes());
    assert!(out.is_empty(), "nothing on stdout: {out}");
    (status.success(), err)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Logs in with `NAME PASSWORD` and says whether the login was granted.
fn logs_in(d: &Daemon, name: &str, password: &str) -> bool {
    let mut c = d.connect();
    c.send(&format!("{name} {password}"));
    c.send(&format!("{name}: here?"));
    let answer = c.line().unwrap_or_default();
    answer == format!("from {name}: here?")
}

#[test]
fn passwd_file_creates_adds_and_replaces_users_safely() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");

    let (ok, err) = passwd_file("alice", &users, "first");
    assert!(ok, "{err}");
    assert!(err.contains("added user \"alice\""), "{err}");
    assert_eq!(
        mode(&users),
        0o600,
        "a new users file is for its owner only"
    );
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("[users]\nalice = \"$argon2id$"), "{text}");

    // Comments of the operator's stay where they are.
    std::fs::write(&users, format!("# the team\n{text}# end\n")).unwrap();
    let (ok, err) = passwd_file("bob", &users, "builder");
    assert!(ok, "{err}");
    let (ok, err) = passwd_file("alice", &users, "second");
    assert!(ok, "{err}");
    assert!(
        err.contains("replaced the password of user \"alice\""),
        "{err}"
    );
    let text = std::fs::read_to_string(&users).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], "# the team");
    assert_eq!(lines[1], "[users]");
    assert!(lines[2].starts_with("alice = "), "{text}");
    assert!(lines[3].starts_with("bob = "), "{text}");
    assert_eq!(lines[4], "# end");
    assert_eq!(mode(&users), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");

    // A look-alike of a user is refused, and the file is left as it was.
    let (ok, err) = passwd_file("Alice", &users, "third");
    assert!(!ok);
    assert!(err.contains("looks like user \"alice\""), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(std::fs::read_to_string(&users).unwrap(), text);

    // The file passes check-config, and a daemon takes the new password only.
    let config = dir.path().join("a-chat.toml");
    std::fs::write(
        &config,
        format!("[auth]\nusers_file = \"{}\"\n", users.display()),
    )
    .unwrap();
    let (status, out, err) = run_cli(&["check-config", config.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert!(out.contains("2 users may log in"), "{out}");
    let d = Daemon::with_toml(&format!("[auth]\nusers_file = \"{}\"\n", users.display()));
    assert!(!logs_in(&d, "alice", "first"), "the old password");
    assert!(logs_in(&d, "alice", "second"));
    assert!(logs_in(&d, "bob", "builder"));
}

/// An existing file keeps its mode (a group-readable file stays readable by the daemon's
/// group), and the README's line works on a file that does not exist yet.
#[test]
fn passwd_file_keeps_the_mode_of_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[users]\n").unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, err) = passwd_file("carol", &users, "pw");
    assert!(ok, "{err}");
    assert_eq!(mode(&users), 0o640);
    let missing_dir = dir.path().join("nowhere").join("users.toml");
    let (ok, err) = passwd_file("carol", &missing_dir, "pw");
    assert!(!ok);
    assert!(err.contains("nowhere"), "{err}");
}

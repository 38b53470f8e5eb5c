//! `a-chat server` and `a-chat check-config` run one set of checks (daemon/preflight.rs): a
//! configuration one of them refuses, the other refuses with the same line, and a warning
//! one of them gives, the other gives too.
mod common;

use std::fs;
use std::path::Path;

use common::users::UsersFile;
use common::{run_cli_within, Daemon, Pki};

/// The `a-chat: ...` line each command printed on stderr for the file at `path`:
/// (server's exit code, server's line, check-config's exit code, check-config's line).
fn both_refuse(path: &Path) -> (Option<i32>, String, Option<i32>, String) {
    let path = path.to_str().unwrap();
    let (server, _, server_err) = run_cli_within(&["server", "--config", path]);
    let (check, _, check_err) = run_cli_within(&["check-config", path]);
    let line = |err: &str| {
        err.lines()
            .find(|l| l.starts_with("a-chat: ") && !l.starts_with("a-chat: warning"))
            .unwrap_or_else(|| panic!("no error line in {err:?}"))
            .to_owned()
    };
    (
        server.code(),
        line(&server_err),
        check.code(),
        line(&check_err),
    )
}

#[test]
fn a_missing_tls_key_is_refused_the_same_way_by_both() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    let missing = dir.path().join("gone.key");
    fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.path("server.pem"),
            missing.display()
        ),
    )
    .unwrap();
    let (server, server_line, check, check_line) = both_refuse(&path);
    assert_eq!(server, Some(2), "{server_line}");
    assert_eq!(check, Some(1), "{check_line}");
    assert_eq!(server_line, check_line);
    assert!(server_line.contains("gone.key"), "{server_line}");
}

#[test]
fn a_users_file_with_look_alike_names_is_refused_the_same_way_by_both() {
    let users = UsersFile::new(&[("alice", "wonderland"), ("Alice", "looking-glass")]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nusers_file = \"{}\"\n",
            users.path.display()
        ),
    )
    .unwrap();
    let (server, server_line, check, check_line) = both_refuse(&path);
    assert_eq!(
        (server, check),
        (Some(2), Some(1)),
        "{server_line} / {check_line}"
    );
    assert_eq!(server_line, check_line);
    assert!(
        server_line.contains("alice") && server_line.contains("Alice"),
        "{server_line}"
    );
}

#[test]
fn a_warning_of_one_is_a_warning_of_both() {
    // Passwords over a plaintext listener off loopback: the server logged it at start,
    // and check-config now says it too.
    let users = UsersFile::new(&[("alice", "wonderland")]);
    let toml = format!(
        "[server]\nlisten = \"[::]:0\"\n[auth]\nusers_file = \"{}\"\n",
        users.path.display()
    );
    let d = Daemon::with_toml(&toml);
    let log = d.log_text();
    assert!(log.contains("plaintext and not loopback"), "{log}");
    let path = d.config_path.to_str().unwrap().to_owned();
    let (status, out, err) = run_cli_within(&["check-config", "--quiet", &path]);
    assert!(status.success(), "{out} {err}");
    assert!(
        err.contains("a-chat: warning: ") && err.contains("plaintext and not loopback"),
        "{err}"
    );
}

#[test]
fn passwords_over_a_plaintext_websocket_listener_off_loopback_are_warned_of() {
    let users = UsersFile::new(&[("alice", "wonderland")]);
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[websocket]\nlisten = \"[::]:0\"\n\
         [auth]\nusers_file = \"{}\"\n",
        users.path.display()
    );
    let d = Daemon::with_toml(&toml);
    let path = d.config_path.to_str().unwrap().to_owned();
    let (status, out, err) = run_cli_within(&["check-config", "--quiet", &path]);
    assert!(status.success(), "{out} {err}");
    assert!(
        err.contains("([websocket] listen) is plaintext and not loopback")
            && err.contains("[websocket] tls_listen instead"),
        "{err}"
    );
}

//! `a-chat check-config` refuses configurations the server cannot run, and says what will not
//! work on this machine even with `--quiet` (how the systemd unit runs it before the daemon):
//! an admin endpoint on a chat address, durations no timer can hold, `max_connections`
//! beyond the open-file limit, and a `net.core.somaxconn` it cannot read.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::run_cli;

fn write(dir: &Path, toml: &str) -> String {
    let path = dir.join("a-chat.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

#[test]
fn an_admin_endpoint_on_a_chat_address_is_refused_by_check_config_and_the_server() {
    let dir = tempfile::tempdir().unwrap();
    for toml in [
        "[server]\nlisten = \"127.0.0.1:18480\"\n[admin]\nlisten = \"127.0.0.1:18480\"\n",
        "[server]\nlisten = \"0.0.0.0:18480\"\n[admin]\nlisten = \"127.0.0.1:18480\"\n",
        "[server]\nlisten = []\n[tls]\nlisten = [\"127.0.0.1:18443\"]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
         [admin]\nlisten = \"127.0.0.1:18443\"\n",
    ] {
        let path = write(dir.path(), toml);
        let (status, _, err) = run_cli(&["check-config", &path]);
        assert_eq!(status.code(), Some(1), "{toml}: {err}");
        assert!(
            err.contains("admin.listen") && err.contains("also a chat address"),
            "{toml}: {err}"
        );
        let (status, _, err) = run_cli(&["server", "--config", &path]);
        assert_eq!(status.code(), Some(2), "server with {toml}: {err}");
        assert!(err.contains("admin.listen"), "{err}");
    }
    // Port 0 picks a free port for each: no clash.
    let path = write(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (status, _, err) = run_cli(&["check-config", "--quiet", &path]);
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn a_duration_no_timer_can_hold_is_refused_with_the_longest_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for key in [
        "[limits]\nlogin_timeout",
        "[limits]\nslow_consumer_grace",
        "[shutdown]\ndrain_timeout",
    ] {
        let path = write(dir.path(), &format!("{key} = \"1000000000000h\"\n"));
        let (status, _, err) = run_cli(&["check-config", &path]);
        assert_eq!(status.code(), Some(1), "{key}: {err}");
        assert!(err.contains("longer than a year"), "{key}: {err}");
    }
    let path = write(dir.path(), "[limits]\nidle_timeout = \"365d\"\n");
    let (status, _, err) = run_cli(&["check-config", "--quiet", &path]);
    assert_eq!(status.code(), Some(0), "a year is allowed: {err}");
}

/// `a-chat check-config --quiet PATH` under an open-file limit of `nofile`.
fn quiet_under(nofile: u64, path: &str) -> Output {
    Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(common::bin())
        .args(["check-config", "--quiet", path])
        .output()
        .expect("run prlimit")
}

#[test]
fn quiet_still_warns_on_stderr_when_max_connections_passes_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[server]\nmax_connections = 1000\n");
    let tight = quiet_under(100, &path);
    assert!(tight.status.success(), "{tight:?}");
    let err = String::from_utf8_lossy(&tight.stderr);
    assert!(
        err.contains("warning") && err.contains("exceeds the limit"),
        "{err}"
    );
    assert!(tight.stdout.is_empty(), "--quiet prints no settings");
    let roomy = quiet_under(4096, &path);
    let err = String::from_utf8_lossy(&roomy.stderr);
    assert!(!err.contains("max_connections"), "{err}");
}

#[test]
fn an_unreadable_somaxconn_is_said_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[server]\nlisten_backlog = 4096\n");
    // A private mount namespace where /proc/sys is empty, as under the unit's
    // ProcSubset=pid. Needs root (CI runs as root).
    let out = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg("mount -t tmpfs none /proc/sys && exec \"$0\" check-config --quiet \"$1\"")
        .arg(common::bin())
        .arg(&path)
        .output()
        .expect("run unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        err.contains("somaxconn could not be read") && err.contains("listen_backlog = 4096"),
        "{err}"
    );
}

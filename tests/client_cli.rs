//! ARCHITECTURE §2 against the real binary: `a-chat client` and `a-chat probe` as a user
//! runs them (stdin and stdout, exit statuses, a terminal, a daemon that cannot take them).
mod common;

use std::time::Duration;

use common::{free_addr, run_cli_input, run_cli_within, Daemon};

#[test]
fn the_client_chats_through_stdin_and_stdout_and_exits_when_stdin_ends() {
    let d = Daemon::start();
    let mut bob = d.login("bob");
    let addr = d.addr.to_string();
    let (status, out, err) = run_cli_input(
        &["client", &addr],
        b"alice\nalice: hi\nbob: hello bob\nzed: anyone?\n",
    );
    assert_eq!(status.code(), Some(0), "stdout {out:?} stderr {err:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"from alice: hi"), "{out:?}");
    assert!(lines.contains(&"error: no such user \"zed\""), "{out:?}");
    bob.expect("from alice: hello bob");
}

#[test]
fn the_client_exits_when_the_server_closes() {
    let d = Daemon::start();
    let addr = d.addr.to_string();
    // An invalid login: the server answers and closes, stdin is still open meanwhile.
    let mut child = std::process::Command::new(common::bin())
        .args(["client", &addr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"a b\n").unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not exit after the server closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(stdin);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    // The server closed right after an error: the client failed.
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(out.starts_with("error: "), "{out:?}");
}

/// A conversation that ends normally exits 0; one the server ends with an `error:` line
/// (a login taken) exits 1.
#[test]
fn the_client_exits_1_after_an_error_and_0_after_a_chat() {
    let d = Daemon::start();
    let addr = d.addr.to_string();
    let (status, out, _) = run_cli_input(&["client", &addr], b"dave\ndave: hi\n");
    assert_eq!(status.code(), Some(0), "{out}");
    let _dave = d.login("dave");
    let (status, out, _) = run_cli_input(&["client", &addr], b"dave\n");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("error: login \"dave\" is taken"), "{out}");
}

#[test]
fn the_client_fails_when_nothing_listens() {
    let addr = free_addr().to_string();
    let (status, _, err) = run_cli_within(&["client", &addr]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&addr), "{err:?}");
}

#[test]
fn probe_exits_0_against_a_daemon_and_1_against_a_closed_port() {
    let d = Daemon::start();
    let (status, _, err) = run_cli_within(&["probe", &d.addr.to_string()]);
    assert_eq!(status.code(), Some(0), "{err}");
    let closed = free_addr().to_string();
    let (status, _, err) = run_cli_within(&["probe", &closed]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&closed), "{err:?}");
    // The daemon still serves after the probe's connect-and-close.
    d.login("alice");
}

/// On a terminal the client tells a new user what to type (the first line is the login,
/// then `name1, name2: text`); `script` gives it a pseudo-terminal, where Ctrl-D ends input.
#[test]
fn the_client_explains_itself_on_a_terminal() {
    let d = Daemon::start();
    let client = format!("{} client {}", common::bin().display(), d.addr);
    let mut child = std::process::Command::new("timeout")
        .args(["10", "script", "-q", "-e", "-c", &client, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script (bsdutils)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"alice\nalice: hi\n\x04")
        .unwrap();
    let done = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "exit {:?}: {out}", done.status);
    assert!(out.contains("Type your login name first"), "{out}");
    assert!(out.contains("`name1, name2: text`"), "{out}");
    assert!(out.contains("from alice: hi"), "{out}");
}

/// A probe proves a round trip, not just a connect: with every connection token out, the
/// daemon still completes TCP handshakes (the kernel's backlog) but cannot serve, and the
/// probe fails within its timeout. Probes log nothing at info.
#[test]
fn probe_fails_when_the_daemon_cannot_take_a_client() {
    let mut d = Daemon::with_toml("[server]\nmax_connections = 1\n");
    let addr = d.addr.to_string();
    let (status, _, err) = run_cli_within(&["probe", "--timeout", "1s", &addr]);
    assert_eq!(status.code(), Some(0), "{err}");
    let alice = d.login("alice");
    let (status, _, err) = run_cli_within(&["probe", "--timeout", "1s", &addr]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no chat round trip"), "{err}");
    drop(alice);
    d.wait_log(|l| l.contains("connection closed") && l.contains("login=\"alice\""))
        .expect("alice's close");
    let (status, _, err) = run_cli_within(&["probe", "--timeout", "2s", &addr]);
    assert_eq!(status.code(), Some(0), "{err}");
    let log = d.log_text();
    assert!(
        !log.contains("login refused"),
        "a probe logged at info:\n{log}"
    );
}

//! ARCHITECTURE §2 and §3 against the real binary: the command line (help, version, bad
//! flags, --set, --listen) and what the server does with a configuration it cannot use.
//! check-config is in tests/check_config.rs, the client and the probe in tests/client_cli.rs.
mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{free_addr, run_cli, run_cli_within, Daemon, Start};

/// The subcommands listed by `a-chat --help`.
fn subcommands() -> Vec<String> {
    let (status, out, _) = run_cli(&["--help"]);
    assert!(status.success());
    let list = out
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .split("\n\n")
        .next()
        .unwrap();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_and_version_work_everywhere() {
    let commands = subcommands();
    for expected in ["server", "client", "check-config", "probe"] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} missing from {commands:?}"
        );
    }
    for flag in ["--help", "-h", "--version", "-V"] {
        let (status, out, err) = run_cli(&[flag]);
        assert_eq!(status.code(), Some(0), "a-chat {flag}: {err}");
        assert!(!out.is_empty(), "a-chat {flag} printed nothing");
        if flag.contains('V') || flag == "--version" {
            assert_eq!(out.trim(), format!("a-chat {}", a_chat::VERSION));
            // The commit is named: a short hash (or `unknown` outside a checkout).
            let commit = a_chat::VERSION
                .split_once(" (")
                .and_then(|(_, c)| c.strip_suffix(')'))
                .unwrap_or_else(|| panic!("no commit in {:?}", a_chat::VERSION));
            assert!(
                commit == "unknown"
                    || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
                "{commit:?}"
            );
        }
        for cmd in &commands {
            let (status, out, err) = run_cli(&[cmd, flag]);
            assert_eq!(status.code(), Some(0), "a-chat {cmd} {flag}: {err}");
            if flag.contains('V') || flag == "--version" {
                // clap names the subcommand too: `a-chat-server 0.1.0`.
                assert!(
                    out.starts_with("a-chat") && out.trim().ends_with(a_chat::VERSION),
                    "a-chat {cmd} {flag}: {out:?}"
                );
            } else {
                assert!(out.contains("Usage: a-chat"), "a-chat {cmd} {flag}: {out}");
            }
        }
    }
}

#[test]
fn a_bad_flag_exits_2() {
    for args in [
        &["--bogus"][..],
        &["server", "--bogus"],
        &["server", "--listen", "localhost:80"],
        &["server", "--listen"],
        &["client", "--bogus"],
        &["check-config"],
        &["probe", "--timeout", "soon"],
        &["no-such-command"],
        &[],
    ] {
        let (status, out, err) = run_cli_within(args);
        assert_eq!(status.code(), Some(2), "a-chat {args:?}: {out} {err}");
        assert!(
            !err.trim().is_empty(),
            "a-chat {args:?} said nothing on stderr"
        );
    }
}

/// A config with a mistake: exit 2, one line on stderr naming the file, the key and the
/// line, and nothing listens on the address the file names.
#[test]
fn server_with_a_bad_config_exits_2_with_one_line_and_listens_nowhere() {
    let addr = free_addr();
    let listen = format!("[server]\nlisten = \"{addr}\"\n");
    // (file contents, key, line)
    let cases = [
        (
            format!("{listen}[limits]\nmax_line_bytes = 100\nmax_lines = 3\n"),
            "limits.max_lines",
            Some(5),
        ),
        (
            format!("{listen}[limits]\nlogin_timeout = \"soon\"\n"),
            "limits.login_timeout",
            Some(4),
        ),
        (
            format!("{listen}accept_error_sleep = \"10 parsecs\"\n"),
            "server.accept_error_sleep",
            Some(3),
        ),
        (
            "[server]\nlisten = \"localhost:8080\"\n".to_owned(),
            "server.listen",
            Some(2),
        ),
        (
            format!("{listen}[admin]\nlisten = \"127.0.0.1\"\n"),
            "admin.listen",
            Some(4),
        ),
        (
            format!("{listen}max_connections = 0\n"),
            "server.max_connections",
            Some(3),
        ),
        (
            format!("{listen}proxy_protocol_from = [\"10.0.0.0/33\"]\n"),
            "server.proxy_protocol_from",
            Some(3),
        ),
        (
            format!("{listen}[limits]\n\nmax_recipients = 99999999\n"),
            "limits.max_recipients",
            Some(5),
        ),
        (
            format!("{listen}[limits]\nmax_line_bytes = -1\n"),
            "limits.max_line_bytes",
            Some(4),
        ),
        (
            format!("{listen}[log]\nformat = \"xml\"\n"),
            "log.format",
            Some(4),
        ),
        (format!("{listen}[nope]\nx = 1\n"), "nope", Some(3)),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, key, line)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        let (status, out, err) = run_cli_within(&["server", "--config", file]);
        assert_eq!(status.code(), Some(2), "{text:?}: {err}");
        assert!(out.is_empty(), "{text:?}: stdout {out:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{text:?}: expected one line, got {err:?}");
        let msg = lines[0];
        assert!(msg.contains(file), "{msg:?} does not name the file");
        assert!(
            msg.contains(&format!("`{key}`")),
            "{msg:?} does not name {key}"
        );
        if let Some(line) = line {
            assert!(
                msg.contains(&format!("line {line}")),
                "{msg:?} does not name line {line}"
            );
        }
        assert!(!msg.contains("listening"), "{msg:?}");
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "something listens on {addr} after {text:?}"
        );
        // check-config says the same, with exit 1.
        let (status, _, check_err) = run_cli_within(&["check-config", file]);
        assert_eq!(status.code(), Some(1), "check-config {text:?}");
        assert_eq!(check_err, err, "check-config and server disagree");
    }

    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let (status, _, err) = run_cli_within(&["server", "--config", missing]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains(missing), "{err:?} does not name the file");
    let (status, _, err) = run_cli_within(&["check-config", missing]);
    assert_eq!(status.code(), Some(1), "{err}");
}

#[test]
fn listen_on_the_command_line_overrides_the_file() {
    // The file names an address that is taken, so using it would fail to start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let d = Daemon::start_args(
        Start {
            toml: format!("[server]\nlisten = \"{taken_addr}\"\n[limits]\nmax_line_bytes = 100\n"),
            ..Start::default()
        },
        &["--listen", "127.0.0.1:0"],
    );
    assert_ne!(d.addr, taken_addr);
    assert_eq!(d.addr.ip().to_string(), "127.0.0.1");
    // The rest of the file still applies.
    let mut alice = d.login("alice");
    alice.send(&format!("alice: {}", "x".repeat(100)));
    let line = alice.line().unwrap();
    assert_eq!(line, "error: line too long");
}

#[test]
fn without_a_config_the_server_runs_on_the_defaults() {
    let d = Daemon::start_args(Start::default(), &["--listen", "127.0.0.1:0"]);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    // Default max_line_bytes = 8192: exactly that is fine, one more is not.
    let text = "y".repeat(8192 - "bob: ".len());
    alice.send(&format!("bob: {text}"));
    bob.expect(&format!("from alice: {text}"));
    // Default max_recipients = 64.
    let many = vec!["bob"; 65].join(",");
    alice.send(&format!("{many}: too many"));
    alice.expect("error: too many recipients");
    let many = vec!["bob"; 64].join(",");
    alice.send(&format!("{many}: just enough"));
    bob.expect("from alice: just enough");
    // Default max_login_bytes = 64.
    d.login(&"l".repeat(64));
    let mut c = d.connect();
    c.send(&"l".repeat(65));
    assert!(c.line().unwrap().starts_with("error: "));
    alice.send(&format!("bob{}: x", "y".repeat(8192)));
    assert_eq!(alice.line().as_deref(), Some("error: line too long"));
}

/// The threads of the daemon's process named `a-chat-worker` (they run the connections).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "a-chat-worker")
        .count()
}

#[test]
fn worker_threads_sets_the_threads_that_run_connections() {
    // The default: one.
    let d = Daemon::start();
    let mut alice = d.login("alice");
    alice.send("alice: hi");
    alice.expect("from alice: hi");
    assert_eq!(worker_threads(d.pid()), 1);
    // A configured count, and chat still works across many connections.
    let d = Daemon::with_toml("[server]\nworker_threads = 3\n");
    let mut clients: Vec<_> = (0..8).map(|i| d.login(&format!("u{i}"))).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&format!("u{}: {i}", (i + 1) % 8));
    }
    for i in 0..8 {
        clients[(i + 1) % 8].expect(&format!("from u{i}: {i}"));
    }
    assert_eq!(worker_threads(d.pid()), 3);
    // The environment variable wins over the file.
    let d = Daemon::start_with(Start {
        toml: "[server]\nworker_threads = 3\n".into(),
        env: vec![("ASYNC_STD_THREAD_COUNT".into(), "2".into())],
        ..Start::default()
    });
    d.login("alice");
    assert_eq!(worker_threads(d.pid()), 2);
}

#[test]
fn queue_bounds_that_cannot_work_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.toml");
    std::fs::write(
        &path,
        "[limits]\noutbound_queue_bytes = 67108864\noutbound_queue_hard_bytes = 1048576\n",
    )
    .unwrap();
    let (status, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 3, key `limits.outbound_queue_hard_bytes`")
            && err.contains("below limits.outbound_queue_bytes"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[limits]\noutbound_total_bytes = 1048576\n[server]\nlisten_backlog = 0\n",
    )
    .unwrap();
    let (status, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("key `server.listen_backlog`"), "{err}");
}

/// Under `docker run` nobody runs check-config: the server itself warns at start when
/// max_connections exceeds what the open-file limit allows.
#[test]
fn the_server_warns_at_start_when_max_connections_exceeds_the_open_file_limit() {
    let mut d = Daemon::start_with(common::Start {
        toml: "[server]\nmax_connections = 1000\n".into(),
        nofile: Some(100),
        ..common::Start::default()
    });
    let line = d
        .wait_log(|l| l.contains("WARN") && l.contains("open-file limit"))
        .unwrap_or_else(|| panic!("no warning; log:\n{}", d.log_text()));
    assert!(line.contains("max_connections exceeds"), "{line}");
    let mut alice = d.login("alice");
    alice.send("alice: still serving");
    alice.expect("from alice: still serving");
}

/// `docker run` users set keys on the command line: `--set section.key=value`, repeatable,
/// validated like the file; `--listen` repeatable.
#[test]
fn set_and_repeated_listen_configure_the_server_from_the_command_line() {
    let (a, b) = (free_addr(), free_addr());
    let mut d = Daemon::start_args(
        Start::default(),
        &[
            "--listen",
            &a.to_string(),
            "--listen",
            &b.to_string(),
            "--set",
            "admin.listen=127.0.0.1:0",
            "--set",
            "limits.max_line_bytes=100",
        ],
    );
    let admin = d.admin_addr();
    assert_eq!(common::http_get(admin, "/healthz").status, 200);
    for addr in [a, b] {
        let mut c = common::Client::connect(addr);
        c.send("carol");
        c.send(&format!("carol: {}", "x".repeat(150)));
        c.expect("error: line too long");
    }
    let (status, _, err) = run_cli(&["server", "--set", "limits.max_line_bytes=-5"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--set limits.max_line_bytes=-5") && err.contains("limits.max_line_bytes"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The README's command table lists exactly the subcommands `a-chat --help` lists.
#[test]
fn the_readme_command_table_matches_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut in_table: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `a-chat "))
        .map(|rest| rest.split([' ', '`']).next().unwrap().to_owned())
        .collect();
    in_table.sort();
    in_table.dedup();
    let (status, help, _) = run_cli(&["--help"]);
    assert!(status.success());
    let mut in_help: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .filter(|c| c != "help")
        .collect();
    in_help.sort();
    assert_eq!(
        in_table, in_help,
        "README's command table against a-chat --help"
    );
}

//! ARCHITECTURE §2 and §3 against the real binary: the command line, the configuration file and
//! its error messages, check-config, the client and the probe.
mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_addr, run_cli, run_cli_input, run_cli_within, Daemon, Start};

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/a-chat.toml")
}

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
fn check_config_on_the_shipped_file_prints_the_effective_settings() {
    let path = shipped_config();
    let (status, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
    for setting in [
        "listen = [\"127.0.0.1:8080\"]",
        "max_connections = 10000",
        "max_connections_per_ip = 0",
        "accept_error_sleep = \"500ms\"",
        "max_login_bytes = 64",
        "max_line_bytes = 8192",
        "max_recipients = 64",
        "login_timeout = \"10s\"",
        "idle_timeout = \"0s\"",
        "outbound_queue_bytes = 1048576",
        "slow_consumer_grace = \"5s\"",
        "outbound_queue_hard_bytes = 33554432",
        "outbound_total_bytes = 268435456",
        "listen_backlog = 1024",
        "write_timeout = \"10s\"",
        "drain_timeout = \"10s\"",
        "level = \"info\"",
        "format = \"text\"",
    ] {
        assert!(out.contains(setting), "{setting:?} missing from:\n{out}");
    }
    // It compares listen_backlog with the kernel's cap, where that can be read.
    if let Ok(cap) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
        let cap: u32 = cap.trim().parse().unwrap();
        let verdict = if cap < 1024 { "capped at" } else { "ok" };
        let line = format!("# net.core.somaxconn here: {cap}; listen_backlog = 1024: {verdict}");
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    // The effective settings are a valid config themselves.
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &out).unwrap();
    let (status, out2, err) = run_cli(&["check-config", again.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
    let settings = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(settings(&out), settings(&out2));
}

/// The example cluster node configs (deploy/cluster/n1.toml ..., installed by operators as
/// /etc/a-chat/nN.toml for deploy/a-chat@.service) are valid, each with its own node id.
/// (deploy/verify-deploy.sh checks the units and the HAProxy example around them.)
#[test]
fn check_config_passes_on_the_example_cluster_nodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cluster");
    for node in ["n1", "n2", "n3"] {
        let path = dir.join(format!("{node}.toml"));
        let (status, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
        assert_eq!(
            status.code(),
            Some(0),
            "check-config {}: {err}",
            path.display()
        );
        assert!(
            out.contains(&format!("\"{node}\"")),
            "node_id {node:?} missing from the effective settings of {}:\n{out}",
            path.display()
        );
        assert!(
            out.contains("proxy_protocol_from = [\"127.0.0.2/32\"]"),
            "the balancer missing from the effective settings of {}:\n{out}",
            path.display()
        );
    }
}

#[test]
fn check_config_shows_the_values_of_the_file_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("some.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:7000\", \"[::1]:7001\"]\n[limits]\nmax_line_bytes = 100\n",
    )
    .unwrap();
    let (status, out, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        out.contains("127.0.0.1:7000") && out.contains("[::1]:7001"),
        "{out}"
    );
    assert!(out.contains("max_line_bytes = 100"), "{out}");
    assert!(
        out.contains("max_recipients = 64"),
        "defaults fill the rest: {out}"
    );
    // An empty file is all defaults.
    std::fs::write(&path, "").unwrap();
    let (status, out, _) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("listen = [\"127.0.0.1:8080\"]"), "{out}");
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

/// check-config compares max_connections with the open-file limit it runs under, so an
/// operator learns before starting that accepts would fail with EMFILE below the cap.
#[test]
fn check_config_warns_when_max_connections_is_near_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    std::fs::write(&path, "[server]\nmax_connections = 1000\n").unwrap();
    let check = |nofile: u64| {
        let out = std::process::Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(common::bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run prlimit");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let tight = check(100);
    assert!(
        tight.contains("open-file limit (ulimit -n) here: 100")
            && tight.contains("exceeds the limit"),
        "{tight}"
    );
    let roomy = check(4096);
    assert!(
        roomy.contains("here: 4096; max_connections = 1000: ok"),
        "{roomy}"
    );
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

#[test]
fn check_config_names_the_cluster_tls_file_that_fails() {
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nredis = \"rediss://127.0.0.1:6380/\"\ntls_ca = \"{}\"\n\
             tls_cert = \"/nonexistent/node.pem\"\ntls_key = \"{}\"\n",
            pki.path("ca.pem"),
            pki.path("client.key")
        ),
    )
    .unwrap();
    let (status, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("key `cluster.tls_cert`"), "{err}");
    assert!(err.contains("/nonexistent/node.pem"), "{err}");
    // With the right files it passes.
    let good = std::fs::read_to_string(&path)
        .unwrap()
        .replace("/nonexistent/node.pem", &pki.path("client.pem"));
    std::fs::write(&path, good).unwrap();
    let (status, _, err) = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{err}");
}

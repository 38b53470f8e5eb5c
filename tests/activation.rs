//! ARCHITECTURE §11, socket activation, against the real binary: a launcher of the test's own
//! holds the listening socket and passes it the way systemd does (`LISTEN_FDS`,
//! `LISTEN_PID`, descriptor 3); the daemon is stopped and started again while clients
//! keep connecting, and none of them is refused.
mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, WAIT};

/// Starts the daemon on the socket `listener`, passed as descriptor 3 with `LISTEN_FDS=1`
/// and `LISTEN_PID` set by a shell that then becomes the daemon (same process id).
/// Returns it once it logs `listening on`, with its log lines so far and the rest to come.
fn start(
    listener: &TcpListener,
    config: &std::path::Path,
) -> (Child, mpsc::Receiver<String>, Vec<String>) {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ exec \"$0\" server --config \"$1\"",
        common::bin().to_str().unwrap(),
        config.to_str().unwrap(),
    ])
    .env("LISTEN_FDS", "1")
    .env("LISTEN_FDNAMES", "chat")
    .env_remove("RUST_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; they put the listener at descriptor 3,
    // without close-on-exec, in the child only.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // Already in place: only clear close-on-exec (dup2 onto itself would not).
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start the daemon");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => {
                seen.push(line);
                return (child, rx, seen);
            }
            Ok(line) => seen.push(line),
            Err(_) => panic!("the daemon did not report listening:\n{}", seen.join("\n")),
        }
    }
}

/// The address of the `listening on ADDR (tls)` line among `lines`, waiting for it.
fn tls_listener(lines: &mpsc::Receiver<String>, seen: &mut Vec<String>) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    for line in seen.iter() {
        if let Some(rest) = line.split("listening on ").nth(1) {
            if rest.contains("(tls)") {
                return rest.split(' ').next().unwrap().parse().unwrap();
            }
        }
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no TLS listener:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if let Some(rest) = line.split("listening on ").nth(1) {
            if rest.contains("(tls)") {
                return rest.split(' ').next().unwrap().parse().unwrap();
            }
        }
    }
}

#[test]
fn a_configured_listener_the_manager_did_not_pass_is_bound_not_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pki = common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("a-chat.toml");
    // The manager passes the chat socket only; the file also has a TLS listener.
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"{addr}\"\n{}", pki.toml(false)),
    )
    .unwrap();
    let (daemon, lines, mut seen) = start(&listener, &config);
    let tls = tls_listener(&lines, &mut seen);
    let mut secure = common::tlsclient::TlsClient::login(tls, &pki, "bob");
    let mut plain = Client::connect(addr);
    plain.send("alice");
    plain.send("bob: over the passed socket");
    secure.expect("from alice: over the passed socket");
    secure.send("alice: over the TLS listener a-chat bound itself");
    plain.expect("from bob: over the TLS listener a-chat bound itself");
    // It says so, naming the address and the key.
    let deadline = Instant::now() + WAIT;
    while !seen
        .iter()
        .any(|l| l.contains("WARN") && l.contains("[tls] listen") && l.contains("not passed"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no warning about the unpassed listener:\n{}",
                seen.join("\n")
            ),
        }
    }
    let status = stop(daemon);
    assert!(status.success(), "{status}");
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: kill on a child we started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit");
        thread::sleep(Duration::from_millis(10));
    }
}

/// One client: connect, log in, and see a message to itself come back.
fn log_in_once(addr: SocketAddr, name: &str) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut c = Client::from_stream(stream);
    c.send(name);
    c.send(&format!("{name}: here"));
    match c.line() {
        Some(line) if line == format!("from {name}: here") => Ok(()),
        other => Err(format!("{name}: {other:?}")),
    }
}

#[test]
fn a_restart_on_passed_sockets_refuses_no_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("a-chat.toml");
    // The file names the address the manager passes, as a-chat.socket and a-chat.toml do.
    std::fs::write(&config, format!("[server]\nlisten = \"{addr}\"\n")).unwrap();
    let (first, _log, _) = start(&listener, &config);
    let mut alice = Client::connect(addr);
    alice.send("alice");
    alice.send("alice: before the restart");
    alice.expect("from alice: before the restart");

    // Clients keep arriving through the whole restart.
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stopping = stop_clients.clone();
    let logged_in = Arc::new(AtomicUsize::new(0));
    let counted = logged_in.clone();
    let clients = thread::spawn(move || {
        let mut failed = Vec::new();
        let mut n = 0;
        while !stopping.load(Ordering::Relaxed) {
            n += 1;
            match log_in_once(addr, &format!("c{n}")) {
                Ok(()) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed.push(e),
            }
        }
        failed
    });
    // Until clients are coming in steadily, then through the stop and the start.
    let wait_for = |n: usize| {
        let deadline = Instant::now() + WAIT;
        while logged_in.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "clients stopped logging in");
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(20);
    let status = stop(first);
    assert!(status.success(), "the first daemon exited with {status}");
    alice.expect("notice: server shutting down");
    alice.expect_closed();
    let before = logged_in.load(Ordering::Relaxed);
    let (second, _log2, _) = start(&listener, &config);
    wait_for(before + 20);
    stop_clients.store(true, Ordering::Relaxed);
    let failed = clients.join().unwrap();
    let ok = logged_in.load(Ordering::Relaxed);
    eprintln!(
        "{ok} clients logged in across the restart; {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "refused or lost across the restart: {failed:?}"
    );
    assert!(ok > 0);
    let status = stop(second);
    assert!(status.success(), "{status}");
}

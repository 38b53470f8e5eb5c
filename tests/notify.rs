//! ARCHITECTURE §6, systemd `Type=notify`, against the real binary: with NOTIFY_SOCKET set,
//! the daemon sends `READY=1` once it listens and `STOPPING=1` when the drain begins,
//! to a filesystem socket and to an abstract one (`@name`).
mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{Daemon, Start, WAIT};

/// The next notification, as text; panics after WAIT.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification from the daemon within the wait");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8 notification")
}

/// Starts a daemon that notifies `notify_socket` and checks the whole sequence.
fn ready_then_stopping(socket: &UnixDatagram, notify_socket: &str) {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut d = Daemon::start_with(Start {
        env: vec![("NOTIFY_SOCKET".into(), notify_socket.into())],
        ..Start::default()
    });
    // Start_with has seen `listening on`; READY=1 follows it.
    let ready = next(socket);
    assert_eq!(ready, format!("READY=1\nSTATUS=serving on {}\n", d.addr));
    // Ready means ready: a user can chat right away.
    let mut alice = d.login("alice");
    alice.send("alice: hi");
    alice.expect("from alice: hi");

    d.signal(libc::SIGTERM);
    let stopping = next(socket);
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=draining"),
        "{stopping:?}"
    );
    alice.expect("notice: server shutting down");
    alice.expect_closed();
    let status = d.wait_exit(WAIT).expect("the daemon exits after the drain");
    assert!(status.success(), "{status}");
    let last = next(socket);
    assert!(
        last.starts_with("STATUS=stopped: drain finished, 0 delivered (2 in all), 0 dropped"),
        "{last:?}"
    );
    // Nothing else was sent.
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "an unexpected notification");
}

#[test]
fn a_filesystem_notify_socket_gets_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(&socket, path.to_str().unwrap());
}

#[cfg(target_os = "linux")]
#[test]
fn an_abstract_notify_socket_gets_ready_and_stopping() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("a-chat-notify-test-{}-{nanos}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    ready_then_stopping(&socket, &format!("@{name}"));
}

#[test]
fn an_unreachable_notify_socket_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody-listens-here.sock");
    let mut d = Daemon::start_with(Start {
        env: vec![("NOTIFY_SOCKET".into(), missing.to_str().unwrap().into())],
        ..Start::default()
    });
    assert!(d
        .wait_log(|l| l.contains("cannot notify the service manager"))
        .is_some());
    let mut alice = d.login("alice");
    alice.send("alice: still serving");
    alice.expect("from alice: still serving");
}

/// The notifications of one reload: `RELOADING=1` with the time, then `READY=1` with the
/// outcome, which is returned.
fn next_reload_status(socket: &UnixDatagram) -> String {
    let start = next(socket);
    assert!(
        start.starts_with("RELOADING=1\n") && start.contains("MONOTONIC_USEC="),
        "{start:?}"
    );
    next(socket)
}

#[test]
fn a_reload_tells_systemd_its_outcome_and_a_renewed_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let pki = common::pki::Pki::new();
    let mut d = Daemon::start_with(Start {
        toml: pki.toml(false),
        env: vec![("NOTIFY_SOCKET".into(), path.to_str().unwrap().into())],
        ..Start::default()
    });
    assert!(next(&socket).starts_with("READY=1"));
    let good = std::fs::read_to_string(&d.config_path).unwrap();

    // A renewal rewrites the same files: the reload names the certificates it took.
    pki.renew_server();
    d.signal(libc::SIGHUP);
    let reloaded = next_reload_status(&socket);
    assert!(reloaded.contains("READY=1"), "{reloaded:?}");
    assert!(
        reloaded.contains("STATUS=reloaded at ") && reloaded.contains("tls certificates"),
        "{reloaded:?}"
    );
    let line = d
        .wait_log(|l| l.contains("configuration reloaded"))
        .expect("no reload line");
    assert!(line.contains("tls certificates"), "{line}");

    // A file that does not parse: systemd hears that the reload failed, and why.
    std::fs::write(
        &d.config_path,
        format!("{good}\n[limits]\nmax_line_bytes = \"x\"\n"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let failed = next_reload_status(&socket);
    assert!(failed.contains("READY=1"), "{failed:?}");
    assert!(
        failed.contains("STATUS=reload failed at ") && failed.contains("max_line_bytes"),
        "{failed:?}"
    );
    let mut alice = d.login("alice");
    alice.send("alice: still serving");
    alice.expect("from alice: still serving");
}

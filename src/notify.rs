//! systemd readiness notification (ARCHITECTURE §6, `Type=notify`): `READY=1` once the chat
//! listeners are bound, `STOPPING=1` when the drain begins, and a `STATUS=` line with each
//! for `systemctl status`. Without `NOTIFY_SOCKET` in the environment nothing is sent.
//!
//! Filesystem sockets go through the `sd-notify` crate. An abstract socket (`@name`, what
//! systemd uses in containers and some service managers hand out) fails with ENOENT in
//! sd-notify 0.5, which treats the name as a path; for those this module sends the
//! datagram itself to the abstract address (`\0name`), through std's Linux-only
//! `SocketAddrExt::from_abstract_name`. A failed notification is logged as a warning and
//! otherwise ignored: the daemon serves with or without a service manager.

use std::io;

use sd_notify::NotifyState;
use tracing::{debug, warn};

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The chat listeners are bound: `READY=1` and `STATUS=serving on ADDR[, ADDR...]`.
pub fn ready(addrs: &[std::net::SocketAddr]) {
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let status = format!("serving on {list}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The drain has begun: `STOPPING=1` and `STATUS=draining...`.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: finishing queued deliveries"),
    ]);
}

/// A reload (SIGHUP) begins: `RELOADING=1` with the time, as systemd's `Type=notify-reload`
/// asks (systemd 253 and later), and a `STATUS=` line.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A reload is over: `READY=1` and its outcome as `STATUS=`, which `systemctl status`
/// shows (e.g. `reload failed at 12:00:01: ...; the settings in force stay`).
pub fn reloaded(outcome: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(outcome)]);
}

/// A free-form `STATUS=` line (the drain summary at the end).
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

fn send(states: &[NotifyState]) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    let result = match socket.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => send_abstract(name, states),
        None => sd_notify::notify(states),
    };
    match result {
        Ok(()) => debug!(socket = ?socket, "service manager notified"),
        Err(e) => warn!(socket = ?socket, error = %e, "cannot notify the service manager"),
    }
}

/// The message sd-notify would send: one `KEY=value` per line.
fn message(states: &[NotifyState]) -> String {
    states.iter().map(|s| format!("{s}\n")).collect()
}

/// Sends the notification to the abstract unix socket `name` (the part after `@`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(name: &[u8], states: &[NotifyState]) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let addr = SocketAddr::from_abstract_name(name)?;
    let socket = UnixDatagram::unbound()?;
    // A service manager that does not read must not stall the caller (an async task).
    socket.set_nonblocking(true)?;
    let msg = message(states);
    let sent = socket.send_to_addr(msg.as_bytes(), &addr)?;
    if sent == msg.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "incomplete write"))
    }
}

/// Abstract sockets exist on Linux only.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_name: &[u8], _states: &[NotifyState]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET names exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_one_assignment_per_line() {
        let msg = message(&[
            NotifyState::Ready,
            NotifyState::Status("serving on 1.2.3.4:5"),
        ]);
        assert_eq!(msg, "READY=1\nSTATUS=serving on 1.2.3.4:5\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_names_get_the_datagram() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let name = format!("a-chat-notify-unit-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        send_abstract(name.as_bytes(), &[NotifyState::Stopping]).unwrap();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}

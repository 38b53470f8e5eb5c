//! systemd socket activation (ARCHITECTURE §11): when started with `LISTEN_FDS` (and
//! `LISTEN_PID` naming this process), the daemon serves the listening sockets it was
//! given, from descriptor 3 on. `LISTEN_FDNAMES` tells them apart: `tls` sockets get the
//! TLS handshake, an `admin` socket serves the admin endpoint, and every other name (or
//! none) is a plain chat socket. A configured address that no passed socket of its kind
//! serves ([`covered`]) is bound by the daemon as without activation: a listener in the
//! file is never dropped because the manager passed others.
//!
//! The manager (systemd, or any launcher) keeps its own copy of each socket, so the
//! daemon closing its copy at the drain stops accepting without closing the socket:
//! connects that arrive during a restart wait in the kernel's queue for the next process.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

/// The first descriptor passed (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// What a passed socket is for, from its name in `LISTEN_FDNAMES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Chat,
    Tls,
    Admin,
    /// `websocket`: a WebSocket listener (ARCHITECTURE §14).
    WebSocket,
    /// `websocket-tls`: a WebSocket listener over TLS.
    WebSocketTls,
}

/// One socket passed by the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    pub fd: RawFd,
    pub role: Role,
}

/// Why the `LISTEN_*` variables meant for this process cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS={fds:?} is not a number of descriptors")]
    NotANumber {
        /// The variable's value.
        fds: String,
    },
    /// `LISTEN_FDS` is a number of sockets a-chat does not take (none, or over 64).
    #[error("LISTEN_FDS={0}: expected 1 to 64 sockets")]
    Count(RawFd),
}

/// Reads the passed sockets from the `LISTEN_*` variables, if they are meant for this
/// process, and removes the variables so that nothing started later takes them too.
pub fn from_env() -> Result<Option<Vec<Passed>>, ActivationError> {
    let var = |name: &str| std::env::var(name).ok();
    let parsed = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    parsed
}

/// The sockets the variables describe for process `me`; `None` when they are not set or
/// are meant for another process.
pub fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Option<Vec<Passed>>, ActivationError> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(me) {
        return Ok(None);
    }
    let count: RawFd = fds
        .trim()
        .parse()
        .map_err(|_| ActivationError::NotANumber {
            fds: fds.to_owned(),
        })?;
    if !(1..=64).contains(&count) {
        return Err(ActivationError::Count(count));
    }
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    Ok(Some(
        (0..count)
            .map(|i| Passed {
                fd: FIRST_FD + i,
                role: match names.get(i as usize).copied() {
                    Some("tls") => Role::Tls,
                    Some("admin") => Role::Admin,
                    Some("websocket") => Role::WebSocket,
                    Some("websocket-tls") => Role::WebSocketTls,
                    _ => Role::Chat,
                },
            })
            .collect(),
    ))
}

/// Whether a passed socket listening on one of `passed` already serves the configured
/// address `addr`: the same port (not 0, which asks for any), and the same address or a
/// wildcard one. A configured address that no passed socket serves is bound by the daemon
/// itself, so that a listener in the file is never dropped because others were passed.
pub fn covered(addr: SocketAddr, passed: &[SocketAddr]) -> bool {
    passed.iter().any(|p| {
        addr.port() != 0
            && p.port() == addr.port()
            && (p.ip() == addr.ip() || p.ip().is_unspecified())
    })
}

/// Takes over a passed listening socket.
pub fn listener(passed: Passed) -> std::io::Result<std::net::TcpListener> {
    // SAFETY: the manager passed this descriptor to this process (LISTEN_PID) for it to
    // use, and nothing else in the process owns it: from_env removed the variables.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(passed.fd) };
    listener.set_nonblocking(true)?;
    // A descriptor that is not a listening TCP socket fails here, not later.
    listener.local_addr()?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_for_this_process_are_numbered_from_3_and_named() {
        let passed = parse(Some("42"), Some("3"), Some("chat:tls:admin"), 42)
            .unwrap()
            .unwrap();
        assert_eq!(
            passed,
            vec![
                Passed {
                    fd: 3,
                    role: Role::Chat
                },
                Passed {
                    fd: 4,
                    role: Role::Tls
                },
                Passed {
                    fd: 5,
                    role: Role::Admin
                },
            ]
        );
        let unnamed = parse(Some("42"), Some("1"), None, 42).unwrap().unwrap();
        assert_eq!(
            unnamed,
            vec![Passed {
                fd: 3,
                role: Role::Chat
            }]
        );
    }

    #[test]
    fn sockets_for_another_process_or_none_are_ignored() {
        assert_eq!(parse(Some("41"), Some("1"), None, 42), Ok(None));
        assert_eq!(parse(None, Some("1"), None, 42), Ok(None));
        assert_eq!(parse(Some("42"), None, None, 42), Ok(None));
    }

    #[test]
    fn a_configured_address_is_covered_only_by_a_passed_socket_that_serves_it() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let passed = [a("127.0.0.1:8080"), a("0.0.0.0:8443")];
        assert!(covered(a("127.0.0.1:8080"), &passed));
        assert!(
            covered(a("10.0.0.5:8443"), &passed),
            "the wildcard serves it"
        );
        assert!(!covered(a("10.0.0.5:8080"), &passed), "another address");
        assert!(!covered(a("127.0.0.1:9000"), &passed), "another port");
        assert!(
            !covered(a("127.0.0.1:0"), &[a("127.0.0.1:0")]),
            "port 0 asks for a new one"
        );
    }

    #[test]
    fn nonsense_counts_are_errors() {
        assert!(parse(Some("42"), Some("many"), None, 42).is_err());
        assert!(parse(Some("42"), Some("0"), None, 42).is_err());
    }
}

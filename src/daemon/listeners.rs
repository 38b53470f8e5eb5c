//! The daemon's listening sockets: those the service manager passed (socket activation,
//! `LISTEN_FDS`, matched by name) and those the configuration names that no passed socket
//! serves, bound here. A listener in the file is never silently dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, warn};

use super::StartError;
use crate::activation::{self, Passed, Role};
use crate::config::Config;
use crate::runtime::{self, TcpListener};
use crate::server::Listener;
use crate::tls;

/// The admin endpoint's accept queue: it serves a few scrapers and probes.
const ADMIN_BACKLOG: u32 = 128;

/// The sockets the service manager passed, by role.
#[derive(Default)]
pub struct PassedSockets {
    /// Whether any were passed (the daemon was socket-activated).
    pub activated: bool,
    pub chat: Vec<TcpListener>,
    pub tls: Vec<TcpListener>,
    pub admin: Vec<TcpListener>,
}

impl PassedSockets {
    /// The sockets in `LISTEN_FDS`, if any.
    pub fn from_env() -> Result<PassedSockets, StartError> {
        let Some(passed) =
            activation::from_env().map_err(|e| StartError::Activation(e.to_string()))?
        else {
            return Ok(PassedSockets::default());
        };
        let take = |role: Role| -> Result<Vec<TcpListener>, StartError> {
            (passed.iter().filter(|p| p.role == role))
                .map(|&p: &Passed| {
                    activation::listener(p).map(TcpListener::from).map_err(|e| {
                        StartError::Activation(format!(
                            "descriptor {} is not a listening socket: {e}",
                            p.fd
                        ))
                    })
                })
                .collect()
        };
        Ok(PassedSockets {
            activated: true,
            chat: take(Role::Chat)?,
            tls: take(Role::Tls)?,
            admin: take(Role::Admin)?,
        })
    }
}

/// The admin endpoint's socket: passed, or bound at `[admin] listen`, or none.
pub async fn admin(
    passed: &mut PassedSockets,
    config: &Config,
) -> Result<Option<TcpListener>, StartError> {
    if let Some(listener) = passed.admin.drain(..).next() {
        return Ok(Some(listener));
    }
    let Some(addr) = config.admin.listen else {
        return Ok(None);
    };
    match runtime::bind(addr, ADMIN_BACKLOG).await {
        Ok(listener) => Ok(Some(listener)),
        Err(source) => Err(StartError::AdminBind { addr, source }),
    }
}

/// The chat and TLS listeners: the passed ones, then every configured address that no
/// passed socket of its kind serves (bound here, with a warning when activated: connects
/// to it are refused while the daemon restarts).
pub async fn chat(
    passed: PassedSockets,
    config: &Config,
    tls: Option<&Arc<tls::Server>>,
) -> Result<Vec<Listener>, StartError> {
    let addrs_of = |sockets: &[TcpListener]| -> Vec<SocketAddr> {
        sockets.iter().filter_map(|s| s.local_addr().ok()).collect()
    };
    let (passed_plain, passed_secure) = (addrs_of(&passed.chat), addrs_of(&passed.tls));
    let mut listeners = Vec::new();
    if passed.activated {
        // The manager keeps a copy of each of its sockets, so closing ours at the drain
        // leaves new connects waiting in its queue.
        info!(
            chat = passed.chat.len(),
            tls = passed.tls.len(),
            "serving the sockets passed by the service manager (LISTEN_FDS)"
        );
        for socket in passed.chat {
            listeners.push(Listener { socket, tls: None });
        }
        for socket in passed.tls {
            let tls = tls.cloned();
            listeners.push(Listener { socket, tls });
        }
    }
    let plain = (config.server.listen.iter())
        .filter(|addr| !activation::covered(**addr, &passed_plain))
        .map(|addr| (*addr, "[server] listen", None));
    let secure = (config.tls.listen.iter())
        .filter(|addr| !activation::covered(**addr, &passed_secure))
        .map(|addr| (*addr, "[tls] listen", tls.cloned()));
    for (addr, key, tls) in plain.chain(secure) {
        if passed.activated {
            warn!(
                %addr,
                "{addr} ({key}) was not passed by the service manager: a-chat binds it itself, so connects to it are refused while the daemon restarts; add it to a-chat.socket"
            );
        }
        let socket = bind(addr, key, config.server.listen_backlog).await?;
        listeners.push(Listener { socket, tls });
    }
    Ok(listeners)
}

async fn bind(
    addr: SocketAddr,
    key: &'static str,
    backlog: u32,
) -> Result<TcpListener, StartError> {
    runtime::bind(addr, backlog)
        .await
        .map_err(|source: io::Error| StartError::Bind { addr, key, source })
}

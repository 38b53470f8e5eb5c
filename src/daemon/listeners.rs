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
    pub websocket: Vec<TcpListener>,
    pub websocket_tls: Vec<TcpListener>,
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
            websocket: take(Role::WebSocket)?,
            websocket_tls: take(Role::WebSocketTls)?,
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

/// The chat listeners (plain, TLS, WebSocket and WebSocket over TLS): the passed ones,
/// then every configured address that no passed socket of its kind serves (bound here,
/// with a warning when activated: connects to it are refused while the daemon restarts).
pub async fn chat(
    passed: PassedSockets,
    config: &Config,
    tls: Option<&Arc<tls::Server>>,
) -> Result<Vec<Listener>, StartError> {
    let auth = !config.auth.users_file.is_empty();
    let front = Arc::new(crate::transport::http::Front::new(
        &config.websocket.allowed_origins,
        auth,
    ));
    let ws = config.websocket.clone();
    // Each kind: its passed sockets, its configured addresses and key, what it speaks.
    let kinds = [
        (
            passed.chat,
            config.server.listen.clone(),
            "[server] listen",
            false,
            false,
        ),
        (
            passed.tls,
            config.tls.listen.clone(),
            "[tls] listen",
            true,
            false,
        ),
        (
            passed.websocket,
            ws.listen,
            "[websocket] listen",
            false,
            true,
        ),
        (
            passed.websocket_tls,
            ws.tls_listen,
            "[websocket] tls_listen",
            true,
            true,
        ),
    ];
    if passed.activated {
        // The manager keeps a copy of each of its sockets, so closing ours at the drain
        // leaves new connects waiting in its queue.
        let count = |i: usize| kinds[i].0.len();
        info!(
            chat = count(0),
            tls = count(1),
            websocket = count(2),
            websocket_tls = count(3),
            "serving the sockets passed by the service manager (LISTEN_FDS)"
        );
    }
    let mut listeners = Vec::new();
    for (sockets, addrs, key, secure, websocket) in kinds {
        let listener = |socket| Listener {
            socket,
            tls: if secure { tls.cloned() } else { None },
            websocket: websocket.then(|| front.clone()),
        };
        let served: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
        listeners.extend(sockets.into_iter().map(listener));
        for addr in addrs
            .into_iter()
            .filter(|a| !activation::covered(*a, &served))
        {
            if passed.activated {
                warn!(
                    %addr,
                    "{addr} ({key}) was not passed by the service manager: a-chat binds it itself, so connects to it are refused while the daemon restarts; add it to a-chat.socket"
                );
            }
            let socket = bind(addr, key, config.server.listen_backlog).await?;
            listeners.push(listener(socket));
        }
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

//! The checks a configuration passes before the daemon starts, in one place for both
//! doors: `a-chat server` runs them before it binds anything, and `a-chat check-config` runs
//! the same ones and prints what they found. A check added here applies to both.
//!
//! Errors stop the start (the users file, the TLS files); warnings are settings that will
//! not work as written on this machine (the open-file limit, `net.core.somaxconn`, mixed
//! hash settings, passwords over a plaintext listener off loopback); notes are the same
//! readings when they are fine.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Config;
use crate::{runtime, tls};

/// Descriptors kept beside the chat connections: listeners, admin connections, log
/// output, certificates and files read at reload.
pub const FD_HEADROOM: u64 = 64;

/// Why a configuration cannot run (the message names the file, the key or the path).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The users file (`[auth] users_file`) cannot be used.
    #[error("{0}")]
    Users(crate::auth::UsersError),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("cannot set up TLS: {0}")]
    Tls(tls::LoadError),
    /// The admin tokens file (`[admin] tokens_file`) cannot be used.
    #[error("{0}")]
    Tokens(#[from] crate::admin::TokensError),
    /// The admin endpoint's certificate, key or client CA cannot be used.
    #[error("cannot set up HTTPS on the admin endpoint: {0}")]
    AdminTls(tls::LoadError),
}

/// What the checks found in a configuration that can run.
pub struct Preflight {
    /// The users file, loaded, when logins are authenticated.
    pub auth: Option<Arc<Auth>>,
    /// The TLS settings, loaded, when a TLS listener is configured (or asked for).
    pub tls: Option<Arc<tls::Server>>,
    /// The admin endpoint's tokens, when it listens and `[admin] tokens_file` is set.
    pub tokens: Option<crate::admin::Tokens>,
    /// The admin endpoint's TLS, when it listens and `[admin] tls_cert` is set.
    pub admin_tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
    /// Readings of this machine that are fine (check-config prints them).
    pub notes: Vec<String>,
    /// Settings that will not work as written here (logged at start, printed to stderr by
    /// check-config, with --quiet too).
    pub warnings: Vec<String>,
    /// The users' hashes use different argon2 settings (said as a warning by both).
    pub mixed_hashes: Option<String>,
}

impl Preflight {
    /// Runs every check on `config`. `want_tls`: load the TLS files even without a
    /// `[tls] listen` (TLS sockets passed by the service manager).
    pub fn run(config: &Config, want_tls: bool) -> Result<Preflight, Refused> {
        let auth = if config.auth.users_file.is_empty() {
            None
        } else {
            Some(Arc::new(Auth::load(&config.auth).map_err(Refused::Users)?))
        };
        let tls = if !config.wants_tls() && !want_tls {
            None
        } else {
            Some(Arc::new(
                tls::Server::load(&config.tls).map_err(Refused::Tls)?,
            ))
        };
        let tokens = match (&config.admin.listen, config.admin.tokens_file.as_str()) {
            (Some(_), file) if !file.is_empty() => {
                Some(crate::admin::Tokens::load(std::path::Path::new(file))?)
            }
            _ => None,
        };
        let admin_tls = match (&config.admin.listen, config.admin.tls_cert.is_empty()) {
            (Some(_), false) => {
                let files = crate::config::TlsConfig {
                    cert: config.admin.tls_cert.clone(),
                    key: config.admin.tls_key.clone(),
                    client_ca: config.admin.tls_client_ca.clone(),
                    ..Default::default()
                };
                let keys = ["admin.tls_cert", "admin.tls_key", "admin.tls_client_ca"];
                let made = tls::server_config_of(&files, keys).map_err(Refused::AdminTls)?;
                Some(Arc::new(made))
            }
            _ => None,
        };
        let (notes, mut warnings) = machine_readings(config);
        let mut mixed_hashes = None;
        if let Some(auth) = &auth {
            mixed_hashes = auth.users().mixed_settings();
            warnings.extend(passwords_in_clear(
                &config.server.listen,
                "[server] listen",
                "[tls] listen",
            ));
            let ws = &config.websocket.listen;
            warnings.extend(passwords_in_clear(
                ws,
                "[websocket] listen",
                "[websocket] tls_listen",
            ));
        }
        Ok(Preflight {
            auth,
            tls,
            tokens,
            admin_tls,
            notes,
            warnings,
            mixed_hashes,
        })
    }
}

/// With authenticated logins, a plaintext listener that is not on loopback carries
/// passwords in clear: one warning per such address.
fn passwords_in_clear<'a>(
    plain: &'a [SocketAddr],
    key: &'a str,
    instead: &'a str,
) -> impl Iterator<Item = String> + 'a {
    // `[::ffff:127.0.0.1]` is loopback too.
    plain
        .iter()
        .filter(|addr| !addr.ip().to_canonical().is_loopback())
        .map(move |addr| {
            format!(
                "logins are authenticated, but {addr} ({key}) is plaintext and not loopback: passwords cross the network in clear; serve them on {instead} instead"
            )
        })
}

/// What the kernel here says about `listen_backlog` and `max_connections`: notes that are
/// fine, and warnings for settings that will not work as written on this machine.
fn machine_readings(config: &Config) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut warnings) = (Vec::new(), Vec::new());
    let backlog = config.server.listen_backlog;
    match runtime::somaxconn() {
        Some(cap) if cap < backlog => warnings.push(format!(
            "net.core.somaxconn here: {cap}; listen_backlog = {backlog}: capped at {cap} by the kernel (raise it: sysctl net.core.somaxconn={backlog})"
        )),
        Some(cap) => notes.push(format!(
            "net.core.somaxconn here: {cap}; listen_backlog = {backlog}: ok"
        )),
        None => warnings.push(format!(
            "net.core.somaxconn could not be read (/proc/sys is hidden here, e.g. by the unit's ProcSubset=pid): the kernel may cap listen_backlog = {backlog} below what it says"
        )),
    }
    if let Some(limit) = open_file_limit() {
        let max = config.server.max_connections as u64;
        let raise = "raise the limit (LimitNOFILE=, ulimit -n, docker --ulimit nofile=) or lower max_connections";
        if max > limit {
            warnings.push(format!(
                "open-file limit (ulimit -n) here: {limit}, and max_connections exceeds the limit ({max}): accepts will fail with EMFILE long before the token cap is reached; {raise}"
            ));
        } else if max + FD_HEADROOM > limit {
            warnings.push(format!(
                "open-file limit (ulimit -n) here: {limit}, and max_connections = {max} is too close to it (it needs {} descriptors with headroom): accepts will fail with EMFILE before the token cap is reached; {raise}",
                max + FD_HEADROOM
            ));
        } else {
            notes.push(format!(
                "open-file limit (ulimit -n) here: {limit}; max_connections = {max}: ok"
            ));
        }
    }
    (notes, warnings)
}

/// The soft open-file limit (RLIMIT_NOFILE) of this process, when it has one.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

//! Reloads (ARCHITECTURE §3, §11): on SIGHUP or `POST /reload`, re-read the configuration
//! file, apply what can change while connections run, and report the rest.
//!
//! Live: `[limits]` (new connections get them; the queue bounds apply to every connection
//! at once), `[log] level`, and the TLS certificate, key and client CA (new handshakes use
//! them; live connections keep their session). Everything else (listen addresses,
//! threads, the connection caps, the admin address, the log format, the drain deadline)
//! needs a restart: a change to it is logged as such and ignored. An invalid file, or
//! certificates that cannot be read, change nothing: one error line says why.
//!
//! What changed is decided by [`diff`], a pure function of the two configurations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use signal_hook::consts::SIGHUP;
use signal_hook_async_std::Signals;
use tracing::{error, info, warn};

use crate::auth::{Auth, UsersError};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::server::Live;
use crate::telemetry::{LevelError, LevelHandle};
use crate::{runtime, tls};

/// Reads the configuration file as the command line asked (see [`Targets::load`]).
pub type Loader = Box<dyn Fn(&Path) -> Result<Config, ConfigError> + Send>;

/// What a reload can reach.
pub struct Targets {
    /// The file SIGHUP re-reads (`--config`); `None` when the daemon runs on defaults.
    pub path: Option<PathBuf>,
    /// The settings in force, as last loaded (keys that need a restart keep their
    /// start-up values here, so each reload reports them against what really runs).
    pub current: Config,
    /// Reads the file as the command line asked at start: with its `--set` and
    /// `--listen` applied again, and validated together.
    pub load: Loader,
    pub live: Arc<Live>,
    pub tls: Option<Arc<tls::Server>>,
    /// The users file in force, when logins are authenticated.
    pub auth: Option<Arc<Auth>>,
    pub level: LevelHandle,
    pub metrics: Arc<Metrics>,
    /// The admin endpoint's tokens and open paths, when it listens: re-read at every
    /// reload, as the users file is.
    pub gate: Option<Arc<crate::admin::Gate>>,
}

mod diff;
pub use diff::{diff, Change};

/// How one reload ended: what it applied (`"limits, log.level"`), or why nothing was
/// (shared by every request the reload served).
pub type Outcome = Result<String, Arc<Failed>>;

/// Why a reload changed nothing; the settings in force stay.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// The daemon runs on its built-in defaults: there is no file to read again.
    #[error("the daemon runs on built-in defaults (no --config): nothing to reload")]
    NoConfigFile,
    /// The file was gone from the settings by the time they were applied (never after
    /// a file was read).
    #[error("no configuration file")]
    NoPath,
    /// The configuration file cannot be read, or is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The new TLS certificate, key or client CA cannot be used.
    #[error("{0}")]
    Tls(#[from] tls::LoadError),
    /// The users file cannot be used.
    #[error("{0}")]
    Users(#[from] UsersError),
    /// The new `[log] level` was not taken.
    #[error("log.level: {0}")]
    Level(#[from] LevelError),
    /// The admin tokens file cannot be used.
    #[error("{0}")]
    Tokens(#[from] crate::admin::TokensError),
}

/// Reloads asked for and not yet started; more are refused (`POST /reload` answers 503)
/// or, for a SIGHUP, folded into one already waiting.
const WAITING: usize = 16;

/// One request for a reload: where its outcome goes (`None`: nobody waits for it, as for
/// a SIGHUP).
type Request = Option<futures::channel::oneshot::Sender<Outcome>>;

/// Asks the daemon's reloader for a reload. SIGHUP and the admin endpoint's
/// `POST /reload` are two doors to the same reloads: one at a time, and requests that
/// arrive during one are served together by the next.
#[derive(Clone)]
pub struct Reloads {
    /// Requests to the one task that owns the settings in force ([`start`]).
    requests: async_channel::Sender<Request>,
}

/// Why a reload was not even tried.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotTried {
    #[error("{WAITING} reloads are already waiting: try again when they are done")]
    Busy,
    #[error("the daemon is shutting down")]
    Gone,
}

impl Reloads {
    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> Result<Outcome, NotTried> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.requests.try_send(Some(tx)).map_err(|e| match e {
            async_channel::TrySendError::Full(_) => NotTried::Busy,
            async_channel::TrySendError::Closed(_) => NotTried::Gone,
        })?;
        rx.await.map_err(|_| NotTried::Gone)
    }

    /// Asks for a reload without waiting: a request that finds the queue full is served
    /// by the reloads already waiting, which read the same file.
    pub fn nudge(&self) {
        let _ = self.requests.try_send(None);
    }
}

/// Starts the task that owns the settings in force and reloads them when asked.
///
/// Reloads run one at a time: requests that arrive during one are taken together by the
/// next, so a storm of them costs a reload in a row at most, never a backlog. The file
/// reads, the parsing and the users file's dummy hash (up to a second of one core with
/// strong hash settings) run on a blocking thread, never on the thread that serves chats;
/// what they produced is applied back on this task.
pub fn start(targets: Targets) -> Reloads {
    let (requests, incoming) = async_channel::bounded::<Request>(WAITING);
    runtime::spawn(async move {
        let mut targets = targets;
        while let Ok(first) = incoming.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = incoming.try_recv() {
                waiting.push(more);
            }
            let (back, outcome) = reload_once(targets).await;
            targets = back;
            for reply in waiting.into_iter().flatten() {
                let _ = reply.send(outcome.clone());
            }
        }
    });
    Reloads { requests }
}

/// Starts listening for SIGHUP; each one asks `reloads` for a reload.
pub fn on_sighup(reloads: Reloads) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    runtime::spawn(async move {
        while signals.next().await.is_some() {
            reloads.nudge();
        }
    });
    Ok(())
}

/// One reload, start to finish; gives the targets back with the outcome.
async fn reload_once(targets: Targets) -> (Targets, Outcome) {
    crate::notify::reloading();
    let (mut targets, prepared) = runtime::spawn_blocking(move || {
        // Beside the chat on a machine with one core, the reload yields it.
        runtime::lower_thread_priority();
        let prepared = targets.prepare();
        (targets, prepared)
    })
    .await;
    let outcome = match prepared {
        Ok(prepared) => targets.apply(prepared),
        Err(e) => Err(e),
    }
    .map_err(Arc::new);
    targets.metrics.config_reloaded(outcome.is_ok());
    // systemd hears the outcome (`systemctl status` shows it), with the time, so a
    // failed reload is not mistaken for the last good one.
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    crate::notify::reloaded(&match &outcome {
        Ok(applied) => format!("reloaded at {at}: applied {applied}"),
        Err(e) => format!("reload failed at {at}, the settings in force stay: {e}"),
    });
    (targets, outcome)
}

/// What a reload read and checked, ready to be applied.
struct Prepared {
    /// The configuration file as read (with the command line's overrides).
    new: Config,
    /// The TLS configuration made from the new certificate files, when TLS is on.
    certificates: Option<futures_rustls::rustls::ServerConfig>,
    /// What differs from the settings in force.
    changes: Vec<Change>,
    /// Whether the users file was re-read (and is now in force).
    users_live: bool,
    /// The admin tokens read again (`Some(None)`: authentication turned off), when the
    /// endpoint listens.
    tokens: Option<Option<crate::admin::Tokens>>,
}

impl Targets {
    /// The blocking half of a reload: reads and checks the file, the certificates and the
    /// users file; `None` (after one error line) when nothing may be applied. The users
    /// file, when it is read, is put in force here, as its last step.
    fn prepare(&self) -> Result<Prepared, Failed> {
        let Some(path) = &self.path else {
            let why = Failed::NoConfigFile;
            warn!("SIGHUP: {why}");
            return Err(why);
        };
        let failed = |e: Failed| {
            error!("reload failed, the settings in force stay: {e}");
            e
        };
        let new = (self.load)(path).map_err(|e| failed(e.into()))?;
        // Everything that can fail is tried before anything is applied.
        // Whenever a TLS listener runs (configured, for WebSocket too, or passed by the
        // service manager) and the new file names a certificate.
        let certificates = match (&self.tls, new.tls.cert.is_empty()) {
            (Some(_), false) => Some(tls::server_config(&new.tls).map_err(|e| failed(e.into()))?),
            _ => None,
        };
        let changes = diff(&self.current, &new);
        let users_live = changes.contains(&Change::Live("auth users"));
        let tokens = match (&self.gate, changes.contains(&Change::Live("admin tokens"))) {
            (Some(_), true) if new.admin.tokens_file.is_empty() => Some(None),
            (Some(_), true) => Some(Some(
                crate::admin::Tokens::load(Path::new(&new.admin.tokens_file))
                    .map_err(|e| failed(e.into()))?,
            )),
            _ => None,
        };
        if let (Some(auth), true) = (&self.auth, users_live) {
            // The last step that can fail: it puts the new users in force when it succeeds.
            auth.reload(&new.auth).map_err(|e| failed(e.into()))?;
        }
        Ok(Prepared {
            new,
            certificates,
            changes,
            users_live,
            tokens,
        })
    }

    /// The quick half of a reload: puts what [`Targets::prepare`] made in force, and says
    /// what it applied; why not, when nothing more could be applied.
    fn apply(&mut self, prepared: Prepared) -> Result<String, Failed> {
        let Prepared {
            new,
            certificates,
            changes,
            users_live,
            tokens,
        } = prepared;
        let Some(path) = &self.path else {
            return Err(Failed::NoPath);
        };
        if let Err(e) = self.level.set(&new.log.level) {
            let e = Failed::Level(e);
            error!("reload failed, the settings in force stay: {e}");
            return Err(e);
        }
        for change in &changes {
            if let Change::Restart(key) = change {
                warn!(
                    key,
                    "reload: {key} changed, which needs a restart; ignored until then"
                );
            }
        }
        let renewed = certificates.is_some();
        if let (Some(tls), Some(config)) = (&self.tls, certificates) {
            // Re-read whether or not the paths changed: a renewal rewrites the same files.
            tls.set(config);
            let expiry = crate::certificate::expiry_of_pem_file(Path::new(&new.tls.cert));
            self.metrics
                .operator
                .certificate_expiry
                .set(expiry.unwrap_or(0));
        }
        self.live.set_limits(&new.limits);
        if let (Some(gate), Some(tokens)) = (&self.gate, tokens) {
            gate.set(tokens, new.admin.open_paths.clone());
        }
        if let (Some(auth), true) = (&self.auth, users_live) {
            self.live.revoke_removed(auth.clone());
        }
        let mut live: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Live(what) => Some(*what),
                Change::Restart(_) => None,
            })
            .collect();
        if renewed {
            // In force for new handshakes, whether or not their paths changed: a renewal
            // rewrites the same files, and the log must say it was taken.
            live.retain(|what| *what != "tls files");
            live.push("tls certificates");
        }
        // Keys that need a restart keep their values in force, so the next reload
        // compares against what really runs.
        let restart_bound = self.current.clone();
        self.current = Config {
            limits: new.limits,
            log: crate::config::LogConfig {
                level: new.log.level,
                ..restart_bound.log
            },
            tls: crate::config::TlsConfig {
                cert: new.tls.cert,
                key: new.tls.key,
                client_ca: new.tls.client_ca,
                ..restart_bound.tls
            },
            auth: if users_live {
                new.auth
            } else {
                restart_bound.auth.clone()
            },
            ..restart_bound
        };
        info!(
            file = %path.display(),
            applied = ?live,
            "configuration reloaded"
        );
        Ok(if live.is_empty() {
            "nothing (the file is as in force)".into()
        } else {
            live.join(", ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_same_file_changes_nothing() {
        let c = Config::default();
        assert!(diff(&c, &c.clone()).is_empty());
    }

    #[test]
    fn limits_and_level_are_live_and_addresses_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.limits.max_line_bytes = 100;
        new.limits.slow_consumer_grace = Duration::from_secs(1);
        new.log.level = "debug".into();
        new.server.listen = vec!["127.0.0.1:9".parse().unwrap()];
        new.server.worker_threads = 4;
        new.server.proxy_protocol_from = vec!["10.0.0.5".parse().unwrap()];
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![
                Change::Restart("server.listen"),
                Change::Restart("server.worker_threads"),
                Change::Restart("server.proxy_protocol_from"),
                Change::Live("limits"),
                Change::Live("log.level"),
            ]
        );
    }

    #[test]
    fn certificate_paths_are_live_and_tls_addresses_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.tls.cert = "/etc/a-chat/new.pem".into();
        new.tls.listen = vec!["127.0.0.1:8443".parse().unwrap()];
        assert_eq!(
            diff(&old, &new),
            vec![Change::Restart("tls.listen"), Change::Live("tls files")]
        );
    }

    #[test]
    fn websocket_listeners_and_origins_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.websocket.listen = vec!["127.0.0.1:8081".parse().unwrap()];
        assert_eq!(diff(&old, &new), vec![Change::Restart("websocket")]);
        let mut origins = new.clone();
        origins.websocket.allowed_origins = vec!["https://chat.example.org".into()];
        assert_eq!(diff(&new, &origins), vec![Change::Restart("websocket")]);
    }

    #[test]
    fn the_cluster_needs_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.cluster.redis = "redis://127.0.0.1:6379/".into();
        new.cluster.lease = Duration::from_secs(3);
        assert_eq!(diff(&old, &new), vec![Change::Restart("cluster")]);
    }
}

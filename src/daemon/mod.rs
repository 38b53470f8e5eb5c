//! The running daemon (docs/ARCHITECTURE.md, "Modules"): [`Daemon`] owns what lives as long
//! as the process (the settings in force, metrics, health, the registry of connections,
//! the cluster node, the reloader) and [`control::Control`] is the surface an operator acts
//! through. The admin endpoint, SIGHUP and the stop signals are thin adapters over it;
//! `main.rs` only parses the command line and calls [`serve`].

pub mod ask;
pub mod control;
mod listeners;
pub mod preflight;
pub mod stop;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info, warn, Instrument};

use crate::auth::Auth;
use crate::config::{self, Config, ConfigError};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::reload::{self, Reloads};
use crate::runtime::{self, TcpListener};
use crate::server::{self, Live};
use crate::telemetry::{self, Logging};
use crate::{admin, cluster, notify};
use listeners::PassedSockets;
use preflight::Preflight;
use stop::Stop;

/// How the daemon was asked to start: `a-chat server`'s flags.
pub struct Options {
    /// `--config`: the file read at start and at every reload; `None`: built-in defaults.
    pub path: Option<PathBuf>,
    /// `--listen`: replaces `[server] listen` when given.
    pub listen: Vec<SocketAddr>,
    /// `--set section.key=value`: applied after the file, at start and at every reload.
    pub sets: Vec<config::Setting>,
}

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Refused(#[from] preflight::Refused),
    #[error("socket activation: {0}")]
    Activation(String),
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
    #[error("cannot listen on the admin address {addr} ([admin] listen): {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl StartError {
    /// 2 when the settings cannot run (as for a bad flag), 1 when the system refused.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_)
            | StartError::Refused(_)
            | StartError::Activation(_)
            | StartError::Cluster(_) => 2,
            StartError::AdminBind { .. } | StartError::Bind { .. } | StartError::Signals(_) => 1,
        }
    }
}

/// `a-chat server`: starts the daemon, serves until a stop signal, drains, and says how
/// it went. Exit 0 after a drain; 2 or 1 with one line on stderr when it cannot start.
pub fn serve(options: Options) -> ExitCode {
    let failed = |e: StartError| {
        eprintln!("a-chat: {e}");
        ExitCode::from(e.exit_code())
    };
    let Options { path, listen, sets } = options;
    // The file, then --set, then --listen: at start and at every reload.
    let load = move |path: Option<&Path>| -> Result<Config, ConfigError> {
        let mut config = Config::load_with(path, &sets)?;
        if !listen.is_empty() {
            config.server.listen = listen.clone();
        }
        Ok(config)
    };
    let config = match load(path.as_deref()) {
        Ok(config) => config,
        Err(e) => return failed(e.into()),
    };
    let passed = match PassedSockets::from_env() {
        Ok(passed) => passed,
        Err(e) => return failed(e),
    };
    // Before anything is bound or logged: a bad users file or certificate is one line.
    let found = match Preflight::run(
        &config,
        !passed.tls.is_empty() || !passed.websocket_tls.is_empty(),
    ) {
        Ok(found) => found,
        Err(e) => return failed(e.into()),
    };
    runtime::init_workers(config.server.worker_threads);
    let logging = telemetry::init(&config.log);
    std::panic::set_hook(Box::new(|info| {
        // Logged inside the span of the task that panicked.
        error!(panic = %info, "panic");
    }));
    let reload_load: reload::Loader = Box::new(move |path: &Path| load(Some(path)));
    let code = runtime::block_on(async {
        let daemon = match Daemon::start(config, found, passed, path, reload_load, &logging).await {
            Ok(daemon) => daemon,
            Err(e) => {
                error!(error = %e, "cannot start");
                return failed(e);
            }
        };
        daemon.run(&logging).await
    });
    drop(logging);
    code
}

/// The running daemon: what lives as long as the process.
pub struct Daemon {
    /// The settings read at start (the reloader keeps the copy that reloads change).
    config: Arc<Config>,
    /// Every counter and gauge, for `/metrics`.
    metrics: Arc<Metrics>,
    /// What `/readyz` says: starting, ready, draining, cluster down.
    health: Arc<Health>,
    /// The open connections (the one registry of them) and the limits in force.
    live: Arc<Live>,
    /// The users file in force, when logins are authenticated.
    auth: Option<Arc<Auth>>,
    /// The cluster node, when `[cluster] redis` is set.
    cluster: Option<cluster::Node>,
    /// The reloader: SIGHUP and `POST /reload` both ask it.
    reloads: Reloads,
    /// The chat and TLS listeners, bound.
    listeners: Vec<server::Listener>,
    /// The admin endpoint's socket, when there is one.
    admin: Option<TcpListener>,
    /// Who may use which admin path; the reloader changes it.
    gate: Arc<admin::Gate>,
    /// The drain and lame duck mode, started by signals or the admin endpoint.
    stop: Arc<Stop>,
    /// The admin endpoint's HTTPS, when `[admin] tls_cert` is set.
    admin_tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
    /// Resolves when the drain begins (the server's shutdown).
    drain_begins: Option<futures::future::BoxFuture<'static, ()>>,
}

impl Daemon {
    /// Builds every part and binds every socket; nothing is served yet.
    async fn start(
        config: Config,
        found: Preflight,
        mut passed: PassedSockets,
        path: Option<PathBuf>,
        load: reload::Loader,
        logging: &Logging,
    ) -> Result<Daemon, StartError> {
        let Preflight {
            auth,
            tls,
            tokens,
            admin_tls,
            warnings,
            mixed_hashes,
            ..
        } = found;
        for warning in &warnings {
            warn!("{warning}");
        }
        // The admin listener first: if it cannot be had, nothing starts.
        let admin = listeners::admin(&mut passed, &config).await?;
        if let Some(auth) = &auth {
            info!(
                users_file = %config.auth.users_file,
                users = auth.users().len(),
                "logins are authenticated"
            );
        }
        if let Some(mixed) = mixed_hashes {
            warn!("{mixed}");
        }
        let listeners = listeners::chat(passed, &config, tls.as_ref()).await?;
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new());
        metrics
            .max_connections
            .set(config.server.max_connections as i64);
        let live = Live::new(&config.limits, &metrics);
        metrics.operator.applied_now();
        if tls.is_some() {
            let expiry = crate::certificate::expiry_of_pem_file(Path::new(&config.tls.cert));
            metrics.operator.certificate_expiry.set(expiry.unwrap_or(0));
        }
        // Not ready (/readyz) until the node has joined the cluster.
        let rules = cluster::checks::Rules::of(&config.limits);
        let cluster = cluster::start(&config.cluster, rules, metrics.clone(), health.clone())
            .map_err(|e| StartError::Cluster(e.to_string()))?;
        if let Some(node) = &cluster {
            metrics.cluster_on();
            info!(
                node = %node.router.shared.id,
                redis = %config::redact_url(&config.cluster.redis),
                lease = ?config.cluster.lease,
                "cluster node: logins are shared through Redis"
            );
        }
        let gate = Arc::new(admin::Gate::new(tokens, config.admin.open_paths.clone()));
        let reloads = reload::start(reload::Targets {
            path,
            current: config.clone(),
            load,
            live: live.clone(),
            tls,
            auth: auth.clone(),
            level: logging.level.clone(),
            metrics: metrics.clone(),
            gate: admin.as_ref().map(|_| gate.clone()),
        });
        let (stop, drain_begins) = Stop::new(
            health.clone(),
            live.clone(),
            metrics.clone(),
            config.shutdown.clone(),
        );
        Ok(Daemon {
            config: Arc::new(config),
            metrics,
            health,
            live,
            auth,
            cluster,
            reloads,
            listeners,
            admin,
            gate,
            stop,
            admin_tls,
            drain_begins: Some(Box::pin(drain_begins)),
        })
    }

    /// The surface an operator acts through (the admin endpoint's calls).
    pub fn control(&self) -> control::Control {
        control::Control {
            live: self.live.clone(),
            reloads: self.reloads.clone(),
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Installs the signal adapters, serves until the first stop signal, drains, and
    /// says how it went.
    async fn run(mut self, logging: &Logging) -> ExitCode {
        if let Err(e) = reload::on_sighup(self.reloads.clone()) {
            eprintln!("a-chat: cannot install the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
        let on_first = {
            let stop = self.stop.clone();
            move || {
                stop.drain("signal");
            }
        };
        let signals = server::drain::ignore_habitual_signals()
            .and_then(|()| stop::on_sigquit(self.stop.clone()))
            .and_then(|()| server::drain::on_signals(on_first));
        if let Err(e) = signals {
            eprintln!("a-chat: {}", StartError::Signals(e));
            return ExitCode::FAILURE;
        }
        let shutdown = self.drain_begins.take().expect("run is called once");
        // The chat listeners are bound: ready, before the admin endpoint says where it
        // listens, so that whoever reads that line and asks /readyz gets 200.
        self.health.set_ready();
        let addrs: Vec<SocketAddr> = (self.listeners.iter())
            .filter_map(|l| l.socket.local_addr().ok())
            .collect();
        for (listener, addr) in self.listeners.iter().zip(&addrs) {
            let kind = match (listener.tls.is_some(), listener.websocket.is_some()) {
                (false, false) => "",
                (true, false) => " (tls)",
                (false, true) => " (websocket)",
                (true, true) => " (websocket tls)",
            };
            info!(version = crate::VERSION, "listening on {addr}{kind}");
        }
        // Logged after the chat addresses, so that whoever reads the first
        // `listening on` line gets a chat address.
        if let Some(listener) = self.admin.take() {
            self.serve_admin(listener, logging);
        }
        notify::ready(&addrs);
        let Daemon {
            config,
            metrics,
            live,
            auth,
            cluster,
            listeners,
            ..
        } = self;
        let summary = server::run(
            listeners,
            config,
            live,
            auth,
            cluster,
            metrics.clone(),
            shutdown,
        )
        .await;
        summary.log();
        notify::status(&format!(
            "stopped: drain {}, {} delivered ({} in all), {} dropped",
            if summary.completed {
                "finished"
            } else {
                "cut short at drain_timeout"
            },
            summary.delivered,
            summary.delivered_total,
            summary.dropped(),
        ));
        metrics.log_lines_dropped(logging.dropped_lines.dropped_lines());
        ExitCode::SUCCESS
    }

    /// Starts the admin endpoint on `listener`, over [`Daemon::control`].
    fn serve_admin(&self, listener: TcpListener, logging: &Logging) {
        let Ok(addr) = listener.local_addr() else {
            warn!("the admin socket has no address: the admin endpoint is off");
            return;
        };
        let span = admin::span(addr);
        span.in_scope(|| {
            info!("admin listening on {addr}");
            let client_certificates = !self.config.admin.tls_client_ca.is_empty();
            if !addr.ip().to_canonical().is_loopback() && !self.gate.is_on() && !client_certificates {
                warn!(
                    %addr,
                    "the admin endpoint {addr} ([admin] listen) is not loopback: anyone who reaches it reads /metrics and /connections (logins and client addresses), without authentication; listen on 127.0.0.1, or allow only your scrapers with a firewall"
                );
            }
        });
        let dropped_lines = logging.dropped_lines.clone();
        let health = self.health.clone();
        let endpoint = admin::Admin {
            listener,
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            on_scrape: Box::new(move |m: &Metrics| {
                m.log_lines_dropped(dropped_lines.dropped_lines());
                m.observe_process();
                m.operator.ready.set(health.is_ready() as i64);
            }),
            accept_error_sleep: self.config.server.accept_error_sleep,
            control: Arc::new(self.control()),
            gate: self.gate.clone(),
            tls: self.admin_tls.clone(),
        };
        runtime::spawn_apart(endpoint.run().instrument(span)).detach();
    }
}

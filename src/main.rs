//! The `a-chat` command line (ARCHITECTURE §2): parse arguments, load the configuration, and
//! hand over to the server, the client, or the configuration check.

mod bench;
mod check;
mod cli;

use cli::{Cli, Command};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info, warn, Instrument};

use a_chat::config::{self, Config};
use a_chat::metrics::Metrics;
use a_chat::{
    activation, admin, auth, client, cluster, notify, reload, runtime, server, telemetry, tls,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server {
            config,
            listen,
            sets,
        } => serve(config.as_deref(), listen, sets),
        Command::Client { addr, tls, user } => {
            let login = match user.as_deref().map(client::credentials).transpose() {
                Ok(login) => login,
                Err(e) => {
                    eprintln!("a-chat: {e}");
                    return ExitCode::from(2);
                }
            };
            match client::run(addr, tls.options(), login) {
                Ok(client::Ended::Closed) => ExitCode::SUCCESS,
                Ok(client::Ended::AfterError) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("a-chat: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { path, quiet } => check::check_config(&path, quiet),
        Command::Passwd { name, file: None } => match auth::passwd::run(&name) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("a-chat: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Passwd {
            name,
            file: Some(path),
        } => match auth::passwd::run_file(&name, &path) {
            Ok(done) => {
                eprintln!("a-chat: {done} (a running daemon uses it after SIGHUP)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("a-chat: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Reload {
            config,
            admin,
            pid,
            timeout,
        } => match a_chat::daemon::ask::reload(config.as_deref(), admin, pid, timeout) {
            Ok(a_chat::daemon::ask::Asked::Applied(applied)) => {
                println!("reloaded: applied {applied}");
                ExitCode::SUCCESS
            }
            Ok(a_chat::daemon::ask::Asked::Signalled(pid)) => {
                println!("sent SIGHUP to {pid}: the outcome is in its log (an [admin] listen lets `a-chat reload` report it)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("a-chat: reload: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => bench::run(args),
        Command::Probe {
            addr,
            timeout,
            tls,
            user,
        } => {
            let user = match user.map(|u| client::credentials(&u).map(|line| (u, line))) {
                None => None,
                Some(Ok(user)) => Some(user),
                Some(Err(e)) => {
                    eprintln!("a-chat: {e}");
                    return ExitCode::from(2);
                }
            };
            match client::probe(&addr, timeout, tls.options(), user) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("a-chat: probe failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The admin endpoint's accept queue: it serves a few scrapers and probes.
const ADMIN_BACKLOG: u32 = 128;

/// With authenticated logins, a plaintext listener that is not on loopback carries
/// passwords in clear: said once at start, for each such address.
fn warn_passwords_in_clear(plain: &[SocketAddr]) {
    // `[::ffff:127.0.0.1]` is loopback too.
    for addr in plain
        .iter()
        .filter(|addr| !addr.ip().to_canonical().is_loopback())
    {
        warn!(
            %addr,
            "logins are authenticated, but {addr} ([server] listen) is plaintext and not loopback: passwords cross the network in clear; serve them on [tls] listen instead"
        );
    }
}

/// The admin endpoint has no authentication and serves logins and client addresses
/// (`/connections`): said once at start when it listens beyond loopback.
fn warn_admin_exposed(addr: SocketAddr) {
    if !addr.ip().to_canonical().is_loopback() {
        warn!(
            %addr,
            "the admin endpoint {addr} ([admin] listen) is not loopback: anyone who reaches it reads /metrics and /connections (logins and client addresses), without authentication; listen on 127.0.0.1, or allow only your scrapers with a firewall"
        );
    }
}

fn serve(path: Option<&Path>, listen: Vec<SocketAddr>, sets: Vec<config::Setting>) -> ExitCode {
    // The file, then --set, then --listen: at start and at every reload.
    let load = move |path: Option<&Path>| -> Result<Config, config::ConfigError> {
        let mut config = Config::load_with(path, &sets)?;
        if !listen.is_empty() {
            config.server.listen = listen.clone();
        }
        Ok(config)
    };
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("a-chat: {e}");
            return ExitCode::from(2);
        }
    };
    // Read before anything starts, so that a bad users file is one line and exit 2.
    let auth = if config.auth.users_file.is_empty() {
        None
    } else {
        match auth::Auth::load(&config.auth) {
            Ok(auth) => Some(Arc::new(auth)),
            Err(e) => {
                eprintln!("a-chat: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let config = Arc::new(config);
    runtime::init_workers(config.server.worker_threads);
    let logging = telemetry::init(&config.log);
    // Under `docker run` nobody runs check-config: say it here too.
    if let Some(limit) = check::open_file_limit() {
        let max = config.server.max_connections as u64;
        if max + check::FD_HEADROOM > limit {
            let how = if max > limit {
                "exceeds"
            } else {
                "comes too close to"
            };
            warn!(
                max_connections = max,
                open_file_limit = limit,
                "max_connections {how} what the open-file limit allows (it needs {} descriptors with headroom): accepts will fail with EMFILE before the token cap; raise the limit (LimitNOFILE=, ulimit -n, docker --ulimit nofile=) or lower max_connections",
                max + check::FD_HEADROOM
            );
        }
    }
    std::panic::set_hook(Box::new(|info| {
        // Logged inside the span of the task that panicked.
        error!(panic = %info, "panic");
    }));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(a_chat::health::Health::new());
    // Sockets passed by systemd (LISTEN_FDS): served instead of the configured addresses.
    let passed = match activation::from_env() {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("a-chat: socket activation: {e}");
            return ExitCode::from(2);
        }
    };
    let take = |role: activation::Role| -> Result<Vec<runtime::TcpListener>, String> {
        passed
            .iter()
            .flatten()
            .filter(|p| p.role == role)
            .map(|&p| {
                activation::listener(p)
                    .map(runtime::TcpListener::from)
                    .map_err(|e| format!("descriptor {} is not a listening socket: {e}", p.fd))
            })
            .collect()
    };
    let (passed_chat, passed_tls, passed_admin) = match (
        take(activation::Role::Chat),
        take(activation::Role::Tls),
        take(activation::Role::Admin),
    ) {
        (Ok(chat), Ok(tls), Ok(admin)) => (chat, tls, admin),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("a-chat: socket activation: {e}");
            return ExitCode::from(2);
        }
    };
    let activated = passed.is_some();
    let code = runtime::block_on(async {
        // The admin listener first: if it cannot be had, nothing starts.
        let admin_listener = match (passed_admin.into_iter().next(), config.admin.listen) {
            (Some(listener), _) => Some(listener),
            (None, None) => None,
            (None, Some(addr)) => {
                match runtime::bind(addr, ADMIN_BACKLOG).await {
                    Ok(listener) => Some(listener),
                    Err(e) => {
                        error!(%addr, error = %e, "cannot listen on the admin address");
                        eprintln!("a-chat: cannot listen on the admin address {addr} ([admin] listen): {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        let mut listeners = Vec::new();
        let backlog = config.server.listen_backlog;
        if let Some(cap) = runtime::somaxconn().filter(|&cap| cap < backlog) {
            warn!(
                listen_backlog = backlog,
                somaxconn = cap,
                "the kernel caps listen_backlog at net.core.somaxconn: raise it (sysctl net.core.somaxconn={backlog}) for the accept queue to hold {backlog} connections"
            );
        }
        let tls = if config.tls.listen.is_empty() && passed_tls.is_empty() {
            None
        } else {
            match tls::Server::load(&config.tls) {
                Ok(tls) => Some(Arc::new(tls)),
                Err(e) => {
                    error!(error = %e, "cannot set up TLS");
                    eprintln!("a-chat: cannot set up TLS: {e}");
                    return ExitCode::from(2);
                }
            }
        };
        if let Some(auth) = &auth {
            info!(
                users_file = %config.auth.users_file,
                users = auth.users().len(),
                "logins are authenticated"
            );
            if let Some(mixed) = auth.users().mixed_settings() {
                warn!("{mixed}");
            }
            warn_passwords_in_clear(&config.server.listen);
        }
        let addrs_of = |sockets: &[runtime::TcpListener]| -> Vec<SocketAddr> {
            sockets.iter().filter_map(|s| s.local_addr().ok()).collect()
        };
        let (passed_plain, passed_secure) = (addrs_of(&passed_chat), addrs_of(&passed_tls));
        if activated {
            // The manager keeps a copy of each of its sockets, so closing ours at the drain
            // leaves new connects waiting in its queue.
            info!(
                chat = passed_chat.len(),
                tls = passed_tls.len(),
                "serving the sockets passed by the service manager (LISTEN_FDS)"
            );
            for socket in passed_chat {
                listeners.push(server::Listener { socket, tls: None });
            }
            for socket in passed_tls {
                listeners.push(server::Listener {
                    socket,
                    tls: tls.clone(),
                });
            }
        }
        // Every configured address that no passed socket serves is bound here, activated
        // or not: a listener in the file is never silently dropped.
        let plain = (config.server.listen.iter())
            .filter(|addr| !activation::covered(**addr, &passed_plain))
            .map(|addr| (addr, "[server] listen", None));
        let secure = (config.tls.listen.iter())
            .filter(|addr| !activation::covered(**addr, &passed_secure))
            .map(|addr| (addr, "[tls] listen", tls.clone()));
        for (addr, key, tls) in plain.chain(secure) {
            if activated {
                warn!(
                    %addr,
                    "{addr} ({key}) was not passed by the service manager: a-chat binds it itself, so connects to it are refused while the daemon restarts; add it to a-chat.socket"
                );
            }
            match runtime::bind(*addr, backlog).await {
                Ok(socket) => listeners.push(server::Listener { socket, tls }),
                Err(e) => {
                    error!(%addr, error = %e, "cannot listen");
                    eprintln!("a-chat: cannot listen on {addr} ({key}): {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        metrics
            .max_connections
            .set(config.server.max_connections as i64);
        let live = server::Live::new(&config.limits, &metrics);
        // Not ready (/readyz) until the node has joined the cluster.
        let cluster = match cluster::start(
            &config.cluster,
            cluster::checks::Rules::of(&config.limits),
            metrics.clone(),
            health.clone(),
        ) {
            Ok(cluster) => cluster,
            Err(e) => {
                eprintln!("a-chat: cannot join the cluster: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(node) = &cluster {
            info!(
                node = %node.router.shared.id,
                redis = %config::redact_url(&config.cluster.redis),
                lease = ?config.cluster.lease,
                "cluster node: logins are shared through Redis"
            );
        }
        let reload = reload::Targets {
            path: path.map(Path::to_path_buf),
            current: (*config).clone(),
            load: Box::new(move |path: &Path| load(Some(path))),
            live: live.clone(),
            tls: tls.clone(),
            auth: auth.clone(),
            level: logging.level.clone(),
            metrics: metrics.clone(),
        };
        let reloads = reload::start(reload);
        if let Err(e) = reload::on_sighup(reloads.clone()) {
            eprintln!("a-chat: cannot install the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
        let on_first = {
            let health = health.clone();
            move || {
                health.set_draining();
                notify::stopping();
            }
        };
        let shutdown = match server::drain::ignore_habitual_signals()
            .and_then(|()| server::drain::on_signals(on_first))
        {
            Ok(shutdown) => shutdown,
            Err(e) => {
                eprintln!("a-chat: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The chat listeners are bound: ready, before the admin endpoint says where it
        // listens, so that whoever reads that line and asks /readyz gets 200.
        health.set_ready();
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect();
        for (listener, addr) in listeners.iter().zip(&addrs) {
            let kind = if listener.tls.is_some() { " (tls)" } else { "" };
            info!(version = a_chat::VERSION, "listening on {addr}{kind}");
        }
        // Logged after the chat addresses, so that whoever reads the first
        // `listening on` line gets a chat address.
        if let Some(listener) = admin_listener {
            let dropped_lines = logging.dropped_lines.clone();
            let Ok(addr) = listener.local_addr() else {
                eprintln!("a-chat: the admin socket has no address");
                return ExitCode::FAILURE;
            };
            let span = admin::span(addr);
            span.in_scope(|| {
                info!("admin listening on {addr}");
                warn_admin_exposed(addr);
            });
            let endpoint = admin::Admin {
                listener,
                metrics: metrics.clone(),
                health: health.clone(),
                on_scrape: Box::new(move |m: &Metrics| {
                    m.log_lines_dropped(dropped_lines.dropped_lines() as u64);
                    m.observe_process();
                }),
                accept_error_sleep: config.server.accept_error_sleep,
                control: Arc::new(a_chat::daemon::control::Control {
                    live: live.clone(),
                    reloads: reloads.clone(),
                }),
            };
            runtime::spawn(endpoint.run().instrument(span));
        }
        notify::ready(&addrs);
        let summary = server::run(
            listeners,
            config.clone(),
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
        ExitCode::SUCCESS
    });
    metrics.log_lines_dropped(logging.dropped_lines.dropped_lines() as u64);
    drop(logging);
    code
}

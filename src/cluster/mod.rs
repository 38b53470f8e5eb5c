//! Several nodes, one chat (ARCHITECTURE §10): the interface the server sees. The link task
//! (`link.rs`) holds the one connection to Redis; the router talks to it through two
//! channels and never waits on Redis:
//!
//! - router → link, [`Command`]: claim a login, release one, publish a relay frame to a
//!   node. The link runs them in order, many to a round trip.
//! - link → router, [`Inbound`]: frames other nodes relayed here, changes to the login
//!   directory, and what the link could not do.
//!
//! The router holds the only sender of commands: when it ends (the drain), the link
//! frees this node's logins in Redis and ends too. With `[cluster] redis = ""` none of
//! this is started and the router's paths are the single-node ones.

mod batch;
pub mod checks;
mod connection;
mod directory;
mod error;
pub mod frame;
pub mod kick;
mod link;
pub mod remote;
mod snapshot;

pub use crate::metrics::cluster::{ClusterMetrics, CrossDrop};
pub use directory::{Caps, Directory, Entry, Logins};
pub use error::{LinkError, SettingsError, StartError};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use tracing::{info_span, Instrument};

use crate::config::ClusterConfig;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::runtime::{self, JoinHandle};

/// Relay frames queued for Redis, in bytes, beyond which new ones are refused (their
/// senders are told `could not deliver`): Redis slower than the chat costs bounded memory.
pub const OUTGOING_LIMIT: usize = 64 << 20;
/// Relay frames received and not yet routed, in bytes, beyond which only the records of
/// senders with a few lines in a frame are taken (the rest are dropped and counted).
pub const INBOUND_SOFT: usize = 1 << 20;
/// Relay frames received and not yet routed, in bytes, beyond which new ones are dropped.
pub const INBOUND_LIMIT: usize = 16 << 20;
/// Messages from the link waiting for the router, at most (relay frames, directory
/// events, answers): a frame of a few bytes or a directory event costs a slot however
/// small it is. A relay frame that finds the queue full is dropped and counted; a
/// directory event that finds it fuller than [`INBOUND_EVENTS`] makes the node read its
/// copy from the registry again.
pub const INBOUND_QUEUE: usize = 16384;
/// Directory events take the queue only up to here: the rest is kept for relay frames,
/// so that a flood of (forged) events costs no relayed line.
pub const INBOUND_EVENTS: usize = INBOUND_QUEUE * 3 / 4;

/// What the router asks of the link.
pub enum Command {
    /// Claim `look` (a canonical form) for this node, as `login`.
    Claim {
        look: Box<str>,
        login: Arc<str>,
        reply: oneshot::Sender<Claim>,
    },
    /// This node no longer holds `look`.
    Release { look: Box<str> },
    /// Deliveries for logins on `node`, as a relay frame (`frame.rs`).
    Publish { node: Arc<str>, frame: Vec<u8> },
    /// An operator's kick of a login that `node` holds (`kick.rs`): published on its own,
    /// never merged with relay frames, and not given back if it finds no receiver.
    Kick { node: Arc<str>, frame: Vec<u8> },
}

/// The registry's answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Granted,
    /// Another node holds that login (or one that looks the same).
    Taken,
    /// Redis cannot be reached: `error: cluster unavailable, try again`.
    Unavailable,
}

/// What the link tells the router.
pub enum Inbound {
    /// The link is subscribing to the directory: keep its events until the snapshot.
    Subscribed,
    /// Every other node's login in the registry, read after the subscription.
    Snapshot(Logins),
    /// A change to the directory.
    Event(frame::DirEvent),
    /// Deliveries relayed to this node by another.
    Relay(Arc<[u8]>),
    /// A relay frame that did not reach its node, and why: tell its senders.
    Undelivered(Vec<u8>, CrossDrop),
    /// After an outage, another node holds this login of ours: its client must go.
    Evicted { look: Box<str> },
    /// An operator on another node kicked a login (checked against the rules).
    Kick(kick::Order),
}

/// What the link and the router share.
pub struct Shared {
    /// This node's name in Redis.
    pub id: Arc<str>,
    /// True while the link is connected and registered: logins and relays can go through.
    pub up: AtomicBool,
    /// Bytes of relay frames queued for Redis (see [`OUTGOING_LIMIT`]).
    pub outgoing: AtomicUsize,
    /// Bytes of relay frames received and not yet routed (see [`INBOUND_LIMIT`]).
    pub inbound: AtomicUsize,
    pub metrics: Arc<Metrics>,
    /// The limits relayed input is checked against, changed by a reload.
    pub rules: Arc<checks::LiveRules>,
    /// How many logins the directory copy takes.
    pub caps: Caps,
    /// Asks the link to read the directory copy from the registry again (directory
    /// events were lost); one request waits at most.
    resync: async_channel::Sender<()>,
}

impl Shared {
    /// Gives the router a frame of this node's that did not reach its node, so that its
    /// senders are told; when the router's queue is full, its deliveries are counted as
    /// lost instead.
    pub fn give_back(
        &self,
        inbound: &async_channel::Sender<Inbound>,
        frame: Vec<u8>,
        why: CrossDrop,
    ) {
        if let Err(full) = inbound.try_send(Inbound::Undelivered(frame, why)) {
            if let Inbound::Undelivered(frame, why) = full.into_inner() {
                self.metrics.cluster.dropped(why, frame::deliveries(&frame));
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Directory events were lost: the copy is to be read from the registry again.
    pub fn ask_resync(&self) {
        let _ = self.resync.try_send(());
    }
}

/// The router's end of a running cluster link.
pub struct Router {
    pub shared: Arc<Shared>,
    pub commands: async_channel::Sender<Command>,
    pub inbound: async_channel::Receiver<Inbound>,
}

/// A started cluster link: the router's end, and the task to wait for at the drain.
pub struct Node {
    pub router: Router,
    pub task: JoinHandle<()>,
}

/// The settings the link runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where Redis listens: a host and port, or a unix socket on this host.
    pub addr: RedisAddr,
    pub redis: redis::RedisConnectionInfo,
    pub node_id: Arc<str>,
    pub lease: Duration,
    /// With a `rediss://` URL: how each connection to Redis starts TLS.
    pub tls: Option<RedisTls>,
    /// How many logins the directory copy takes.
    pub caps: Caps,
}

/// Where the cluster's Redis listens.
#[derive(Debug, Clone)]
pub enum RedisAddr {
    /// `redis://host:port/` or `rediss://host:port/`.
    Tcp { host: String, port: u16 },
    /// `unix:///path` or `redis+unix:///path`: a Redis on this host, reached without TCP.
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            RedisAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// TLS to Redis: the connector (CA, and this node's certificate when given) and the name
/// Redis's certificate must carry (the URL's host).
#[derive(Clone)]
pub struct RedisTls {
    pub connector: futures_rustls::TlsConnector,
    pub name: futures_rustls::rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTls({:?})", self.name)
    }
}

/// Checks `[cluster]` for `check-config` and the start: the key at fault and why.
pub fn check(config: &ClusterConfig) -> Result<(), SettingsError> {
    if !config.enabled() {
        return match config.redis_password_file.is_empty() {
            true => Ok(()),
            false => Err(SettingsError::PasswordFileAlone),
        };
    }
    settings(config).map(|_| ())
}

/// The checked settings of `[cluster]`, the password read from its file.
pub(crate) fn settings(config: &ClusterConfig) -> Result<Settings, SettingsError> {
    use redis::IntoConnectionInfo;
    let unsupported = || SettingsError::Unsupported {
        url: crate::config::redact_url(&config.redis),
    };
    // redis-rs is built without TLS of its own: a-chat starts TLS on the socket itself, and
    // the URL is read as its redis:// twin.
    let (url, tls) = match config.redis.strip_prefix("rediss://") {
        Some(rest) => (format!("redis://{rest}"), true),
        None => (config.redis.clone(), false),
    };
    // The value is not repeated: a URL that does not parse cannot be told where its
    // password ends.
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(SettingsError::NotAUrl)?;
    let addr = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => RedisAddr::Tcp {
            host: host.clone(),
            port: *port,
        },
        redis::ConnectionAddr::Unix(path) if path.is_absolute() => RedisAddr::Unix(path.clone()),
        _ => return Err(unsupported()),
    };
    let tls = match &addr {
        RedisAddr::Tcp { host, .. } => redis_tls(config, tls, host)?,
        RedisAddr::Unix(_) => redis_tls(config, false, "")?,
    };
    if config.lease < Duration::from_secs(1) || config.lease > Duration::from_secs(3600) {
        return Err(SettingsError::Lease(config.lease));
    }
    let node_id = if config.node_id.is_empty() {
        default_node_id()
    } else {
        config.node_id.clone()
    };
    if !checks::node_ok(&node_id) {
        return Err(SettingsError::NodeId(node_id));
    }
    let mut redis = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    if !config.redis_password_file.is_empty() {
        if redis.password().is_some() {
            return Err(SettingsError::TwoPasswords);
        }
        let password = crate::config::read_password(&config.redis_password_file)
            .map_err(SettingsError::PasswordFile)?;
        redis = redis.set_password(password);
    }
    for (key, value) in [
        ("cluster.max_logins_per_node", config.max_logins_per_node),
        ("cluster.max_remote_logins", config.max_remote_logins),
    ] {
        if value == 0 {
            return Err(SettingsError::ZeroCap { key });
        }
    }
    Ok(Settings {
        addr,
        redis,
        node_id: node_id.into(),
        lease: config.lease,
        tls,
        caps: Caps {
            per_node: config.max_logins_per_node,
            total: config.max_remote_logins,
        },
    })
}

/// The TLS settings for a `rediss://` URL, from `tls_ca`, `tls_cert` and `tls_key`.
fn redis_tls(
    config: &ClusterConfig,
    tls: bool,
    host: &str,
) -> Result<Option<RedisTls>, SettingsError> {
    let given = [&config.tls_ca, &config.tls_cert, &config.tls_key];
    if !tls {
        return match given.iter().any(|path| !path.is_empty()) {
            true => Err(SettingsError::TlsWithoutRediss),
            false => Ok(None),
        };
    }
    if config.tls_ca.is_empty() {
        return Err(SettingsError::NoCa);
    }
    let cert_and_key = match (config.tls_cert.is_empty(), config.tls_key.is_empty()) {
        (true, true) => None,
        (false, false) => Some((config.tls_cert.as_ref(), config.tls_key.as_ref())),
        (false, true) => return Err(SettingsError::CertWithoutKey),
        (true, false) => return Err(SettingsError::KeyWithoutCert),
    };
    let names = ["cluster.tls_ca", "cluster.tls_cert", "cluster.tls_key"];
    let client = crate::tls::client_config_named(config.tls_ca.as_ref(), cert_and_key, names)
        .map_err(SettingsError::Tls)?;
    let (connector, name) =
        crate::tls::connector(client, host).map_err(SettingsError::ServerName)?;
    Ok(Some(RedisTls { connector, name }))
}

/// The host name, the process id and a random suffix: unique for each start.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect::<String>();
    let host = if host.is_empty() { "node".into() } else { host };
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        link::random() & 0xffff
    )
}

/// Starts the link to Redis when `[cluster] redis` is set. `/readyz` says 503 until the
/// node has joined, and whenever Redis cannot be reached.
pub fn start(
    config: &ClusterConfig,
    rules: checks::Rules,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<Option<Node>, StartError> {
    if !config.enabled() {
        return Ok(None);
    }
    let settings = settings(config).map_err(StartError)?;
    health.set_cluster_up(false);
    let (resync, resync_rx) = async_channel::bounded(1);
    let shared = Arc::new(Shared {
        id: settings.node_id.clone(),
        up: AtomicBool::new(false),
        outgoing: AtomicUsize::new(0),
        inbound: AtomicUsize::new(0),
        metrics,
        rules: Arc::new(checks::LiveRules::new(rules)),
        caps: settings.caps,
        resync,
    });
    let (commands, commands_rx) = async_channel::unbounded();
    let (inbound_tx, inbound) = async_channel::bounded(INBOUND_QUEUE);
    let span = info_span!("cluster", node = %settings.node_id);
    let link = link::Link::new(
        settings,
        shared.clone(),
        (commands_rx, resync_rx),
        inbound_tx,
        health,
    );
    let task = runtime::spawn(link.run().instrument(span));
    Ok(Some(Node {
        router: Router {
            shared,
            commands,
            inbound,
        },
        task,
    }))
}

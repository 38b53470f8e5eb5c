//! The configuration file of ARCHITECTURE §3: its TOML schema, the built-in defaults, range
//! checks, and error messages that name the file, the line and the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod error;
mod formats;
mod secret;
mod setting;
mod validate;
pub use error::ConfigError;
pub(crate) use error::{locate_key, toml_error};
use formats::{duration, one_or_many_addrs, optional_addr, sources};
pub use formats::{parse_addr, NotAnAddress};
pub use secret::{
    read_password, redact_url, Credential, CredentialError, PasswordError, ReadPasswordError,
};
pub use setting::{Setting, SettingError};
pub use validate::{check_log_filter, LogFilterError};

pub use crate::names::LoginCharset;

/// The whole configuration. Every section and key is optional; unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub cluster: ClusterConfig,
    pub websocket: WebSocketConfig,
    /// The file keys written `credential:NAME`, now holding the credential's path: for
    /// check-config to say where each came from.
    #[serde(skip)]
    pub credentials: Vec<Credential>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to accept chat connections on: one address or a list.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Connection tokens: beyond this many open connections, accepting pauses.
    pub max_connections: usize,
    /// Open connections allowed from one IP address; 0 means no cap.
    pub max_connections_per_ip: usize,
    /// Pause after an accept error that signals a resource shortage (EMFILE, ENOBUFS...).
    #[serde(with = "duration")]
    pub accept_error_sleep: Duration,
    /// The kernel's queue of connections not yet accepted (`listen(2)`'s backlog), capped
    /// by `net.core.somaxconn`. A reconnect storm that overflows it costs each dropped SYN
    /// a one-second retransmit. 4096 (Linux's default `somaxconn` since 5.4): while the
    /// one chat thread logs in the first of a storm's clients, the accept loop waits its
    /// turn, and 1024 slots overflowed in most 5000-client storms (BENCHMARKS.md).
    pub listen_backlog: u32,
    /// What a client arriving at `max_connections` meets.
    pub at_capacity: AtCapacity,
    /// Threads that run the connections' tasks; 0 means one per CPU core. One thread
    /// spares the wake-ups between threads that every hand-over would otherwise cost.
    pub worker_threads: usize,
    /// Load balancers whose connections begin with a PROXY protocol header (v1 or v2):
    /// the client address it carries is the one every per-address limit, log line and
    /// `/connections` entry uses. Empty: no connection is asked for one.
    #[serde(with = "sources")]
    pub proxy_protocol_from: Vec<crate::proxy::Source>,
    /// Connects one address may make in `connects_window` (IPv6 counted by /64); more
    /// are refused until the window ends. 0 turns the throttle off.
    pub connects_per_address: u32,
    #[serde(with = "duration")]
    pub connects_window: Duration,
    /// Addresses and networks never throttled: a balancer, an office behind one NAT.
    #[serde(with = "sources")]
    pub connects_exempt: Vec<crate::proxy::Source>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            max_connections: 10_000,
            max_connections_per_ip: 0,
            accept_error_sleep: Duration::from_millis(500),
            listen_backlog: 4096,
            at_capacity: AtCapacity::Wait,
            worker_threads: 1,
            proxy_protocol_from: Vec::new(),
            connects_per_address: 32,
            connects_window: Duration::from_secs(600),
            connects_exempt: vec![
                "127.0.0.0/8".parse().expect("a network"),
                "::1".parse().expect("an address"),
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_login_bytes: usize,
    pub max_line_bytes: usize,
    pub max_recipients: usize,
    /// Which letters a login may use: RFC 8265's (any script), or plain ASCII for
    /// servers whose users' tools cannot tell scripts apart (src/names.rs).
    pub login_charset: LoginCharset,
    #[serde(with = "duration")]
    pub login_timeout: Duration,
    /// Zero means connections never time out for being idle.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A connection's queue may stay above this for `slow_consumer_grace`, no longer.
    pub outbound_queue_bytes: usize,
    /// How long a queue may stay above `outbound_queue_bytes` before its client is cut
    /// off: a burst that a reading client works off within it costs nothing.
    #[serde(with = "duration")]
    pub slow_consumer_grace: Duration,
    /// A queue above this is cut off at once, whatever the grace.
    pub outbound_queue_hard_bytes: usize,
    /// All queues together; over it, the connections holding the most are cut first.
    pub outbound_total_bytes: usize,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// A client whose machine vanished without closing (no FIN, no reset) is found and its
    /// connection ended within about this long, freeing its login: kernel keepalive probes
    /// and `TCP_USER_TIMEOUT` (see `runtime::set_dead_peer_timeout`). Zero turns it off.
    #[serde(with = "duration")]
    pub dead_peer_timeout: Duration,
    /// Deliveries a client may cause per second (a line to 64 names costs 64), after a
    /// burst of `message_burst`; past it the client's socket is not read until the rate
    /// allows (TCP slows the client; nothing is lost). Zero turns the limit off.
    pub messages_per_second: u32,
    /// Deliveries a client may cause at once, before `messages_per_second` applies.
    pub message_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_login_bytes: 64,
            max_line_bytes: 8192,
            max_recipients: 64,
            login_charset: LoginCharset::Unicode,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::ZERO,
            outbound_queue_bytes: 1_048_576,
            slow_consumer_grace: Duration::from_secs(5),
            outbound_queue_hard_bytes: 33_554_432,
            outbound_total_bytes: 268_435_456,
            write_timeout: Duration::from_secs(10),
            dead_peer_timeout: Duration::from_secs(120),
            messages_per_second: 100,
            message_burst: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Hard deadline for the drain after SIGINT/SIGTERM.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Lame duck mode: how long the listeners keep accepting after `/readyz` turns 503,
    /// for balancers to notice and send newcomers elsewhere.
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// Lame duck mode: the time over which logged-in clients are closed, spread evenly,
    /// so that they reconnect to the other nodes a few at a time; then the drain.
    #[serde(with = "duration")]
    pub lame_duck_duration: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(10),
            drain_delay: Duration::from_secs(5),
            lame_duck_duration: Duration::from_secs(30),
        }
    }
}

/// `[server] at_capacity`: what happens to a client arriving at `max_connections`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AtCapacity {
    /// Accepting pauses until a connection ends; newcomers wait in the kernel's backlog
    /// (the book's backpressure).
    #[default]
    Wait,
    /// Newcomers get `error: server full, try again later` and are closed at once.
    Refuse,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for journald and container log shippers.
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `debug`, `a_chat=debug,info`); RUST_LOG wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the HTTP endpoint for /metrics, /healthz, /readyz; empty means off.
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// TOML file of `[tokens] name = "token"`: when set, every path but `open_paths`
    /// needs `Authorization: Bearer <token>`; `""` means no authentication (loopback only).
    pub tokens_file: String,
    /// With `tokens_file`: the paths served without a token (orchestrators' probes).
    pub open_paths: Vec<String>,
    /// A certificate chain and key (PEM): the endpoint then speaks HTTPS only.
    pub tls_cert: String,
    pub tls_key: String,
    /// With `tls_cert`: clients must present a certificate this CA (PEM) signed.
    pub tls_client_ca: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            tokens_file: String::new(),
            open_paths: vec!["/healthz".into(), "/readyz".into()],
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
        }
    }
}

/// `[tls]` (ARCHITECTURE §9): TLS listeners; absent or `listen = []` means none.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Addresses to accept TLS chat connections on: one address or a list.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// The certificate chain (PEM), the server's own certificate first.
    pub cert: String,
    /// The private key of the certificate (PEM).
    pub key: String,
    /// When set, clients must present a certificate signed by this CA (PEM): mutual TLS.
    pub client_ca: String,
    /// `"login"`: a client's certificate names the only logins its connection may use
    /// (its subjectAltName's email and DNS names, else its CN); needs `client_ca`.
    pub client_identity: ClientIdentity,
}

/// `[tls] client_identity`: what a client certificate says about the login.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientIdentity {
    /// The certificate proves the client may connect; the login line chooses the name.
    #[default]
    None,
    /// The login must be one of the certificate's names.
    Login,
}

/// `[websocket]` (ARCHITECTURE §14): chat from browsers; no address means no listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Addresses to accept WebSocket connections (and serve the chat page) on, without TLS.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub listen: Vec<SocketAddr>,
    /// The same over TLS (`wss`), with `[tls]`'s certificate, key and client CA.
    #[serde(deserialize_with = "one_or_many_addrs")]
    pub tls_listen: Vec<SocketAddr>,
    /// Pages from these origins (`https://chat.example.org`) may open a session; `"*"`
    /// lets any page. Empty: only the page a-chat serves itself (same origin). A request
    /// without an `Origin` header (not a browser) is always let through.
    pub allowed_origins: Vec<String>,
}

/// `[auth]` (ARCHITECTURE §9): authenticated logins; `users_file = ""` means open logins.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TOML file of `[users] name = "$argon2id$..."` lines made by `a-chat passwd`.
    pub users_file: String,
    /// Failed logins a minute from one address before it is refused without a check.
    pub max_failures_per_ip: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: String::new(),
            max_failures_per_ip: 10,
        }
    }
}

/// `[cluster]` (ARCHITECTURE §10): several nodes, one chat, over Redis; `redis = ""` means one node.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis every node of the cluster shares, as `redis://[user:password@]host:port/[db]`,
    /// `rediss://…` for TLS, or `unix:///path/to/redis.sock` for a Redis on this host.
    pub redis: String,
    /// This node's name in Redis; `""` is the host name, the process id and a random suffix.
    pub node_id: String,
    /// How long a node that stops renewing keeps its logins: a killed node's logins are
    /// free again within this.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// With a `rediss://` URL: the CA (PEM) that signed Redis's certificate.
    pub tls_ca: String,
    /// With a `rediss://` URL: this node's certificate and key (PEM), for a Redis that
    /// asks for one (its default, `tls-auth-clients yes`).
    pub tls_cert: String,
    pub tls_key: String,
    /// A file holding the Redis password on one line (its final newline is not part of
    /// it), so that the password stays out of the URL and this file; best given as a
    /// systemd credential (`credential:NAME`). The URL must not hold a password then.
    pub redis_password_file: String,
    /// The most logins this node's directory copy takes from any one other node: a
    /// party that can publish to Redis cannot grow the copy past it.
    pub max_logins_per_node: usize,
    /// The most logins this node's directory copy takes from all other nodes together.
    pub max_remote_logins: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: String::new(),
            node_id: String::new(),
            lease: Duration::from_secs(10),
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            redis_password_file: String::new(),
            max_logins_per_node: 100_000,
            max_remote_logins: 1_000_000,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }
}

impl Config {
    /// Whether any listener speaks TLS, and so needs `[tls]`'s certificate loaded.
    pub fn wants_tls(&self) -> bool {
        !self.tls.listen.is_empty() || !self.websocket.tls_listen.is_empty()
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(file.clone()),
            line: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text).map_err(|e| ConfigError {
            file: Some(file),
            ..e
        })
    }

    /// The configuration of the command line: the file (or the built-in defaults), then
    /// each `--set section.key=value` in order, validated together. An error in the file
    /// names the file and line; an error in a setting names the flag.
    pub fn load_with(path: Option<&Path>, sets: &[Setting]) -> Result<Config, ConfigError> {
        let (text, base) = match path {
            Some(path) => (
                std::fs::read_to_string(path).unwrap_or_default(),
                Config::load(path)?,
            ),
            None => (String::new(), Config::default()),
        };
        if sets.is_empty() {
            return Ok(base);
        }
        let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
        for set in sets {
            let section = table
                .entry(set.section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section) = section.as_table_mut() else {
                return Err(set.error(format!("[{}] is not a section", set.section)));
            };
            section.insert(set.key.clone(), set.value.clone());
        }
        let merged = toml::to_string(&table).map_err(|e| ConfigError {
            file: None,
            line: None,
            key: None,
            message: e.to_string(),
        })?;
        Config::parse(&merged).map_err(|e| {
            let blamed = sets
                .iter()
                .rev()
                .find(|set| e.key.as_deref() == Some(set.dotted().as_str()));
            match (blamed, path) {
                (Some(set), _) => ConfigError {
                    file: Some(format!("--set {}", set.shown())),
                    line: None,
                    ..e
                },
                // A check across keys that the file and the flags set together.
                (None, Some(path)) => ConfigError {
                    file: Some(format!("{} with the --set flags", path.display())),
                    line: None,
                    ..e
                },
                (None, None) => ConfigError {
                    file: Some("the --set flags".into()),
                    line: None,
                    ..e
                },
            }
        })
    }

    /// Parses and validates configuration text; `credential:NAME` values name files in
    /// `$CREDENTIALS_DIRECTORY`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::var_os(secret::DIRECTORY_VAR).map(std::path::PathBuf::from);
        Config::parse_in(text, dir.as_deref())
    }

    /// [`Config::parse`] with `credentials` as the credentials directory.
    pub fn parse_in(text: &str, credentials: Option<&Path>) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, None))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != ".").then_some(path);
            toml_error(text, e.inner(), key)
        })?;
        config
            .resolve_credentials(credentials)
            .and_then(|()| config.validate())
            .map_err(|(key, message)| ConfigError {
                file: None,
                line: locate_key(text, key),
                key: Some(key.to_owned()),
                message,
            })?;
        Ok(config)
    }
}

impl Config {
    /// The effective settings as TOML, for `check-config`: a password in the Redis URL
    /// is shown as `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.cluster.redis = redact_url(&shown.cluster.redis);
        toml::to_string(&shown).expect("the configuration always serialises")
    }
}

#[cfg(test)]
mod tests;

//! Why `[cluster]` cannot work as written, and why the link's connection to Redis failed.

use std::io;
use std::time::Duration;

use crate::config::ReadPasswordError;
use crate::tls::LoadError;

/// Why `[cluster]` cannot work as written. The message says why; [`SettingsError::key`]
/// says which key is at fault (check-config and the start name it).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `redis_password_file` is set without a cluster to use it.
    #[error("is for a cluster, and cluster.redis is empty")]
    PasswordFileAlone,
    /// A URL of a kind a-chat cannot connect to (a relative unix path, another scheme).
    #[error(
        "{url:?}: use redis://host:port/, rediss://host:port/ (TLS) or unix:///path/to/redis.sock"
    )]
    Unsupported {
        /// The URL without its password.
        url: String,
    },
    /// Not a Redis URL at all (the value is not repeated: its password could show).
    #[error("is not a Redis URL ({0}): write redis://[user:password@]host:port/[db], rediss://… (TLS) or unix:///path/to/redis.sock (the value is not shown: it may hold a password)")]
    NotAUrl(redis::RedisError),
    /// `tls_ca`, `tls_cert` or `tls_key` set for a URL that is not `rediss://`.
    #[error("tls_ca, tls_cert and tls_key are for a rediss:// URL; cluster.redis is not one")]
    TlsWithoutRediss,
    /// A `rediss://` URL without the CA to check Redis's certificate.
    #[error("a rediss:// URL needs the CA (PEM file) that signed Redis's certificate")]
    NoCa,
    /// `tls_cert` without `tls_key`.
    #[error("tls_cert needs its key")]
    CertWithoutKey,
    /// `tls_key` without `tls_cert`.
    #[error("tls_key needs its certificate")]
    KeyWithoutCert,
    /// The CA, certificate or key file cannot be used.
    #[error("{0}")]
    Tls(LoadError),
    /// The URL's host cannot be the name Redis's certificate is checked against.
    #[error("{0}")]
    ServerName(LoadError),
    /// A lease under a second or over an hour.
    #[error("{} is out of range: a lease is at least 1s (it is renewed every third of it) and at most 1h", humantime::format_duration(*.0))]
    Lease(Duration),
    /// A node id too long, or with characters the registry's keys cannot hold.
    #[error("{0:?}: use at most 128 letters, digits, '.', '_' or '-'")]
    NodeId(String),
    /// A password in the URL and a password file: one place only.
    #[error(
        "holds a password, and cluster.redis_password_file gives one too: remove it from the URL"
    )]
    TwoPasswords,
    /// The password file cannot be read, or does not hold one password.
    #[error("{0}")]
    PasswordFile(ReadPasswordError),
    /// A cap of 0 remote logins, which would leave every other node out of reach.
    #[error("0 would leave every other node out of reach: use at least 1")]
    ZeroCap {
        /// `cluster.max_logins_per_node` or `cluster.max_remote_logins`.
        key: &'static str,
    },
}

impl SettingsError {
    /// The dotted key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            SettingsError::PasswordFileAlone | SettingsError::PasswordFile(_) => {
                "cluster.redis_password_file"
            }
            SettingsError::Unsupported { .. }
            | SettingsError::NotAUrl(_)
            | SettingsError::ServerName(_)
            | SettingsError::TwoPasswords => "cluster.redis",
            SettingsError::TlsWithoutRediss | SettingsError::NoCa => "cluster.tls_ca",
            SettingsError::CertWithoutKey => "cluster.tls_key",
            SettingsError::KeyWithoutCert => "cluster.tls_cert",
            SettingsError::Tls(e) => e.key().unwrap_or("cluster.tls_ca"),
            SettingsError::Lease(_) => "cluster.lease",
            SettingsError::NodeId(_) => "cluster.node_id",
            SettingsError::ZeroCap { key } => key,
        }
    }
}

/// Why the cluster's link was not started: its settings cannot work. The message begins
/// with the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}", key = .0.key(), why = .0)]
pub struct StartError(pub SettingsError);

/// Why the link's connection to Redis failed, or was given up: the link reconnects.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No TCP or unix-socket connection within the timeout.
    #[error("no connection to {to} within {timeout:?}")]
    ConnectTimeout {
        /// `host:port`, or the socket's path.
        to: String,
        /// How long the link waited.
        timeout: Duration,
    },
    /// The connection was refused or failed.
    #[error("{to}: {source}")]
    Connect {
        /// `host:port`, or the socket's path.
        to: String,
        /// What connecting said.
        source: io::Error,
    },
    /// No TLS handshake with Redis within the timeout (`rediss://`).
    #[error("no TLS handshake with Redis within {0:?}")]
    TlsTimeout(Duration),
    /// The TLS handshake with Redis failed (its certificate, its CA, the protocol).
    #[error("TLS handshake with Redis: {0}")]
    Tls(io::Error),
    /// Redis did not answer its own handshake (`HELLO`, `AUTH`) within the timeout.
    #[error("Redis did not answer the handshake")]
    HandshakeTimeout,
    /// Redis refused a command, or the connection failed under it.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// The connection's driver ended: Redis closed it, or it failed.
    #[error("the connection closed")]
    Closed,
}

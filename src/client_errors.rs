//! Why the client's and the probe's steps failed, each said to the person who ran
//! `a-chat client` or `a-chat probe`.

use std::io;
use std::time::Duration;

use crate::auth::passwd::AskError;

/// Why `HOST:PORT` names no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not of the form `HOST:PORT` with a port number.
    #[error("{text:?} is not HOST:PORT (e.g. 127.0.0.1:8080, localhost:8080)")]
    NotHostPort {
        /// The target as written.
        text: String,
    },
    /// The resolver failed on the host name.
    #[error("cannot resolve {text}: {source}")]
    Resolve {
        /// The target as written.
        text: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The host name resolved to nothing.
    #[error("{text} resolves to no address")]
    NoAddress {
        /// The target as written.
        text: String,
    },
}

/// Why `--user` has no password to send.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The terminal could not be asked for it.
    #[error("{0}")]
    Ask(#[from] AskError),
    /// No `A_CHAT_PASSWORD`, and no terminal to ask on.
    #[error("--user needs a password: set A_CHAT_PASSWORD, or run on a terminal to be asked")]
    NoPassword,
}

/// Why a probe found no chat round trip.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection (or no TLS handshake) with the daemon; the message says where.
    #[error("{0}")]
    Connect(io::Error),
    /// The connection failed while the probe's line went out or its answer came in.
    #[error("{0}")]
    Io(io::Error),
    /// With a user: the daemon refused the login or the line.
    #[error("the daemon at {target} answered {line:?}")]
    Answered {
        /// The target as written.
        target: String,
        /// The daemon's `error:` line.
        line: String,
    },
    /// The daemon closed the connection before the line came back.
    #[error("the daemon at {target} closed the connection")]
    Closed {
        /// The target as written.
        target: String,
    },
    /// No round trip within the probe's timeout.
    #[error("no chat round trip with {target} within {timeout:?} (nothing listens, or it cannot take a client now)")]
    Timeout {
        /// The target as written.
        target: String,
        /// The probe's `--timeout`.
        timeout: Duration,
    },
}

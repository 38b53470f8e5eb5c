//! Why the users file cannot be used: read at start, by check-config, at every reload, and
//! by `a-chat passwd --file` before it writes one.

use std::io;

use crate::auth::hash;
use crate::names::LoginError;

/// Why the users file (`[auth] users_file`) cannot be used; the users in force, if any,
/// stay.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file cannot be read (absent, unreadable).
    #[error("cannot read the users file {file} ([auth] users_file): {source}")]
    Read {
        /// The file, as configured.
        file: String,
        /// What reading it said.
        source: io::Error,
    },
    /// The file was read, and breaks a rule.
    #[error("invalid users file {file}{}: {problem}", place(*line, key.as_deref()))]
    Invalid {
        /// The file, as configured.
        file: String,
        /// The 1-based line the problem is on, when it is on one.
        line: Option<usize>,
        /// The dotted key the problem is at (`users.alice`), when it is at one.
        key: Option<String>,
        /// Which rule it breaks (boxed, so that the error stays small on its way up
        /// through preflight and the daemon's start).
        problem: Box<Problem>,
    },
    /// A reload found `[auth] users_file` emptied: turning authentication off would
    /// change what every first line means, so it waits for a restart.
    #[error("[auth] users_file cannot be emptied by a reload: turning authentication off needs a restart")]
    Emptied,
}

/// What is wrong in a users file that was read.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Not TOML, or not the file's schema (another section, a value that is not a
    /// string); the message is the TOML parser's, as the configuration file's errors say it.
    #[error("{0}")]
    Toml(String),
    /// Two names that are one login to the router (`alice`, `Alice`): one of them would
    /// log in with either password.
    #[error(
        "user \"{name}\" looks like user \"{like}\"{}: they would be one login with two passwords; keep one of them",
        like_line.map_or(String::new(), |line| format!(" (line {line})"))
    )]
    LookAlike {
        /// The name further down the file, the one refused.
        name: String,
        /// The name it looks like.
        like: String,
        /// The line of `like`, when it can be found.
        like_line: Option<usize>,
    },
    /// A name that could never be sent as a login.
    #[error("user \"{name}\" is not a valid login: {why}")]
    NotALogin {
        /// The name as the file gives it.
        name: String,
        /// Which rule of logins it breaks.
        why: LoginError,
    },
    /// A password that is not an argon2id hash (a password in clear, another algorithm).
    #[error("the password of user \"{name}\" is not an argon2id hash ({source}): make one with `a-chat passwd {name}`")]
    NotAHash {
        /// The user whose value it is (the value itself is never repeated).
        name: String,
        /// What is wrong with the value.
        source: hash::ParseError,
    },
    /// No random bytes for the password of the dummy hash an unknown name is checked
    /// against.
    #[error("random bytes: {0}")]
    Random(io::Error),
    /// The dummy hash could not be made with the file's costliest parameters.
    #[error("{0}")]
    Dummy(hash::MakeError),
}

/// `, line N, key `K`` for the parts of a place that are known; empty when none is.
fn place(line: Option<usize>, key: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out += &format!(", line {line}");
    }
    if let Some(key) = key {
        out += &format!(", key `{key}`");
    }
    out
}

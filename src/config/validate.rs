//! Checks of the configuration that the types alone cannot express: ranges, keys that
//! must agree with each other, and log filters that would silence the daemon.

use std::net::SocketAddr;
use std::time::Duration;

use super::Config;

/// Whether binding `a` and then `b` fails with "address in use": the same port (not 0, which
/// picks a free one), and the same address or a wildcard on either side.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Config {
    /// A chat listener that the admin endpoint's address would collide with.
    fn admin_clash(&self) -> Option<(&'static str, SocketAddr)> {
        let admin = self.admin.listen?;
        let chat = self.server.listen.iter().map(|a| ("server.listen", *a));
        let tls = self.tls.listen.iter().map(|a| ("tls.listen", *a));
        let ws = self
            .websocket
            .listen
            .iter()
            .map(|a| ("websocket.listen", *a));
        let wss = (self.websocket.tls_listen.iter()).map(|a| ("websocket.tls_listen", *a));
        chat.chain(tls)
            .chain(ws)
            .chain(wss)
            .find(|(_, a)| clash(*a, admin))
            .map(|(key, _)| (key, admin))
    }

    /// The listeners: at least one chat address, an admin address of its own, and a TLS
    /// listener's certificate and key.
    fn validate_listeners(&self) -> Result<(), (&'static str, String)> {
        let ws = &self.websocket;
        if self.server.listen.is_empty()
            && self.tls.listen.is_empty()
            && ws.listen.is_empty()
            && ws.tls_listen.is_empty()
        {
            return Err((
                "server.listen",
                "needs at least one address (or set tls.listen or websocket.listen instead)".into(),
            ));
        }
        for origin in &ws.allowed_origins {
            if let Err(why) = crate::transport::http::check_origin_setting(origin) {
                return Err(("websocket.allowed_origins", format!("{origin:?}: {why}")));
            }
        }
        if let Some((key, addr)) = self.admin_clash() {
            return Err((
                "admin.listen",
                format!(
                    "{addr} is also a chat address ({key}): the daemon could not bind it twice; give the admin endpoint a port of its own"
                ),
            ));
        }
        if self.wants_tls() {
            if self.tls.cert.is_empty() {
                return Err((
                    "tls.cert",
                    "a TLS listener (tls.listen or websocket.tls_listen) needs a certificate (PEM file)".into(),
                ));
            }
            if self.tls.key.is_empty() {
                return Err((
                    "tls.key",
                    "a TLS listener needs a private key (PEM file)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Who may do what and for how long: the rate a client may send at, the connect
    /// throttle, lame duck timing, client certificates as logins, and the admin paths
    /// open without a token.
    fn validate_access(&self) -> Result<(), (&'static str, String)> {
        let l = &self.limits;
        if l.messages_per_second > 0 && (l.message_burst as usize) < l.max_recipients {
            return Err((
                "limits.message_burst",
                format!(
                    "{} is below limits.max_recipients ({}): a line to every recipient allowed must fit in one burst",
                    l.message_burst, l.max_recipients
                ),
            ));
        }
        if self.tls.client_identity == super::ClientIdentity::Login && self.tls.client_ca.is_empty()
        {
            return Err((
                "tls.client_identity",
                "\"login\" needs tls.client_ca: without client certificates there is no name to check the login against".into(),
            ));
        }
        let hour = Duration::from_secs(3600);
        let (sh, s) = (&self.shutdown, &self.server);
        for (key, value, most) in [
            ("shutdown.drain_delay", sh.drain_delay, hour),
            ("shutdown.lame_duck_duration", sh.lame_duck_duration, hour),
            ("server.connects_window", s.connects_window, 24 * hour),
        ] {
            if value > most {
                return Err((
                    key,
                    format!("{value:?} is too long: the most allowed is {most:?}"),
                ));
            }
        }
        if s.connects_per_address > 0 && s.connects_window.is_zero() {
            return Err((
                "server.connects_window",
                "must be longer than 0s while connects_per_address is set (0 turns the throttle off)".into(),
            ));
        }
        let ad = &self.admin;
        if ad.tls_cert.is_empty() != ad.tls_key.is_empty() {
            let key = if ad.tls_cert.is_empty() {
                "admin.tls_cert"
            } else {
                "admin.tls_key"
            };
            return Err((
                key,
                "admin.tls_cert and admin.tls_key go together: set both for HTTPS, or neither"
                    .into(),
            ));
        }
        if !ad.tls_client_ca.is_empty() && ad.tls_cert.is_empty() {
            return Err((
                "admin.tls_client_ca",
                "client certificates need HTTPS: set admin.tls_cert and admin.tls_key too".into(),
            ));
        }
        for path in &self.admin.open_paths {
            if !path.starts_with('/') || path.contains(['?', ' ']) {
                return Err((
                    "admin.open_paths",
                    format!("{path:?} is not a path: write it as the request names it, e.g. \"/healthz\""),
                ));
            }
        }
        Ok(())
    }

    /// Range checks that the types alone cannot express.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        fn at_least(key: &'static str, v: usize, min: usize) -> Result<(), (&'static str, String)> {
            if v < min {
                return Err((key, format!("{v} is too small: the least allowed is {min}")));
            }
            Ok(())
        }
        fn at_most(key: &'static str, v: usize, max: usize) -> Result<(), (&'static str, String)> {
            if v > max {
                return Err((key, format!("{v} is too large: the most allowed is {max}")));
            }
            Ok(())
        }
        fn nonzero(key: &'static str, d: Duration) -> Result<(), (&'static str, String)> {
            if d.is_zero() {
                return Err((key, "must be longer than 0s".into()));
            }
            Ok(())
        }
        let (s, l) = (&self.server, &self.limits);
        self.validate_listeners()?;
        at_least(
            "auth.max_failures_per_ip",
            self.auth.max_failures_per_ip as usize,
            1,
        )?;
        at_least("server.max_connections", s.max_connections, 1)?;
        at_most("server.max_connections", s.max_connections, 1_000_000)?;
        nonzero("server.accept_error_sleep", s.accept_error_sleep)?;
        at_least("server.listen_backlog", s.listen_backlog as usize, 1)?;
        at_most("server.listen_backlog", s.listen_backlog as usize, 65_535)?;
        at_most("server.worker_threads", s.worker_threads, 1024)?;
        at_least("limits.max_login_bytes", l.max_login_bytes, 1)?;
        at_most("limits.max_login_bytes", l.max_login_bytes, 1024)?;
        at_least("limits.max_line_bytes", l.max_line_bytes, 16)?;
        at_most("limits.max_line_bytes", l.max_line_bytes, 16 << 20)?;
        at_least("limits.max_recipients", l.max_recipients, 1)?;
        at_most("limits.max_recipients", l.max_recipients, 10_000)?;
        nonzero("limits.login_timeout", l.login_timeout)?;
        nonzero("limits.write_timeout", l.write_timeout)?;
        // A queue must hold at least one delivery of the longest line, and the longest
        // line the server says itself (an error naming a login), or the server's own
        // answers would cut the client off as a slow consumer instead of telling it.
        let delivery = l.max_line_bytes + l.max_login_bytes + 16;
        let answer = LONGEST_ANSWER + l.max_login_bytes;
        at_least(
            "limits.outbound_queue_bytes",
            l.outbound_queue_bytes,
            delivery.max(answer),
        )?;
        // And a burst of answers to bad lines (20 before the connection is closed) must
        // fit under the hard bound.
        at_least(
            "limits.outbound_queue_hard_bytes",
            l.outbound_queue_hard_bytes,
            BAD_LINE_ANSWERS * answer,
        )?;
        if l.outbound_queue_hard_bytes < l.outbound_queue_bytes {
            return Err((
                "limits.outbound_queue_hard_bytes",
                format!(
                    "{} is below limits.outbound_queue_bytes ({}): the hard bound must be at least the soft one",
                    l.outbound_queue_hard_bytes, l.outbound_queue_bytes
                ),
            ));
        }
        if l.outbound_total_bytes < l.outbound_queue_hard_bytes {
            return Err((
                "limits.outbound_total_bytes",
                format!(
                    "{} is below limits.outbound_queue_hard_bytes ({}): all queues together must hold at least one full queue",
                    l.outbound_total_bytes, l.outbound_queue_hard_bytes
                ),
            ));
        }
        nonzero("limits.slow_consumer_grace", l.slow_consumer_grace)?;
        nonzero("shutdown.drain_timeout", self.shutdown.drain_timeout)?;
        self.validate_access()?;
        if let Err(e) = check_log_filter(&self.log.level) {
            return Err(("log.level", e.to_string()));
        }
        crate::cluster::check(&self.cluster).map_err(|e| (e.key(), e.to_string()))?;
        Ok(())
    }
}

/// Bytes of the longest line the server sends itself, without the login it may name
/// (`error: not a message: write "name1, name2: text"`, `error: no such user "..."`).
const LONGEST_ANSWER: usize = 64;
/// Answers to bad lines a connection may be owed at once (the bad-line burst, and the one
/// that closes it).
const BAD_LINE_ANSWERS: usize = 21;

/// Levels a log filter may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// What a log filter may hold, said after each way it can be wrong.
const FILTER_HINT: &str = "write a level (error, warn, info, debug, trace, off) or target=level, comma-separated, e.g. \"info\" or \"a_chat=debug,info\"";

/// Why a log filter (`[log] level` or `RUST_LOG`) is refused.
#[derive(Debug, thiserror::Error)]
pub enum LogFilterError {
    /// Nothing but blanks.
    #[error("empty log filter: {FILTER_HINT}")]
    Empty,
    /// A `=target` directive: `=` with nothing before it.
    #[error("{directive:?} has no target before '=': {FILTER_HINT}")]
    NoTarget {
        /// The directive as written.
        directive: String,
    },
    /// A directive whose level is not one of the levels (a typo, a lone target name).
    #[error("{directive:?} is not a log level: {FILTER_HINT}")]
    NotALevel {
        /// The directive as written.
        directive: String,
    },
    /// The filter parser itself refused it.
    #[error("not a log filter: {0}")]
    Parse(tracing_subscriber::filter::ParseError),
}

/// Checks a log filter (`[log] level` or `RUST_LOG`): comma-separated directives, each a
/// level (`info`) or `target=level` (`a_chat=debug`). Stricter than the filter parser
/// itself, which takes a lone word such as `verbose` for a target name and then shows
/// nothing at all: a typo would silence the daemon.
pub fn check_log_filter(filter: &str) -> Result<(), LogFilterError> {
    if filter.trim().is_empty() {
        return Err(LogFilterError::Empty);
    }
    for directive in filter.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            Some(_) => {
                let directive = directive.to_owned();
                return Err(LogFilterError::NoTarget { directive });
            }
            None => directive,
        };
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            let directive = directive.to_owned();
            return Err(LogFilterError::NotALevel { directive });
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(LogFilterError::Parse)
}

//! What arrives before a login that is not a login: health probes, and garbage (bytes
//! that are not the chat's text protocol). Both are counted here; garbage is logged at
//! debug per connection, and summarised in one warning at most once a minute, so that a
//! scanner or a misconfigured TLS client cannot fill the log (see docs/OPERATIONS.md).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How often, at most, pre-login garbage is summarised in a warning.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What kind of garbage a connection sent before its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    /// A first line that is not UTF-8.
    InvalidUtf8,
    /// A TLS ClientHello on a plaintext listener (a client set up for TLS, or a scanner).
    TlsOnPlaintext,
    /// A first line longer than `max_line_bytes`.
    LineTooLong,
}

impl Garbage {
    pub const ALL: [Garbage; 3] = [
        Garbage::InvalidUtf8,
        Garbage::TlsOnPlaintext,
        Garbage::LineTooLong,
    ];

    /// The `kind` label of `achat_prelogin_garbage_total`.
    pub fn label(self) -> &'static str {
        match self {
            Garbage::InvalidUtf8 => "invalid_utf8",
            Garbage::TlsOnPlaintext => "tls_on_plaintext",
            Garbage::LineTooLong => "line_too_long",
        }
    }

    /// How the summary warning names it.
    fn words(self) -> &'static str {
        match self {
            Garbage::InvalidUtf8 => "invalid utf-8",
            Garbage::TlsOnPlaintext => "tls on plaintext",
            Garbage::LineTooLong => "line too long",
        }
    }
}

/// Whether the first bytes a client sent are a TLS handshake record (a ClientHello starts
/// with content type 22 and a 3.x version); nothing a person types starts like that.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0..=4, ..])
}

/// The counters of what arrived before a login, and when garbage was last summarised.
#[derive(Debug)]
pub struct PreLogin {
    /// `achat_probes_total`: probe lines answered (an empty first line, what `a-chat
    /// probe` sends), kept apart from refused logins so health checks do not look like
    /// bad clients.
    pub probes: Counter,
    /// `achat_prelogin_garbage_total`, one per [`Garbage::ALL`].
    garbage: Vec<Counter>,
    /// When garbage was last summarised in a warning and the counts then: the next
    /// summary reports what came since.
    warned: Mutex<Option<(Instant, [u64; 3])>>,
}

/// What one summary warning says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Since the last summary, or `None` for the first since start.
    pub since: Option<Duration>,
    /// Connections that sent garbage since then, per [`Garbage::ALL`].
    pub counts: [u64; 3],
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: u64 = self.counts.iter().sum();
        let plural = if total == 1 { "" } else { "s" };
        write!(f, "{total} connection{plural} sent garbage before login")?;
        match self.since {
            Some(since) => write!(f, " in the last {}s", since.as_secs())?,
            None => f.write_str(" since start")?,
        }
        let kinds: Vec<String> = Garbage::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{}: {n}", kind.words()))
            .collect();
        write!(
            f,
            " ({}); each is logged at debug, and summarised here at most once a minute",
            kinds.join(", ")
        )
    }
}

impl PreLogin {
    pub fn register(registry: &mut Registry) -> PreLogin {
        let probes = Counter::default();
        registry.register(
            "probes",
            "Probe lines answered (an empty first line, what `a-chat probe` sends): no login, no password check, no failed login",
            probes.clone(),
        );
        let family = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "prelogin_garbage",
            "Connections closed for sending garbage before their login, by kind (invalid_utf8, tls_on_plaintext: a TLS ClientHello on a plaintext listener, line_too_long)",
            family.clone(),
        );
        let garbage = Garbage::ALL
            .iter()
            .map(|kind| family.get_or_create_owned(&vec![("kind", kind.label())]))
            .collect();
        PreLogin {
            probes,
            garbage,
            warned: Mutex::new(None),
        }
    }

    /// Counts a connection that sent garbage before its login; gives the summary to log
    /// as a warning when none was logged in the last [`SUMMARY_EVERY`].
    pub fn garbage(&self, kind: Garbage, now: Instant) -> Option<Summary> {
        let at = Garbage::ALL.iter().position(|&k| k == kind)?;
        self.garbage[at].inc();
        let counts = self.counts();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let summary = summary_due(*warned, counts, now)?;
        *warned = Some((now, counts));
        Some(summary)
    }

    /// Connections that sent garbage since start, per [`Garbage::ALL`].
    pub fn counts(&self) -> [u64; 3] {
        let mut counts = [0; 3];
        for (n, counter) in counts.iter_mut().zip(&self.garbage) {
            *n = counter.get();
        }
        counts
    }
}

/// The summary to log now, given the last one (when and the counts then) and the counts
/// now; `None` within [`SUMMARY_EVERY`] of the last.
fn summary_due(
    last: Option<(Instant, [u64; 3])>,
    counts: [u64; 3],
    now: Instant,
) -> Option<Summary> {
    match last {
        None => Some(Summary {
            since: None,
            counts,
        }),
        Some((when, _)) if now.saturating_duration_since(when) < SUMMARY_EVERY => None,
        Some((when, then)) => {
            let mut since = [0; 3];
            for ((d, now), then) in since.iter_mut().zip(counts).zip(then) {
                *d = now.saturating_sub(then);
            }
            Some(Summary {
                since: Some(now.saturating_duration_since(when)),
                counts: since,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_summarised_at_most_once_a_minute_with_what_came_since() {
        let mut registry = Registry::default();
        let pre = PreLogin::register(&mut registry);
        let t0 = Instant::now();
        let first = pre
            .garbage(Garbage::TlsOnPlaintext, t0)
            .expect("the first warns");
        assert_eq!(first.counts, [0, 1, 0]);
        assert_eq!(
            first.to_string(),
            "1 connection sent garbage before login since start (tls on plaintext: 1); each is logged at debug, and summarised here at most once a minute"
        );
        for i in 0..199 {
            let kind = if i % 2 == 0 {
                Garbage::InvalidUtf8
            } else {
                Garbage::TlsOnPlaintext
            };
            let at = t0 + Duration::from_millis(i * 100);
            assert_eq!(pre.garbage(kind, at), None, "within the minute: {i}");
        }
        assert_eq!(pre.counts(), [100, 100, 0]);
        let later = pre
            .garbage(Garbage::LineTooLong, t0 + Duration::from_secs(61))
            .expect("a minute later");
        assert_eq!(later.counts, [100, 99, 1]);
        assert!(
            later.to_string().starts_with(
                "200 connections sent garbage before login in the last 61s (invalid utf-8: 100, tls on plaintext: 99, line too long: 1)"
            ),
            "{later}"
        );
    }

    #[test]
    fn a_tls_client_hello_is_told_from_text() {
        assert!(looks_like_tls(b"\x16\x03\x01\x02\x00\x01"));
        assert!(looks_like_tls(b"\x16\x03\x03"));
        assert!(!looks_like_tls(b"\x16\x03"), "too short to tell");
        assert!(!looks_like_tls(b"alice\n"));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(b""));
    }
}

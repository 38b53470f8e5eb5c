//! What a connection did, for its close line and for `GET /connections` (ARCHITECTURE §11): who
//! it is, since when, bytes and messages each way, and why it ended. Kept in the
//! connection's queue, which its reader, its writer and the budget's list all reach.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::metrics::{CloseReason, LabelSet, Transport};

/// One connection's figures; counters are updated once per read or write, not per line.
#[derive(Debug)]
pub struct ConnInfo {
    /// The connection's id, as in its log lines.
    pub conn: u64,
    pub peer: SocketAddr,
    /// What it arrived over (tcp, tls, ws, wss), for `/connections`.
    pub transport: Transport,
    /// When it was accepted, in milliseconds since the Unix epoch (every idle connection
    /// keeps these figures: they are kept small).
    pub since_ms: u64,
    /// Set once the login is granted.
    pub login: OnceLock<std::sync::Arc<str>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Message lines received from the client.
    pub messages_in: AtomicU32,
    /// Deliveries written to the client.
    pub messages_out: AtomicU32,
    /// Why it ended (a [`CloseReason`]'s index, 0 (`Closed`) while undecided), set by
    /// whoever decides first; the close line says `closed` when no one did.
    reason: AtomicU8,
}

impl ConnInfo {
    pub fn new(conn: u64, peer: SocketAddr, transport: Transport) -> ConnInfo {
        ConnInfo {
            conn,
            peer,
            transport,
            since_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            login: OnceLock::new(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            messages_in: AtomicU32::new(0),
            messages_out: AtomicU32::new(0),
            reason: AtomicU8::new(0),
        }
    }

    /// Records why the connection ends, unless a reason was recorded already; true when
    /// this call recorded it.
    pub fn ending(&self, reason: CloseReason) -> bool {
        let at = reason.index() as u8;
        self.reason
            .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn reason(&self) -> CloseReason {
        let at = self.reason.load(Ordering::Acquire) as usize;
        CloseReason::ALL
            .get(at)
            .copied()
            .unwrap_or(CloseReason::Closed)
    }

    /// How long the connection has been open.
    pub fn duration(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(now.saturating_sub(self.since_ms))
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn count(counter: &AtomicU32, n: u64) {
        counter.fetch_add(n.min(u32::MAX as u64) as u32, Ordering::Relaxed);
    }

    pub fn counted(counter: &AtomicU32) -> u64 {
        counter.load(Ordering::Relaxed) as u64
    }

    /// One JSON object (no trailing newline), with `queued` bytes waiting now.
    pub fn json(&self, queued: usize) -> String {
        let since = self.since_ms as f64 / 1000.0;
        let login = match self.login.get() {
            Some(login) => json_string(login),
            None => "null".into(),
        };
        format!(
            "{{\"id\":{},\"login\":{},\"peer\":\"{}\",\"transport\":\"{}\",\"since\":{:.3},\"bytes_in\":{},\"bytes_out\":{},\"messages_in\":{},\"messages_out\":{},\"queued_bytes\":{}}}",
            self.conn,
            login,
            self.peer,
            self.transport.label(),
            since,
            Self::get(&self.bytes_in),
            Self::get(&self.bytes_out),
            Self::counted(&self.messages_in),
            Self::counted(&self.messages_out),
            queued
        )
    }
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a request to close one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// Told with the notice and closing now; the login it had, if any.
    Now { conn: u64, login: Option<Arc<str>> },
    /// It was ending already (closed by an operator before, or for another reason):
    /// nothing more was done. Asking twice is harmless.
    Already { conn: u64, reason: CloseReason },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_escapes_what_it_must() {
        assert_eq!(json_string("a\"b\\c\u{1b}"), "\"a\\\"b\\\\c\\u001b\"");
        let info = ConnInfo::new(7, "127.0.0.1:9".parse().unwrap(), Transport::Tcp);
        let _ = info.login.set("бob".into());
        ConnInfo::add(&info.bytes_in, 10);
        let json = info.json(3);
        assert!(
            json.starts_with("{\"id\":7,\"login\":\"бob\",\"peer\":\"127.0.0.1:9\""),
            "{json}"
        );
        assert!(json.ends_with("\"bytes_in\":10,\"bytes_out\":0,\"messages_in\":0,\"messages_out\":0,\"queued_bytes\":3}"), "{json}");
        assert!(json.contains("\"transport\":\"tcp\""), "{json}");
        assert_eq!(info.reason(), CloseReason::Closed);
        info.ending(CloseReason::IdleTimeout);
        info.ending(CloseReason::Drain);
        assert_eq!(info.reason(), CloseReason::IdleTimeout);
    }
}

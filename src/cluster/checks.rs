//! What a node takes from Redis, checked as a client's input is; pure, no I/O.
//!
//! Anyone who can publish to the cluster's Redis can send a node relay records and
//! directory events, so they pass the rules a client's input passes at the reader
//! (docs/CLUSTER.md, "What a node takes from Redis"): a relayed line is exactly
//! `from <sender>: <text>\n` for its record's sender, with one line ending and no control
//! characters in the text (`protocol::has_control`, the reader's own check), and text
//! no longer than `max_line_bytes`; a sender, a recipient and a login in a directory
//! event pass the login rules (`names::validate_login`) within `max_login_bytes`; node
//! names are what `[cluster] node_id` allows. The sender must also be a login that the
//! node named by the frame holds in the directory copy: `remote.rs` asks the copy.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::frame::DirEvent;
use crate::names::{self, LoginCharset};
use crate::protocol;

/// The limits relayed input is checked against: this node's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `[limits] max_login_bytes`: the longest sender, recipient or login in an event.
    pub max_login_bytes: usize,
    /// `[limits] max_line_bytes`: the longest text of a relayed line (a client's whole
    /// line, recipients included, is at most this long, so its text is too).
    pub max_line_bytes: usize,
}

impl Rules {
    /// The rules of `[limits]`.
    pub fn of(limits: &crate::config::Limits) -> Rules {
        Rules {
            max_login_bytes: limits.max_login_bytes,
            max_line_bytes: limits.max_line_bytes,
        }
    }
}

/// [`Rules`] shared between the link, the router and a reload (SIGHUP), which changes
/// them as it changes `[limits]` for new connections.
#[derive(Debug)]
pub struct LiveRules {
    /// `[limits] max_login_bytes` as of the last reload.
    max_login_bytes: AtomicUsize,
    /// `[limits] max_line_bytes` as of the last reload.
    max_line_bytes: AtomicUsize,
}

impl LiveRules {
    pub fn new(rules: Rules) -> LiveRules {
        LiveRules {
            max_login_bytes: AtomicUsize::new(rules.max_login_bytes),
            max_line_bytes: AtomicUsize::new(rules.max_line_bytes),
        }
    }

    pub fn get(&self) -> Rules {
        Rules {
            max_login_bytes: self.max_login_bytes.load(Ordering::Relaxed),
            max_line_bytes: self.max_line_bytes.load(Ordering::Relaxed),
        }
    }

    pub fn set(&self, rules: Rules) {
        self.max_login_bytes
            .store(rules.max_login_bytes, Ordering::Relaxed);
        self.max_line_bytes
            .store(rules.max_line_bytes, Ordering::Relaxed);
    }
}

/// Why something that came through Redis was refused (`achat_cluster_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is not a login that the node named by the frame holds (or, in a frame
    /// of the first version, that any other node holds), or not a valid login at all.
    Sender,
    /// The line is not exactly one `from <sender>: <text>\n`: another sender, several
    /// lines, no line ending, or not UTF-8.
    Line,
    /// The text holds control characters (an escape sequence, a carriage return).
    Control,
    /// The text is longer than `max_line_bytes`.
    TooLong,
    /// A recipient that is not a valid login.
    Recipient,
    /// A directory event or registry entry with a name that breaks the rules.
    Event,
    /// A login event for a node that already holds `max_logins_per_node` here.
    NodeFull,
    /// A login event while the copy holds `max_remote_logins`.
    DirectoryFull,
    /// Directory events arrived faster than the router took them: the copy is read
    /// from the registry again.
    QueueFull,
    /// A kick frame that cannot be read or whose fields break the rules (`kick.rs`).
    Kick,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::Sender,
        Refusal::Line,
        Refusal::Control,
        Refusal::TooLong,
        Refusal::Recipient,
        Refusal::Event,
        Refusal::NodeFull,
        Refusal::DirectoryFull,
        Refusal::QueueFull,
        Refusal::Kick,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Sender => "sender",
            Refusal::Line => "line",
            Refusal::Control => "control",
            Refusal::TooLong => "too_long",
            Refusal::Recipient => "recipient",
            Refusal::Event => "event",
            Refusal::NodeFull => "node_full",
            Refusal::DirectoryFull => "directory_full",
            Refusal::QueueFull => "queue_full",
            Refusal::Kick => "kick",
        }
    }
}

/// Whether `node` is a name `[cluster] node_id` allows: 1 to 128 ASCII letters, digits,
/// `.`, `_` or `-`.
pub fn node_ok(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 128
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `name` passes the login rules within `max_login_bytes`. The rules are the
/// reader's (`names::validate_login`) with any script allowed: `login_charset` is what
/// this node lets its own clients log in with, and a login another node took under its
/// own setting is still a person to reach. Printable ASCII without `:` and `,` is what
/// PRECIS leaves as it is, so the common name skips it.
pub fn login_ok(name: &str, rules: &Rules) -> bool {
    if name.is_empty() || name.len() > rules.max_login_bytes {
        return false;
    }
    if name.bytes().all(plain) {
        return true;
    }
    names::validate_login(name, rules.max_login_bytes, LoginCharset::Unicode).is_ok()
}

/// Printable ASCII but `:` and `,`: what a login may hold that PRECIS leaves as it is.
fn plain(b: u8) -> bool {
    b.is_ascii_graphic() & (b != b':') & (b != b',')
}

/// Whether `look` may be the canonical form of the valid login `login`: the login
/// itself (the common case: it is in lower case already), or not empty, with no
/// whitespace or control character, and at most four times the login's bytes (the
/// skeleton of a name maps a character to a few at most).
fn look_ok(look: &str, login: &str) -> bool {
    if look == login {
        return true;
    }
    !look.is_empty()
        && look.len() <= 4 * login.len()
        && !look.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A registry entry (from a `L` event or the snapshot): `node` holds `login`, whose
/// canonical form is `look`.
pub fn check_entry(look: &str, node: &str, login: &str, rules: &Rules) -> Result<(), Refusal> {
    match login_ok(login, rules) && look_ok(look, login) && node_ok(node) {
        true => Ok(()),
        false => Err(Refusal::Event),
    }
}

/// A directory event, before it goes to the router.
pub fn check_event(event: &DirEvent, rules: &Rules) -> Result<(), Refusal> {
    match event {
        DirEvent::Login { node, look, login } => check_entry(look, node, login, rules),
        // A look to remove is only looked up; bounded as a login's could be.
        DirEvent::Logout { node, look } => {
            match node_ok(node) && !look.is_empty() && look.len() <= 4 * rules.max_login_bytes {
                true => Ok(()),
                false => Err(Refusal::Event),
            }
        }
        DirEvent::NodeGone { node } => match node_ok(node) {
            true => Ok(()),
            false => Err(Refusal::Event),
        },
    }
}

/// A relayed delivery line for `sender`: exactly `from <sender>: <text>\n`, the text one
/// line without control characters, at most `max_line_bytes` long.
pub fn check_line(sender: &str, line: &[u8], rules: &Rules) -> Result<(), Refusal> {
    let text = line
        .strip_prefix(b"from ")
        .and_then(|rest| rest.strip_prefix(sender.as_bytes()))
        .and_then(|rest| rest.strip_prefix(b": "))
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .ok_or(Refusal::Line)?;
    let text = std::str::from_utf8(text).map_err(|_| Refusal::Line)?;
    if text.len() > rules.max_line_bytes {
        return Err(Refusal::TooLong);
    }
    // `\n` and `\r` are controls too: a second line, or one that rewrites this one.
    if protocol::has_control(text) {
        return Err(Refusal::Control);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_login_bytes: 16,
        max_line_bytes: 32,
    };

    #[test]
    fn a_line_is_one_line_from_its_sender() {
        assert_eq!(check_line("alice", b"from alice: hi\n", &RULES), Ok(()));
        assert_eq!(check_line("alice", b"from alice: \n", &RULES), Ok(()));
        assert_eq!(check_line("alice", b"from alice: a\tb\n", &RULES), Ok(()));
        for bad in [
            &b"from admin: hi\n"[..],
            b"from alice: hi",
            b"from alice: hi\nfrom admin: owned\n",
            b"from alice: hi\r\n",
            b"from alice:hi\n",
            b"from alice: \xff\n",
            b"alice: hi\n",
        ] {
            let got = check_line("alice", bad, &RULES);
            assert!(
                matches!(got, Err(Refusal::Line | Refusal::Control)),
                "{bad:?}: {got:?}"
            );
        }
        assert_eq!(
            check_line("alice", b"from alice: \x1b[2Jhi\n", &RULES),
            Err(Refusal::Control)
        );
        assert_eq!(
            check_line("alice", "from alice: a\u{85}b\n".as_bytes(), &RULES),
            Err(Refusal::Control)
        );
        let long = format!("from alice: {}\n", "x".repeat(33));
        assert_eq!(
            check_line("alice", long.as_bytes(), &RULES),
            Err(Refusal::TooLong)
        );
        let exact = format!("from alice: {}\n", "x".repeat(32));
        assert_eq!(check_line("alice", exact.as_bytes(), &RULES), Ok(()));
    }

    #[test]
    fn logins_and_nodes_follow_the_rules() {
        for good in ["alice", "Bob_2", "a.b-c", "zoë", "名前"] {
            assert!(login_ok(good, &RULES), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            "a,b",
            "a\nb",
            "a\u{1b}b",
            "x".repeat(17).as_str(),
            "a\u{200B}b",
        ] {
            assert!(!login_ok(bad, &RULES), "{bad:?}");
        }
        assert!(node_ok("n1.example-2_b"));
        for bad in ["", "n 1", "n\n1", "ü", &"n".repeat(129)] {
            assert!(!node_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn events_follow_the_rules() {
        let login = |node: &str, look: &str, login: &str| DirEvent::Login {
            node: node.into(),
            look: look.into(),
            login: login.into(),
        };
        assert_eq!(check_event(&login("n1", "alice", "Alice"), &RULES), Ok(()));
        for bad in [
            login("n1", "alice", &"a".repeat(4 << 20)),
            login("n1", &"a".repeat(100), "alice"),
            login("n1", "", "alice"),
            login("n1", "al ice", "alice"),
            login("n 1", "alice", "alice"),
            login("n1", "admin", "admin\nx"),
        ] {
            assert_eq!(check_event(&bad, &RULES), Err(Refusal::Event), "{bad:?}");
        }
        let gone = |node: &str| DirEvent::NodeGone { node: node.into() };
        assert_eq!(check_event(&gone("n2"), &RULES), Ok(()));
        assert_eq!(
            check_event(&gone(&"n".repeat(1000)), &RULES),
            Err(Refusal::Event)
        );
        let out = |look: &str| DirEvent::Logout {
            node: "n1".into(),
            look: look.into(),
        };
        assert_eq!(check_event(&out("alice"), &RULES), Ok(()));
        assert_eq!(
            check_event(&out(&"a".repeat(65)), &RULES),
            Err(Refusal::Event)
        );
    }

    #[test]
    fn rules_change_at_reload() {
        let live = LiveRules::new(RULES);
        assert_eq!(live.get(), RULES);
        let wider = Rules {
            max_login_bytes: 64,
            max_line_bytes: 8192,
        };
        live.set(wider);
        assert_eq!(live.get(), wider);
    }
}

//! An operator's kick carried to the node that holds the login, as bytes, with no I/O.
//! `POST /logins/{name}/close` on any node closes the login wherever it is: the node the
//! operator asked finds the holder in its directory copy and publishes one kick frame on
//! that node's relay channel, beside the relay frames:
//!
//! ```text
//! K1, u8 node length, node, u16 login length, login, u8 by length, by,
//!     u16 reason length, reason
//! ```
//!
//! (lengths little-endian; `node` is the sender, `by` the admin token's name, `reason`
//! empty when none was given). A kick is input from the network like a relay frame:
//! decoding never trusts a length, and [`check`] holds every field to the rules before
//! the router sees it. Whoever can publish on Redis could forge one, as they could forge
//! a relay frame: Redis is inside the cluster's trust boundary (docs/CLUSTER.md).

use super::checks::{self, Refusal, Rules};
use crate::protocol;

/// The first bytes of every kick frame (a relay frame begins `A1`).
pub const MAGIC: &[u8; 2] = b"K1";
/// Longest admin token name a kick carries.
pub const MAX_BY: usize = 128;
/// Longest reason a kick carries, in bytes (the admin endpoint keeps 200 characters).
pub const MAX_REASON: usize = 1024;

/// A decoded kick frame, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kick<'f> {
    /// The node that sent it.
    pub node: &'f str,
    /// The login to close, as its holder logged in.
    pub login: &'f str,
    /// The admin token that asked, for the audit line.
    pub by: &'f str,
    /// The operator's reason, for the notice; `None` when none was given.
    pub reason: Option<&'f str>,
}

/// The kick frame for `kick`; `None` when a field is too long for its length (the admin
/// endpoint and the login rules keep them far shorter).
pub fn encode(kick: &Kick<'_>) -> Option<Vec<u8>> {
    let reason = kick.reason.unwrap_or("");
    if kick.node.len() > u8::MAX as usize
        || kick.login.len() > u16::MAX as usize
        || kick.by.len() > MAX_BY
        || reason.len() > MAX_REASON
    {
        return None;
    }
    let mut buf = Vec::with_capacity(8 + kick.node.len() + kick.login.len() + kick.by.len());
    buf.extend_from_slice(MAGIC);
    buf.push(kick.node.len() as u8);
    buf.extend_from_slice(kick.node.as_bytes());
    buf.extend_from_slice(&(kick.login.len() as u16).to_le_bytes());
    buf.extend_from_slice(kick.login.as_bytes());
    buf.push(kick.by.len() as u8);
    buf.extend_from_slice(kick.by.as_bytes());
    buf.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    buf.extend_from_slice(reason.as_bytes());
    Some(buf)
}

/// Reads fields off a frame, never past its end.
struct Cursor<'f> {
    frame: &'f [u8],
    at: usize,
}

impl<'f> Cursor<'f> {
    fn bytes(&mut self, n: usize) -> Option<&'f [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.frame.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn text_u8(&mut self) -> Option<&'f str> {
        let n = *self.bytes(1)?.first()? as usize;
        std::str::from_utf8(self.bytes(n)?).ok()
    }

    fn text_u16(&mut self) -> Option<&'f str> {
        let len = self.bytes(2)?;
        let n = u16::from_le_bytes([len[0], len[1]]) as usize;
        std::str::from_utf8(self.bytes(n)?).ok()
    }
}

/// Decodes a kick frame; `None` when it is not one, is cut short, holds text that is not
/// UTF-8, or has bytes after its last field.
pub fn decode(frame: &[u8]) -> Option<Kick<'_>> {
    let mut cursor = Cursor {
        frame: frame.strip_prefix(MAGIC)?,
        at: 0,
    };
    let node = cursor.text_u8()?;
    let login = cursor.text_u16()?;
    let by = cursor.text_u8()?;
    let reason = cursor.text_u16()?;
    if cursor.at != cursor.frame.len() {
        return None;
    }
    Some(Kick {
        node,
        login,
        by,
        reason: (!reason.is_empty()).then_some(reason),
    })
}

/// Holds a decoded kick to the rules: a valid node name and login, a token name and a
/// reason within their lengths and free of control characters (the reason reaches the
/// client's screen).
pub fn check(kick: &Kick<'_>, rules: &Rules) -> Result<(), Refusal> {
    let text_ok = |text: &str, max: usize| text.len() <= max && !protocol::has_control(text);
    let ok = checks::node_ok(kick.node)
        && checks::login_ok(kick.login, rules)
        && !kick.by.is_empty()
        && text_ok(kick.by, MAX_BY)
        && kick.reason.is_none_or(|r| text_ok(r, MAX_REASON));
    match ok {
        true => Ok(()),
        false => Err(Refusal::Kick),
    }
}

/// A checked kick, owned, on its way from the link to the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub node: Box<str>,
    pub login: Box<str>,
    pub by: Box<str>,
    pub reason: Option<Box<str>>,
}

impl From<Kick<'_>> for Order {
    fn from(kick: Kick<'_>) -> Order {
        Order {
            node: kick.node.into(),
            login: kick.login.into(),
            by: kick.by.into(),
            reason: kick.reason.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            max_login_bytes: 32,
            max_line_bytes: 1024,
        }
    }

    const KICK: Kick<'static> = Kick {
        node: "n1",
        login: "Bob",
        by: "ops",
        reason: Some("spam, twice"),
    };

    #[test]
    fn a_kick_reads_back_as_it_was_written() {
        let frame = encode(&KICK).unwrap();
        assert!(frame.starts_with(MAGIC));
        assert_eq!(decode(&frame), Some(KICK));
        assert_eq!(check(&KICK, &rules()), Ok(()));
        let plain = Kick {
            reason: None,
            ..KICK
        };
        assert_eq!(decode(&encode(&plain).unwrap()), Some(plain));
    }

    #[test]
    fn every_cut_and_every_extra_byte_is_refused_without_a_panic() {
        let frame = encode(&KICK).unwrap();
        for end in 0..frame.len() {
            assert_eq!(decode(&frame[..end]), None, "cut at {end}");
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        // Every length byte set to its largest value points past the end.
        for at in 0..frame.len() {
            let mut bad = frame.clone();
            bad[at] = 0xff;
            let _ = decode(&bad);
        }
        assert_eq!(decode(b"A1\x02n1"), None, "a relay frame is not a kick");
    }

    #[test]
    fn fields_that_break_the_rules_are_refused() {
        let refused = |kick: Kick<'_>| check(&kick, &rules()) == Err(Refusal::Kick);
        assert!(refused(Kick { node: "", ..KICK }));
        assert!(refused(Kick {
            node: "n 1",
            ..KICK
        }));
        assert!(refused(Kick {
            login: "bob:x",
            ..KICK
        }));
        assert!(refused(Kick { login: "", ..KICK }));
        let long = "x".repeat(33);
        assert!(refused(Kick {
            login: &long,
            ..KICK
        }));
        assert!(refused(Kick { by: "", ..KICK }));
        assert!(refused(Kick {
            by: "o\u{1b}[2J",
            ..KICK
        }));
        assert!(refused(Kick {
            reason: Some("bye\r\nfrom alice: forged"),
            ..KICK
        }));
        let huge = "r".repeat(MAX_REASON + 1);
        assert!(refused(Kick {
            reason: Some(&huge),
            ..KICK
        }));
        assert_eq!(
            encode(&Kick {
                reason: Some(&huge),
                ..KICK
            }),
            None
        );
    }
}

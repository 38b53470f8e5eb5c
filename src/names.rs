//! Logins (ARCHITECTURE §1): the rule a login must pass, and the canonical form under which
//! two logins that look alike are one person.
//!
//! The rule, checked once per login, in this order:
//! 1. 1 to `max_login_bytes` bytes;
//! 2. no whitespace, `:`, `,` or control character (a-chat's own rule: it keeps
//!    `name1, name2: text` parseable);
//! 3. with `login_charset = "ascii"`: ASCII letters, digits, `_`, `-` and `.` only;
//! 4. RFC 8265, PRECIS `UsernameCasePreserved` (through `precis-profiles`): letters, digits
//!    and symbols of the IdentifierClass; no spaces, control, format (invisible, bidi),
//!    private-use or unassigned code points; the Bidi Rule for right-to-left names. The
//!    login must already be in the form that profile enforces (NFC, no full-width
//!    letters): a-chat never changes a name it was sent, it asks for the right one.
//!
//! The canonical form (the "look") is the Unicode TS #39 skeleton of the case-folded NFC
//! name (through `unicode-security` and `caseless`), folded again and repeated until it
//! no longer changes, so that `аlice` (Cyrillic а), `Alice` and `alice` share one. The
//! router keys live logins on it and matches recipients by it (src/server/router.rs); a
//! cluster registry must key on this same function.

use std::fmt;

use caseless::Caseless;
use precis_core::profile::PrecisFastInvocation;
use precis_core::{Error as PrecisError, UnexpectedError};
use precis_profiles::UsernameCasePreserved;
use unicode_normalization::UnicodeNormalization;

use serde::{Deserialize, Serialize};

/// `[limits] login_charset`: the letters a login may use (ARCHITECTURE §1).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoginCharset {
    /// RFC 8265 (PRECIS UsernameCasePreserved): letters and digits of any script.
    #[default]
    Unicode,
    /// ASCII letters, digits, `_`, `-` and `.` only.
    Ascii,
}

/// Why a login was refused. Each is answered with `error: <Display>` and a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    Empty,
    TooLong {
        /// The configured `max_login_bytes`, to tell the person the limit.
        max: usize,
    },
    /// A character no login may hold: whitespace, `:`, `,`, control, format (invisible,
    /// bidi), private-use or unassigned.
    BadCharacter(char),
    /// `login_charset = "ascii"` and the login holds something else.
    NotAscii,
    /// Not in the form RFC 8265 enforces.
    NotNormalized {
        /// The same login in that form, offered to the person to send instead.
        suggestion: String,
    },
    /// Right-to-left and left-to-right characters mixed against the Bidi Rule (RFC 5893).
    Direction,
    /// Someone with this login, or one that looks the same, is online.
    Taken(String),
    /// A cluster node cannot reach Redis, so it cannot know who is online elsewhere.
    ClusterUnavailable,
    /// An operator banned this login (the text says so, with the ban's reason).
    Banned(String),
    /// With `[tls] client_identity = "login"`: the login is none of the names of the
    /// client's certificate (the login, and those names).
    NotCertified(String, Vec<String>),
    /// The password was checked against a users file that a reload replaced before the
    /// login took effect, and the new one removed the user or changed the password.
    UsersChanged,
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Empty => f.write_str("login is empty: send your name as the first line"),
            LoginError::TooLong { max } => write!(f, "login is longer than {max} bytes"),
            LoginError::BadCharacter(c) => {
                f.write_str("login may not contain ")?;
                if c.is_ascii_graphic() {
                    write!(f, "'{c}'")?;
                } else {
                    write!(f, "U+{:04X}", *c as u32)?;
                }
                f.write_str(
                    ": whitespace, ':', ',', control, invisible and unassigned characters \
                     are not allowed",
                )
            }
            LoginError::NotAscii => f.write_str(
                "login may only contain ASCII letters, digits, '_', '-' and '.' on this server",
            ),
            LoginError::NotNormalized { suggestion } => write!(
                f,
                "login is not in Unicode normal form (NFC, no full-width letters): \
                 send it as \"{suggestion}\""
            ),
            LoginError::Direction => f.write_str(
                "login mixes right-to-left and left-to-right characters in a way that \
                 could display it misleadingly",
            ),
            LoginError::Taken(name) => write!(f, "login \"{name}\" is taken"),
            LoginError::ClusterUnavailable => f.write_str("cluster unavailable, try again"),
            LoginError::Banned(text) => f.write_str(text),
            LoginError::NotCertified(login, names) if names.is_empty() => write!(
                f,
                "login {login:?} needs a client certificate that names it"
            ),
            LoginError::NotCertified(login, names) => write!(
                f,
                "login {login:?} is not a name of your certificate (it names {})",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LoginError::UsersChanged => f.write_str("authentication failed"),
        }
    }
}

/// Checks a login line against the rule in this module's header. A valid login is also a
/// valid recipient name.
pub fn validate_login(
    login: &str,
    max_bytes: usize,
    charset: LoginCharset,
) -> Result<&str, LoginError> {
    if login.is_empty() {
        return Err(LoginError::Empty);
    }
    if login.len() > max_bytes {
        return Err(LoginError::TooLong { max: max_bytes });
    }
    if let Some(c) = login
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || c == ':' || c == ',')
    {
        return Err(LoginError::BadCharacter(c));
    }
    if charset == LoginCharset::Ascii
        && !login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(LoginError::NotAscii);
    }
    match UsernameCasePreserved::enforce(login) {
        Ok(enforced) if enforced == login => Ok(login),
        Ok(enforced) => Err(LoginError::NotNormalized {
            suggestion: enforced.into_owned(),
        }),
        Err(e) => Err(precis_refusal(login, e)),
    }
}

/// Says which character PRECIS refused, or why it refused the whole name.
fn precis_refusal(login: &str, e: PrecisError) -> LoginError {
    let info = match e {
        PrecisError::BadCodepoint(info) => info,
        PrecisError::Unexpected(
            UnexpectedError::ContextRuleNotApplicable(info)
            | UnexpectedError::MissingContextRule(info),
        ) => info,
        // `Invalid` after a non-empty name is the Bidi Rule; the rest cannot happen for a
        // profile with context rules, but a refusal must still say something useful.
        _ => return LoginError::Direction,
    };
    let c = char::from_u32(info.cp)
        .or_else(|| login.chars().nth(info.position))
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    LoginError::BadCharacter(c)
}

/// How often [`canonical`] maps skeleton and case fold again before it settles for what
/// it has. Real names settle after one or two; the bound keeps any input's cost linear.
const ROUNDS: usize = 4;

/// The canonical form of a name: the TS #39 skeleton of its case-folded NFC form, folded
/// again, until it no longer changes. Two logins with the same canonical form look the
/// same to a reader, and may not be online at once. Defined for any string, valid login
/// or not (recipient names are looked up by it).
pub fn canonical(name: &str) -> String {
    let mut form = fold(name);
    for _ in 0..ROUNDS {
        let skeleton: String = unicode_security::skeleton(&form).collect();
        let next = fold(&skeleton);
        if next == form {
            break;
        }
        form = next;
    }
    form
}

/// Case-folded NFC without the zero-width joiners (the only invisible characters PRECIS
/// lets through, in some scripts' contexts), which change nothing a reader sees.
fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .filter(|c| !matches!(c, '\u{200C}' | '\u{200D}'))
        .nfd()
        .default_case_fold()
        .nfc()
        .collect()
}

/// Whether two names are one person: the same canonical form.
pub fn same_look(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(login: &str) -> Result<&str, LoginError> {
        validate_login(login, 64, LoginCharset::Unicode)
    }

    #[test]
    fn the_book_rules_still_hold() {
        assert_eq!(check("alice"), Ok("alice"));
        assert_eq!(check(""), Err(LoginError::Empty));
        assert_eq!(
            validate_login("abcdef", 5, LoginCharset::Unicode),
            Err(LoginError::TooLong { max: 5 })
        );
        for (bad, c) in [
            ("a b", ' '),
            ("a:b", ':'),
            ("a,b", ','),
            ("a\tb", '\t'),
            ("a\u{7}b", '\u{7}'),
            ("a\u{a0}b", '\u{a0}'),
        ] {
            assert_eq!(check(bad), Err(LoginError::BadCharacter(c)), "{bad:?}");
        }
        assert_eq!(check("élodie"), Ok("élodie"));
        assert_eq!(check("Zoë_2-x.y"), Ok("Zoë_2-x.y"));
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused() {
        for (bad, c) in [
            ("bob\u{200B}", '\u{200B}'),
            ("\u{202E}bob", '\u{202E}'),
            ("bo\u{2066}b", '\u{2066}'),
            ("bob\u{E000}", '\u{E000}'),
            ("bob\u{FEFF}", '\u{FEFF}'),
        ] {
            assert_eq!(check(bad), Err(LoginError::BadCharacter(c)), "{bad:?}");
        }
    }

    #[test]
    fn a_login_must_be_in_normal_form() {
        assert_eq!(
            check("e\u{301}lodie"),
            Err(LoginError::NotNormalized {
                suggestion: "élodie".into()
            })
        );
        assert!(matches!(
            check("ａlice"),
            Err(LoginError::NotNormalized { suggestion }) if suggestion == "alice"
        ));
    }

    #[test]
    fn right_to_left_logins_follow_the_bidi_rule() {
        assert_eq!(check("שלום"), Ok("שלום"));
        assert_eq!(check("שלוםabc"), Err(LoginError::Direction));
    }

    #[test]
    fn the_ascii_charset() {
        let ascii = |s| validate_login(s, 64, LoginCharset::Ascii);
        assert_eq!(ascii("Bob_2-x.y"), Ok("Bob_2-x.y"));
        for bad in ["élodie", "bob!", "a+b", "аlice"] {
            assert_eq!(ascii(bad), Err(LoginError::NotAscii), "{bad:?}");
        }
    }

    #[test]
    fn look_alikes_share_a_canonical_form() {
        let alice = canonical("alice");
        for same in ["Alice", "ALICE", "\u{430}lice", "a1ice", "\u{1d5ba}lice"] {
            assert_eq!(canonical(same), alice, "{same:?}");
        }
        assert_ne!(canonical("alicf"), alice);
        assert_eq!(canonical("b0b"), canonical("bOb"));
        assert_eq!(canonical("Straße"), canonical("strasse"));
        assert!(same_look("rn", "m"), "TS #39 maps rn to m");
        assert!(!same_look("bob", "rob"));
    }

    #[test]
    fn the_canonical_form_is_stable() {
        for name in [
            "alice",
            "Élodie",
            "b0b",
            "ΣΊΣΥΦΟΣ",
            "שלום",
            "x\u{200D}y",
            "0O0o",
        ] {
            let c = canonical(name);
            assert_eq!(canonical(&c), c, "{name:?}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        assert_eq!(
            LoginError::Taken("bob".into()).to_string(),
            "login \"bob\" is taken"
        );
        assert_eq!(
            LoginError::BadCharacter('\u{200B}').to_string(),
            "login may not contain U+200B: whitespace, ':', ',', control, invisible and \
             unassigned characters are not allowed"
        );
        assert!(LoginError::BadCharacter(':')
            .to_string()
            .starts_with("login may not contain ':'"));
    }
}

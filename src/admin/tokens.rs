//! Admin authentication: named bearer tokens read from `[admin] tokens_file`, and which
//! paths need one. A request's token is hashed and compared with every token's hash in
//! constant time, so neither the time taken nor the order of the file says how much of
//! a guess was right; the name of the token that matched goes into the audit log.
//!
//! The file is TOML, one name per token:
//!
//! ```toml
//! [tokens]
//! prometheus = "3f0c…"   # e.g. `openssl rand -hex 32`
//! ops = "9a41…"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use blake2::{Blake2b512, Digest};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Fewest characters a token may have: a guessable token is refused when the file is read.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Most characters of a token name (it is written in every audit line).
const MAX_NAME_CHARS: usize = 64;

/// The tokens in force: each name with the hash of its token (the tokens themselves are
/// not kept).
pub struct Tokens {
    /// `(name, blake2b-512 of the token)`, in name order.
    entries: Vec<(Arc<str>, [u8; 64])>,
}

/// Why a tokens file cannot be used; the message names the file and never repeats a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read the admin tokens file {file} ([admin] tokens_file): {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the parser's message says where).
    #[error("invalid admin tokens file {file}: {message}")]
    Syntax { file: String, message: String },
    /// The file holds no token: every request that needs one would be refused.
    #[error("the admin tokens file {file} holds no token: add one under [tokens] (e.g. ops = \"…\", made with `openssl rand -hex 32`)")]
    Empty { file: String },
    /// A name that would not read well in the audit log.
    #[error("admin tokens file {file}: the name {name:?} is not 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName { file: String, name: String },
    /// A token too short or holding characters a header cannot carry.
    #[error("admin tokens file {file}: the token named {name:?} must be at least 16 printable characters without spaces (e.g. `openssl rand -hex 32`)")]
    Weak { file: String, name: String },
    /// Two names with the same token: the audit log could not tell them apart.
    #[error("admin tokens file {file}: the tokens named {first:?} and {second:?} are the same; give each its own")]
    Shared {
        file: String,
        first: String,
        second: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: BTreeMap<String, String>,
}

impl Tokens {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            file: file.clone(),
            source,
        })?;
        Tokens::parse(&text, &file)
    }

    /// Checks the text of a tokens file named `file` (for messages).
    pub fn parse(text: &str, file: &str) -> Result<Tokens, TokensError> {
        let file = file.to_owned();
        let parsed: File = toml::from_str(text).map_err(|e| TokensError::Syntax {
            file: file.clone(),
            // The parser's message quotes the line, which may hold a token: say where only.
            message: syntax_without_values(&e, text),
        })?;
        if parsed.tokens.is_empty() {
            return Err(TokensError::Empty { file });
        }
        let mut entries: Vec<(Arc<str>, [u8; 64])> = Vec::new();
        for (name, token) in parsed.tokens {
            let name_ok = !name.is_empty()
                && name.chars().count() <= MAX_NAME_CHARS
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                return Err(TokensError::BadName { file, name });
            }
            if token.chars().count() < MIN_TOKEN_CHARS
                || !token.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(TokensError::Weak { file, name });
            }
            let digest = hash(token.as_bytes());
            if let Some((first, _)) = entries.iter().find(|(_, d)| *d == digest) {
                return Err(TokensError::Shared {
                    file,
                    first: first.to_string(),
                    second: name,
                });
            }
            entries.push((name.into(), digest));
        }
        Ok(Tokens { entries })
    }

    /// The name of the token `presented` is, if it is one. Every token is compared, each
    /// in constant time, whichever matches.
    pub fn check(&self, presented: &[u8]) -> Option<Arc<str>> {
        let digest = hash(presented);
        let mut found = None;
        for (name, known) in &self.entries {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// The names, in order (for check-config and the start-up line).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| &**name)
    }
}

fn hash(bytes: &[u8]) -> [u8; 64] {
    Blake2b512::digest(bytes).into()
}

/// Where a TOML error is (line and column), without the quoted line it may come with.
fn syntax_without_values(e: &toml::de::Error, text: &str) -> String {
    let message = e.message();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!("line {line}: {message}")
        }
        None => message.to_owned(),
    }
}

/// The token of an `Authorization: Bearer …` header value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123";
    const B: &str = "fedcba9876543210fedc";

    #[test]
    fn a_token_is_found_by_name_and_a_guess_is_not() {
        let tokens = Tokens::parse(
            &format!("[tokens]\nops = \"{A}\"\nprometheus = \"{B}\"\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(tokens.check(A.as_bytes()).as_deref(), Some("ops"));
        assert_eq!(tokens.check(B.as_bytes()).as_deref(), Some("prometheus"));
        assert_eq!(tokens.check(&A.as_bytes()[..19]), None);
        assert_eq!(tokens.check(b""), None);
        assert_eq!(tokens.names().collect::<Vec<_>>(), ["ops", "prometheus"]);
    }

    #[test]
    fn files_that_cannot_work_are_refused_without_repeating_a_token() {
        let e = |text: &str| Tokens::parse(text, "t.toml").err().unwrap().to_string();
        assert!(e("").contains("holds no token"));
        assert!(e("[tokens]\nops = \"short\"\n").contains("at least 16"));
        assert!(e(&format!("[tokens]\n\"a b\" = \"{A}\"\n")).contains("not 1 to 64"));
        let shared = e(&format!("[tokens]\na = \"{A}\"\nb = \"{A}\"\n"));
        assert!(
            shared.contains("\"a\" and \"b\" are the same") && !shared.contains(A),
            "{shared}"
        );
        let syntax = e(&format!("[tokens]\nops = \"{A}\"\nops2 = {A}\n"));
        assert!(syntax.contains("line 3") && !syntax.contains(A), "{syntax}");
        assert!(e("[tokenz]\n").contains("invalid admin tokens file t.toml"));
    }

    #[test]
    fn bearer_headers_are_read() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}

//! The users file (ARCHITECTURE §9): a TOML `[users]` table of logins and their argon2id
//! hashes, as `a-chat passwd` prints them, parsed and checked whole, and the password
//! check against it.
//!
//! ```toml
//! [users]
//! alice = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use argon2::password_hash::PasswordHashString;
use argon2::Params;
use serde::Deserialize;

use crate::auth::hash;
use crate::config::{locate_key, toml_error};

/// Longest name the file may hold: the largest `max_login_bytes` allowed. A name longer
/// than the configured `max_login_bytes` is accepted here but can never log in.
const MAX_NAME_BYTES: usize = 1024;

/// The file's schema: one table; anything else is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    /// Login → PHC string. Absent means nobody may log in.
    #[serde(default)]
    users: BTreeMap<String, String>,
}

/// The logins allowed and their hashes, as read from the users file.
pub struct Users {
    /// Each allowed login and its password hash.
    hashes: HashMap<String, PasswordHashString>,
    /// The hash an unknown name is checked against, made at load with the parameters most
    /// users have, so that an unknown name costs what a known one does.
    dummy: PasswordHashString,
}

impl Users {
    /// Reads and checks the users file at `path`.
    pub fn load(path: &Path) -> Result<Users, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file {file} ([auth] users_file): {e}"))?;
        Users::parse(&text, &file)
    }

    /// Parses and checks the text of the users file named `file` (for messages).
    pub fn parse(text: &str, file: &str) -> Result<Users, String> {
        let at = |line: Option<usize>, key: Option<&str>, message: &str| {
            let mut out = format!("invalid users file {file}");
            if let Some(line) = line {
                out += &format!(", line {line}");
            }
            if let Some(key) = key {
                out += &format!(", key `{key}`");
            }
            format!("{out}: {message}")
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let e = toml_error(text, &e, None);
            at(e.line, None, &e.message)
        })?;
        let parsed: UsersFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != ".").then_some(path);
            let e = toml_error(text, e.inner(), key);
            at(e.line, e.key.as_deref(), &e.message)
        })?;
        if let Some([(a, a_line), (b, b_line)]) = look_alikes(text, parsed.users.keys()) {
            let key = format!("users.{b}");
            let message = format!(
                "user \"{b}\" looks like user \"{a}\"{}: they would be one login with two passwords; keep one of them",
                a_line.map_or(String::new(), |line| format!(" (line {line})"))
            );
            return Err(at(b_line, Some(&key), &message));
        }
        let mut hashes = HashMap::with_capacity(parsed.users.len());
        for (name, value) in parsed.users {
            let key = format!("users.{name}");
            let line = locate_key(text, &key);
            if let Err(e) = crate::names::validate_login(
                &name,
                MAX_NAME_BYTES,
                crate::names::LoginCharset::Unicode,
            ) {
                return Err(at(
                    line,
                    Some(&key),
                    &format!("user \"{name}\" is not a valid login: {e}"),
                ));
            }
            let hash = hash::parse(&value).map_err(|e| {
                at(
                    line,
                    Some(&key),
                    &format!(
                        "the password of user \"{name}\" is not an argon2id hash ({e}): make one with `a-chat passwd {name}`"
                    ),
                )
            })?;
            hashes.insert(name, hash);
        }
        let dummy = dummy(&hashes).map_err(|e| at(None, None, &e))?;
        Ok(Users { hashes, dummy })
    }

    /// Whether `name` may log in (for a reload to find the logins that were removed).
    pub fn contains(&self, name: &str) -> bool {
        self.hashes.contains_key(name)
    }

    /// How many logins the file allows.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// True if `name` is a user and `password` is theirs. Blocking, and as slow for an
    /// unknown name as for a known one: run it on the pool of [`crate::auth::Auth`].
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.hashes.get(name) {
            Some(hash) => hash::verify(hash, password.as_bytes()),
            None => {
                let _ = hash::verify(&self.dummy, password.as_bytes());
                false
            }
        }
    }
}

/// Names the users, never their hashes.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.hashes.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Users")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

/// Two names of the file that look alike (the same canonical form, as the router compares
/// logins: `alice`, `Alice`, `аlice` with a Cyrillic a), each with its line, the first in
/// the file first; `None` when every name looks like no other.
fn look_alikes<'a>(
    text: &str,
    names: impl Iterator<Item = &'a String>,
) -> Option<[(&'a str, Option<usize>); 2]> {
    let mut seen: HashMap<String, &'a str> = HashMap::new();
    for name in names {
        if let Some(other) = seen.insert(crate::names::canonical(name), name) {
            let line = |name: &str| locate_key(text, &format!("users.{name}"));
            let mut pair = [(other, line(other)), (name.as_str(), line(name))];
            pair.sort_by_key(|(_, line)| line.unwrap_or(usize::MAX));
            return Some(pair);
        }
    }
    None
}

/// A hash of a random password with the parameters most of `hashes` use (the built-in
/// ones for an empty file).
fn dummy(hashes: &HashMap<String, PasswordHashString>) -> Result<PasswordHashString, String> {
    // Few distinct parameter sets in practice: a list is enough.
    let mut counts: Vec<(Params, usize)> = Vec::new();
    for hash in hashes.values() {
        let params = hash::params_of(hash);
        match counts.iter_mut().find(|(p, _)| *p == params) {
            Some((_, n)) => *n += 1,
            None => counts.push((params, 1)),
        }
    }
    let params = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(hash::default_params, |(params, _)| params);
    let password = hash::random_bytes::<32>().map_err(|e| format!("random bytes: {e}"))?;
    hash::make(&password, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash::tests::cheap;

    fn hash_of(password: &str) -> String {
        hash::make(password.as_bytes(), cheap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_users_file_checks_passwords() {
        let text = format!(
            "# made by a-chat passwd\n[users]\nalice = \"{}\"\n\"bob.b\" = \"{}\"\n",
            hash_of("wonderland"),
            hash_of("builder")
        );
        let users = Users::parse(&text, "users.toml").unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.contains("alice") && users.contains("bob.b"));
        assert!(!users.contains("carol"));
        assert!(users.verify("alice", "wonderland"));
        assert!(!users.verify("alice", "builder"));
        assert!(users.verify("bob.b", "builder"));
        assert!(!users.verify("carol", "wonderland"));
        assert_eq!(
            hash::params_of(&users.dummy).m_cost(),
            64,
            "the dummy costs what the users' hashes cost"
        );
    }

    #[test]
    fn an_empty_file_allows_nobody() {
        let users = Users::parse("", "users.toml").unwrap();
        assert!(users.is_empty());
        assert!(!users.verify("alice", ""));
        let users = Users::parse("[users]\n", "users.toml").unwrap();
        assert!(users.is_empty());
    }

    #[test]
    fn unknown_sections_and_keys_name_file_line_and_key() {
        let e =
            Users::parse("[users]\n\n[groups]\nadmins = \"alice\"\n", "/etc/u.toml").unwrap_err();
        assert!(
            e.starts_with("invalid users file /etc/u.toml, line 3"),
            "{e}"
        );
        assert!(e.contains("unknown field `groups`"), "{e}");
        let e = Users::parse("[users]\nalice = 3\n", "u.toml").unwrap_err();
        assert!(e.contains("line 2, key `users.alice`"), "{e}");
        let e = Users::parse("[users\n", "u.toml").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_value_that_is_not_an_argon2id_hash_names_the_user() {
        let text = format!("[users]\nalice = \"{}\"\nbob = \"hunter2\"\n", hash_of("x"));
        let e = Users::parse(&text, "u.toml").unwrap_err();
        assert!(e.contains("line 3, key `users.bob`"), "{e}");
        assert!(e.contains("user \"bob\" is not an argon2id hash"), "{e}");
        assert!(e.contains("a-chat passwd bob"), "{e}");
        assert!(!e.contains("hunter2"), "the value is not repeated: {e}");
    }

    #[test]
    fn look_alike_names_are_refused_naming_both_lines() {
        let hash = hash_of("x");
        let text = format!("[users]\nbob = \"{hash}\"\nalice = \"{hash}\"\nAlice = \"{hash}\"\n");
        let e = Users::parse(&text, "u.toml").unwrap_err();
        assert!(e.contains("line 4, key `users.Alice`"), "{e}");
        assert!(
            e.contains("user \"Alice\" looks like user \"alice\" (line 3)"),
            "{e}"
        );
        // A Cyrillic а, first in the file: the later line is the one refused.
        let text = format!(
            "[users]\n\"\u{430}lice\" = \"{hash}\"\nbob = \"{hash}\"\nalice = \"{hash}\"\n"
        );
        let e = Users::parse(&text, "u.toml").unwrap_err();
        assert!(e.contains("line 4, key `users.alice`"), "{e}");
        assert!(e.contains("(line 2)"), "{e}");
        let text = format!("[users]\nalice = \"{hash}\"\nalicia = \"{hash}\"\n");
        assert_eq!(Users::parse(&text, "u.toml").unwrap().len(), 2);
    }

    #[test]
    fn a_name_that_cannot_be_a_login_is_an_error() {
        let text = format!("[users]\n\"al ice\" = \"{}\"\n", hash_of("x"));
        let e = Users::parse(&text, "u.toml").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("user \"al ice\" is not a valid login"), "{e}");
    }
}

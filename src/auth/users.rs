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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHashString;
use argon2::Params;
use serde::Deserialize;

use crate::auth::error::{Problem, UsersError};
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
    /// The hash an unknown name is checked against, made at load with the costliest
    /// parameters in the file, so that an unknown name costs what the slowest user does.
    dummy: PasswordHashString,
    /// How long a check against the dummy takes, in nanoseconds: no failed check answers
    /// sooner than this after it began, so that a user with cheaper parameters is not told
    /// from an unknown name. First the time making the dummy took, then a moving average
    /// of the checks of unknown names, so that it follows the machine's load.
    floor: AtomicU64,
    /// Each distinct set of hash parameters (`m=..,t=..,p=..`) and how many users have it,
    /// costliest first, for check-config to say when they are mixed.
    settings: Vec<(String, usize)>,
}

impl Users {
    /// Reads and checks the users file at `path`.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        Users::load_after(path, None)
    }

    /// [`Users::load`] at a reload: when the costliest hash settings are those of
    /// `previous`, its dummy (and the floor learnt with it) is kept, so a reload with the
    /// same settings costs a file read, not a hash with the strongest settings (up to a
    /// second of one core and hundreds of MiB): a storm of reloads stays cheap.
    pub fn load_after(path: &Path, previous: Option<&Users>) -> Result<Users, UsersError> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(source) => return Err(UsersError::Read { file, source }),
        };
        Users::parse_after(&text, &file, previous)
    }

    /// Parses and checks the text of the users file named `file` (for messages).
    pub fn parse(text: &str, file: &str) -> Result<Users, UsersError> {
        Users::parse_after(text, file, None)
    }

    /// [`Users::parse`], keeping `previous`'s dummy when its settings are still the
    /// costliest (see [`Users::load_after`]).
    fn parse_after(text: &str, file: &str, previous: Option<&Users>) -> Result<Users, UsersError> {
        let at = |line: Option<usize>, key: Option<String>, problem: Problem| UsersError::Invalid {
            file: file.to_owned(),
            line,
            key,
            problem: Box::new(problem),
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let e = toml_error(text, &e, None);
            at(e.line, None, Problem::Toml(e.message))
        })?;
        let parsed: UsersFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != ".").then_some(path);
            let e = toml_error(text, e.inner(), key);
            at(e.line, e.key, Problem::Toml(e.message))
        })?;
        if let Some([(a, a_line), (b, b_line)]) = look_alikes(text, parsed.users.keys()) {
            let problem = Problem::LookAlike {
                name: b.to_owned(),
                like: a.to_owned(),
                like_line: a_line,
            };
            return Err(at(b_line, Some(format!("users.{b}")), problem));
        }
        let mut hashes = HashMap::with_capacity(parsed.users.len());
        for (name, value) in parsed.users {
            let key = format!("users.{name}");
            let line = locate_key(text, &key);
            if let Err(why) = crate::names::validate_login(
                &name,
                MAX_NAME_BYTES,
                crate::names::LoginCharset::Unicode,
            ) {
                return Err(at(line, Some(key), Problem::NotALogin { name, why }));
            }
            let hash = match hash::parse(&value) {
                Ok(hash) => hash,
                Err(source) => return Err(at(line, Some(key), Problem::NotAHash { name, source })),
            };
            hashes.insert(name, hash);
        }
        let settings = settings(&hashes);
        let costliest = costliest(&hashes);
        if let Some(previous) = previous.filter(|p| hash::params_of(&p.dummy) == costliest) {
            return Ok(Users {
                hashes,
                dummy: previous.dummy.clone(),
                floor: AtomicU64::new(previous.floor.load(Ordering::Relaxed)),
                settings,
            });
        }
        let started = Instant::now();
        let dummy = dummy(costliest).map_err(|problem| at(None, None, problem))?;
        let floor = AtomicU64::new(nanos(started.elapsed()));
        Ok(Users {
            hashes,
            dummy,
            floor,
            settings,
        })
    }

    /// The shortest time a failed check takes, from when it began (see [`Users::verify`]).
    pub fn floor(&self) -> Duration {
        Duration::from_nanos(self.floor.load(Ordering::Relaxed))
    }

    /// Takes the time of one check against the dummy into the floor (a quarter of it).
    fn observe(&self, took: Duration) {
        let sample = nanos(took);
        let _ = self
            .floor
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |floor| {
                Some(floor - floor / 4 + sample / 4)
            });
    }

    /// Whether `name` has the same password hash here as in `other`: a login checked
    /// against `other` still holds under these users.
    pub fn same_password(&self, other: &Users, name: &str) -> bool {
        match (self.hashes.get(name), other.hashes.get(name)) {
            (Some(mine), Some(theirs)) => mine.as_str() == theirs.as_str(),
            _ => false,
        }
    }

    /// A warning when the users' hashes use different parameters: every failed login then
    /// costs what the costliest of them does. `None` when they are alike.
    pub fn mixed_settings(&self) -> Option<String> {
        if self.settings.len() < 2 {
            return None;
        }
        let groups: Vec<String> = self
            .settings
            .iter()
            .map(|(params, n)| format!("{params} ({n} user{})", if *n == 1 { "" } else { "s" }))
            .collect();
        Some(format!(
            "the users' password hashes use {} different argon2 settings: {}. An unknown name or a wrong password costs as long as the costliest ({}); re-hash the others with `a-chat passwd` to make them alike",
            self.settings.len(),
            groups.join(", "),
            self.settings[0].0
        ))
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
    /// unknown name as for the costliest user: run it on the pool of
    /// [`crate::auth::Auth`].
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.hashes.get(name) {
            Some(hash) => hash::verify(hash, password.as_bytes()),
            None => {
                let started = Instant::now();
                let _ = hash::verify(&self.dummy, password.as_bytes());
                self.observe(started.elapsed());
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

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What checking a hash with `params` costs, to compare parameter sets: memory times
/// passes (the lanes share the memory), then the hash's length.
fn cost(params: &Params) -> (u64, usize) {
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    (
        work,
        params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN),
    )
}

/// The costliest parameters `hashes` use (the built-in ones for an empty file).
fn costliest(hashes: &HashMap<String, PasswordHashString>) -> Params {
    hashes
        .values()
        .map(hash::params_of)
        .max_by_key(cost)
        .unwrap_or_else(hash::default_params)
}

/// A hash of a random password with `params` (the costliest of the users file), so that
/// an unknown name costs what the slowest user does.
fn dummy(params: Params) -> Result<PasswordHashString, Problem> {
    let password = hash::random_bytes::<32>().map_err(Problem::Random)?;
    hash::make(&password, params).map_err(Problem::Dummy)
}

/// Each distinct parameter set of `hashes` as `m=..,t=..,p=..` and how many users have
/// it, costliest first.
fn settings(hashes: &HashMap<String, PasswordHashString>) -> Vec<(String, usize)> {
    // Few distinct parameter sets in practice: a list is enough.
    let mut counts: Vec<(Params, usize)> = Vec::new();
    for hash in hashes.values() {
        let params = hash::params_of(hash);
        match counts.iter_mut().find(|(p, _)| *p == params) {
            Some((_, n)) => *n += 1,
            None => counts.push((params, 1)),
        }
    }
    counts.sort_by_key(|(p, n)| (std::cmp::Reverse(cost(p)), std::cmp::Reverse(*n)));
    counts
        .into_iter()
        .map(|(p, n)| {
            let len = match p.output_len() {
                Some(len) if len != Params::DEFAULT_OUTPUT_LEN => format!(",len={len}"),
                _ => String::new(),
            };
            let text = format!("m={},t={},p={}{len}", p.m_cost(), p.t_cost(), p.p_cost());
            (text, n)
        })
        .collect()
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
    fn a_reload_keeps_the_dummy_while_the_costliest_settings_stay() {
        let heavy = Params::new(256, 3, 1, None).unwrap();
        let first = format!("[users]\na = \"{}\"\n", hash_of("x"));
        let first = Users::parse(&first, "u.toml").unwrap();
        // Another user with the same settings: the dummy is kept, not hashed again.
        let more = format!(
            "[users]\na = \"{}\"\nb = \"{}\"\n",
            hash_of("x"),
            hash_of("y")
        );
        let same = Users::parse_after(&more, "u.toml", Some(&first)).unwrap();
        assert_eq!(same.dummy, first.dummy);
        assert_eq!(same.floor(), first.floor());
        assert!(same.contains("b"));
        // Stronger settings: a new dummy with them.
        let stronger = format!(
            "[users]\na = \"{}\"\nc = \"{}\"\n",
            hash_of("x"),
            hash::make(b"z", heavy).unwrap()
        );
        let new = Users::parse_after(&stronger, "u.toml", Some(&first)).unwrap();
        assert_ne!(new.dummy, first.dummy);
        assert_eq!(hash::params_of(&new.dummy).m_cost(), 256);
    }

    #[test]
    fn the_dummy_costs_what_the_costliest_user_does_and_mixed_settings_are_named() {
        let heavy = Params::new(256, 3, 1, None).unwrap();
        let text = format!(
            "[users]\na = \"{}\"\nb = \"{}\"\nc = \"{}\"\n",
            hash_of("x"),
            hash_of("y"),
            hash::make(b"z", heavy).unwrap()
        );
        let users = Users::parse(&text, "u.toml").unwrap();
        let dummy = hash::params_of(&users.dummy);
        assert_eq!(
            (dummy.m_cost(), dummy.t_cost()),
            (256, 3),
            "not the majority's"
        );
        let warning = users.mixed_settings().expect("a warning");
        assert!(warning.contains("2 different argon2 settings"), "{warning}");
        assert!(
            warning.contains("m=256,t=3,p=1 (1 user), m=64,t=1,p=1 (2 users)"),
            "{warning}"
        );
        let alike = format!("[users]\na = \"{}\"\n", hash_of("x"));
        let alike = Users::parse(&alike, "u.toml").unwrap();
        assert_eq!(alike.mixed_settings(), None);
        assert!(alike.same_password(&alike, "a") && !alike.same_password(&users, "a"));
        assert!(!alike.same_password(&alike, "nobody"));
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
        let e = Users::parse("[users]\n\n[groups]\nadmins = \"alice\"\n", "/etc/u.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid users file /etc/u.toml, line 3"),
            "{e}"
        );
        assert!(e.contains("unknown field `groups`"), "{e}");
        let e = Users::parse("[users]\nalice = 3\n", "u.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, key `users.alice`"), "{e}");
        let e = Users::parse("[users\n", "u.toml").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_value_that_is_not_an_argon2id_hash_names_the_user() {
        let text = format!("[users]\nalice = \"{}\"\nbob = \"hunter2\"\n", hash_of("x"));
        let e = Users::parse(&text, "u.toml").unwrap_err().to_string();
        assert!(e.contains("line 3, key `users.bob`"), "{e}");
        assert!(e.contains("user \"bob\" is not an argon2id hash"), "{e}");
        assert!(e.contains("a-chat passwd bob"), "{e}");
        assert!(!e.contains("hunter2"), "the value is not repeated: {e}");
    }

    #[test]
    fn look_alike_names_are_refused_naming_both_lines() {
        let hash = hash_of("x");
        let text = format!("[users]\nbob = \"{hash}\"\nalice = \"{hash}\"\nAlice = \"{hash}\"\n");
        let e = Users::parse(&text, "u.toml").unwrap_err().to_string();
        assert!(e.contains("line 4, key `users.Alice`"), "{e}");
        assert!(
            e.contains("user \"Alice\" looks like user \"alice\" (line 3)"),
            "{e}"
        );
        // A Cyrillic а, first in the file: the later line is the one refused.
        let text = format!(
            "[users]\n\"\u{430}lice\" = \"{hash}\"\nbob = \"{hash}\"\nalice = \"{hash}\"\n"
        );
        let e = Users::parse(&text, "u.toml").unwrap_err().to_string();
        assert!(e.contains("line 4, key `users.alice`"), "{e}");
        assert!(e.contains("(line 2)"), "{e}");
        let text = format!("[users]\nalice = \"{hash}\"\nalicia = \"{hash}\"\n");
        assert_eq!(Users::parse(&text, "u.toml").unwrap().len(), 2);
    }

    #[test]
    fn a_name_that_cannot_be_a_login_is_an_error() {
        let text = format!("[users]\n\"al ice\" = \"{}\"\n", hash_of("x"));
        let e = Users::parse(&text, "u.toml").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("user \"al ice\" is not a valid login"), "{e}");
    }
}

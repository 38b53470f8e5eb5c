//! Secrets in the configuration: files handed over as systemd credentials, and URLs shown
//! without their passwords.
//!
//! A file key (`[tls] key`, `[auth] users_file`, `[cluster] redis_password_file`, ...) may
//! be written `"credential:NAME"`: the file `NAME` in `$CREDENTIALS_DIRECTORY`, where
//! systemd puts what a unit's `LoadCredential=NAME:/path` names. The files can then stay
//! mode 0600 root: systemd copies them for the unit's user (a dynamic one too). The name
//! is resolved to a path when the file is loaded (at start, by check-config and at every
//! reload), so everything after sees plain paths.
//!
//! Whatever prints a Redis URL (errors, check-config, the log) prints [`redact_url`]'s form.

use std::path::{Path, PathBuf};

/// How a file key names a systemd credential.
pub const PREFIX: &str = "credential:";

/// The environment variable systemd sets to the unit's credentials directory.
pub const DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";

/// A file key that named a systemd credential, for check-config to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The dotted key, e.g. `tls.key`.
    pub key: &'static str,
    /// The credential's name (`LoadCredential=NAME:...`).
    pub name: String,
}

/// Why a `credential:NAME` value names no file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The name is not one file name (empty, `.`, `..`, or with a `/`).
    #[error("{value:?}: a credential's name is one file name (letters, digits, '.', '_', '-'), as in LoadCredential=NAME:/path")]
    BadName {
        /// The key's value as written.
        value: String,
    },
    /// `$CREDENTIALS_DIRECTORY` is not set: a-chat runs outside a unit that passes
    /// credentials.
    #[error("{value:?} names a systemd credential, but ${DIRECTORY_VAR} is not set: run a-chat from a unit with LoadCredential={name}:/path/to/file (to check by hand, set {DIRECTORY_VAR} to a directory holding {name})")]
    NoDirectory {
        /// The key's value as written.
        value: String,
        /// The credential's name, for the unit line to add.
        name: String,
    },
    /// `$CREDENTIALS_DIRECTORY` is a relative path, which systemd never sets.
    #[error("{value:?}: ${DIRECTORY_VAR} ({}) is not an absolute path", dir.display())]
    RelativeDirectory {
        /// The key's value as written.
        value: String,
        /// The directory the variable gives.
        dir: PathBuf,
    },
}

/// Why the contents of a password file are not a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Nothing in the file, or an empty line.
    #[error("the file is empty: it must hold the password on one line")]
    Empty,
    /// More than the password's one line (a second line, or a blank one after it).
    #[error("the file holds more than one line: it must hold the password alone")]
    Lines,
}

/// Why the Redis password could not be read from its file (the contents are never part
/// of the message).
#[derive(Debug, thiserror::Error)]
pub enum ReadPasswordError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file, as configured.
        path: String,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file was read and does not hold one password.
    #[error("{path}: {problem}")]
    Contents {
        /// The file, as configured.
        path: String,
        /// What is wrong with what it holds.
        problem: PasswordError,
    },
}

/// The path a file key's value stands for: `None` when it is not `credential:NAME` (the
/// value is a path as it is), the file in `dir` when it is. Pure: `dir` is the value of
/// `$CREDENTIALS_DIRECTORY`, if set.
pub fn resolve(value: &str, dir: Option<&Path>) -> Result<Option<PathBuf>, CredentialError> {
    let Some(name) = value.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(CredentialError::BadName {
            value: value.to_owned(),
        });
    }
    let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) else {
        return Err(CredentialError::NoDirectory {
            value: value.to_owned(),
            name: name.to_owned(),
        });
    };
    if !dir.is_absolute() {
        return Err(CredentialError::RelativeDirectory {
            value: value.to_owned(),
            dir: dir.to_owned(),
        });
    }
    Ok(Some(dir.join(name)))
}

/// A Redis URL as it may be shown: the password in its user part (`user:***@`) and a
/// `pass=` query parameter (unix sockets) replaced. Everything up to the last `@` counts
/// as the user part, so a password holding `@`, `/` or `:` is hidden whole; a user part
/// without `:` is a user name alone, and stays.
pub fn redact_url(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_part = &url[scheme + 3..at];
            let shown = match user_part.split_once(':') {
                None if !user_part.contains(['@', '/', '?', '#']) => user_part.to_owned(),
                Some((user, _)) if !user.contains(['@', '/', '?', '#']) => format!("{user}:***"),
                _ => "***".to_owned(),
            };
            format!("{}{shown}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    };
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query);
        let tail: Vec<String> = tail[1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if matches!(name, "pass" | "password") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}?{}", tail.join("&"));
    }
    out
}

/// The contents of a password file: one line, without its final newline (`echo` and
/// editors add one; it is not part of the password). Errors never include the contents.
pub fn password_from(text: &str) -> Result<String, PasswordError> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(PasswordError::Empty);
    }
    if line.contains(['\n', '\r']) {
        return Err(PasswordError::Lines);
    }
    Ok(line.to_owned())
}

impl super::Config {
    /// Puts the file of each `credential:NAME` value in its place, and notes which keys
    /// named one; a credential that systemd did not provide is an error naming the line
    /// of the unit that would.
    pub(super) fn resolve_credentials(
        &mut self,
        dir: Option<&Path>,
    ) -> Result<(), (&'static str, String)> {
        let mut found = Vec::new();
        for (key, value) in [
            ("tls.cert", &mut self.tls.cert),
            ("tls.key", &mut self.tls.key),
            ("tls.client_ca", &mut self.tls.client_ca),
            ("auth.users_file", &mut self.auth.users_file),
            ("admin.tokens_file", &mut self.admin.tokens_file),
            ("admin.tls_cert", &mut self.admin.tls_cert),
            ("admin.tls_key", &mut self.admin.tls_key),
            ("admin.tls_client_ca", &mut self.admin.tls_client_ca),
            ("cluster.tls_ca", &mut self.cluster.tls_ca),
            ("cluster.tls_cert", &mut self.cluster.tls_cert),
            ("cluster.tls_key", &mut self.cluster.tls_key),
            (
                "cluster.redis_password_file",
                &mut self.cluster.redis_password_file,
            ),
        ] {
            let Some(path) = resolve(value, dir).map_err(|e| (key, e.to_string()))? else {
                continue;
            };
            let name = value[PREFIX.len()..].to_owned();
            if let Err(e) = std::fs::metadata(&path) {
                return Err((key, match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "no credential {name:?} in ${DIRECTORY_VAR} ({}): the unit needs LoadCredential={name}:/path/to/file",
                        path.parent().unwrap_or(&path).display()
                    ),
                    _ => format!("credential {name:?} ({}): {e}", path.display()),
                }));
            }
            *value = path.to_string_lossy().into_owned();
            found.push(Credential { key, name });
        }
        self.credentials = found;
        Ok(())
    }
}

/// Reads the Redis password from `path` (`[cluster] redis_password_file`); errors name
/// the file, never its contents.
pub fn read_password(path: &str) -> Result<String, ReadPasswordError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadPasswordError::Read {
        path: path.to_owned(),
        source,
    })?;
    password_from(&text).map_err(|problem| ReadPasswordError::Contents {
        path: path.to_owned(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_a_file_in_the_directory() {
        let dir = Path::new("/run/credentials/a-chat.service");
        assert_eq!(resolve("/etc/a-chat/key.pem", Some(dir)), Ok(None));
        assert_eq!(resolve("", None), Ok(None));
        assert_eq!(
            resolve("credential:tls.key", Some(dir)),
            Ok(Some(dir.join("tls.key")))
        );
        let absent = resolve("credential:tls.key", None).unwrap_err().to_string();
        assert!(
            absent.contains("CREDENTIALS_DIRECTORY is not set"),
            "{absent}"
        );
        assert!(absent.contains("LoadCredential=tls.key:"), "{absent}");
        for bad in [
            "credential:",
            "credential:../x",
            "credential:a/b",
            "credential:..",
        ] {
            assert!(resolve(bad, Some(dir)).is_err(), "{bad}");
        }
        assert!(resolve("credential:k", Some(Path::new("relative"))).is_err());
        assert!(resolve("credential:k", Some(Path::new(""))).is_err());
    }

    #[test]
    fn urls_lose_their_passwords() {
        for (url, shown) in [
            ("redis://10.0.0.5:6379/", "redis://10.0.0.5:6379/"),
            ("redis://achat:pw@h:6379/", "redis://achat:***@h:6379/"),
            ("redis://:pw@h/", "redis://:***@h/"),
            ("redis://achat@h/", "redis://achat@h/"),
            ("redis://a@b@h/", "redis://***@h/"),
            ("redis://a@b:c@h/", "redis://***@h/"),
            ("rediss://u:p@ss/w:rd@h:1/", "rediss://u:***@h:1/"),
            ("redis://u:pw@h:99999/", "redis://u:***@h:99999/"),
            (
                "unix:///run/redis.sock?user=a&pass=pw&db=2",
                "unix:///run/redis.sock?user=a&pass=***&db=2",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_password_file_is_one_line() {
        assert_eq!(password_from("s3cret\n").as_deref(), Ok("s3cret"));
        assert_eq!(password_from("s3cret\r\n").as_deref(), Ok("s3cret"));
        assert_eq!(password_from("s3cret").as_deref(), Ok("s3cret"));
        assert_eq!(password_from(" s p ").as_deref(), Ok(" s p "));
        for bad in ["", "\n", "a\nb\n", "a\n\n"] {
            assert!(password_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_keys_take_credentials_and_the_redis_password_comes_from_its_file() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("redis-pw"), "s3cret\n").unwrap();
        let text = "[cluster]\nredis = \"redis://achat@127.0.0.1:6379/\"\nredis_password_file = \"credential:redis-pw\"\n";
        let c = Config::parse_in(text, Some(dir.path())).unwrap();
        let path = dir.path().join("redis-pw");
        assert_eq!(c.cluster.redis_password_file, path.to_string_lossy());
        assert_eq!(c.credentials[0].key, "cluster.redis_password_file");
        assert!(!c.to_toml().contains("s3cret"));
        let settings = crate::cluster::settings(&c.cluster).unwrap();
        assert_eq!(settings.redis.password(), Some("s3cret"));
        assert_eq!(settings.redis.username(), Some("achat"));
        // Not provided by the unit, or no directory at all: the line of the key.
        let missing = text.replace("credential:redis-pw", "credential:other");
        let e = Config::parse_in(&missing, Some(dir.path())).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("cluster.redis_password_file"))
        );
        assert!(e.message.contains("LoadCredential=other:"), "{e}");
        assert!(Config::parse_in(text, None).is_err());
        // A password in the URL as well: one place only.
        let both = text.replace("achat@", "achat:other@");
        let e = Config::parse_in(&both, Some(dir.path())).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("cluster.redis"), "{e}");
        assert!(!e.to_string().contains("other@"), "{e}");
    }

    #[test]
    fn the_effective_settings_and_the_flags_hide_the_password() {
        use crate::config::{Config, Setting};
        let c = Config::parse("[cluster]\nredis = \"redis://u:s3cret@127.0.0.1:6379/\"\n").unwrap();
        assert!(c.to_toml().contains("redis://u:***@127.0.0.1:6379/"));
        let set = Setting::parse("cluster.redis=redis://u:s3cret@h:99999/").unwrap();
        let e = Config::load_with(None, &[set]).unwrap_err().to_string();
        assert!(e.contains("cluster.redis") && !e.contains("s3cret"), "{e}");
    }
}

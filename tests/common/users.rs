//! Users files for the authentication tests: argon2id hashes made with the library's own
//! `hash::make` (what `a-chat passwd` runs), with the default parameters or others, and
//! a login over any socket that says whether it was granted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use a_chat::auth::hash;
use argon2::Params;

use super::Daemon;

/// A users file in its own directory (kept while the test runs).
pub struct UsersFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl UsersFile {
    /// Writes `users` (name, password, hash parameters) as a `[users]` table.
    pub fn with_params(users: &[(&str, &str, Params)]) -> UsersFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let file = UsersFile { _dir: dir, path };
        file.write(users);
        file
    }

    /// Writes `users` (name, password) with the default parameters.
    pub fn new(users: &[(&str, &str)]) -> UsersFile {
        let users: Vec<_> = users
            .iter()
            .map(|&(n, p)| (n, p, hash::default_params()))
            .collect();
        UsersFile::with_params(&users)
    }

    /// Replaces the file's users (whole, as an editor would).
    pub fn write(&self, users: &[(&str, &str, Params)]) {
        let mut text = String::from("[users]\n");
        for (name, password, params) in users {
            let hash = hash::make(password.as_bytes(), params.clone()).unwrap();
            text += &format!("{name} = \"{hash}\"\n");
        }
        std::fs::write(&self.path, text).unwrap();
    }

    /// A daemon whose logins are checked against these users, with `extra` after
    /// `[auth] users_file` (more `[auth]` keys, then other sections).
    pub fn daemon(&self, extra: &str) -> Daemon {
        Daemon::with_toml(&format!(
            "[auth]\nusers_file = \"{}\"\n{extra}",
            self.path.display()
        ))
    }
}

/// Hash parameters `times` as costly as the default ones (memory and passes).
pub fn heavier(memory: u32, passes: u32) -> Params {
    Params::new(hash::MEMORY_KIB * memory, hash::PASSES * passes, 1, None).unwrap()
}

/// Sends `NAME PASSWORD` and a message to self on `stream`, and returns the first line
/// that comes back: `from NAME: ready?` when the login was granted, else the `error:`
/// line (`None` if the connection closed first or nothing came within `wait`).
pub fn try_login(stream: &TcpStream, name: &str, password: &str, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut writer = stream;
    let sent = writer.write_all(format!("{name} {password}\n{name}: ready?\n").as_bytes());
    sent.ok()?;
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
        _ => None,
    }
}

//! `a-chat passwd NAME` (ARCHITECTURE §9): reads a password (without echo on a terminal, or
//! one line from stdin otherwise) and makes the users-file line `NAME = "$argon2id$..."`;
//! with `--file PATH`, adds that line to the users file or replaces NAME's line there
//! (`file`).

mod file;

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use crate::auth::hash;
use crate::config::Limits;

pub use file::{EditError, FileError};

/// Why `a-chat passwd` made nothing (with `--file`: changed nothing).
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The name given could never be sent as a login.
    #[error("\"{name}\" cannot be a login: {why}")]
    NotALogin {
        /// The name as given.
        name: String,
        /// Which rule of logins it breaks.
        why: crate::names::LoginError,
    },
    /// On a terminal, the password and its confirmation were not the same.
    #[error("the two passwords differ; nothing was made")]
    Differ,
    /// The terminal could not be asked (see [`AskError`]).
    #[error("{0}")]
    Ask(#[from] AskError),
    /// Not on a terminal, and stdin could not be read.
    #[error("cannot read the password from stdin: {0}")]
    Stdin(io::Error),
    /// The password read was empty.
    #[error("the password is empty")]
    Empty,
    /// The password could not be hashed.
    #[error("{0}")]
    Hash(#[from] hash::MakeError),
    /// With `--file`: the users file could not be edited.
    #[error("{0}")]
    File(#[from] FileError),
}

/// Why a password could not be asked for on the terminal.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The terminal's echo cannot be turned off (stdin is not a terminal after all).
    #[error("cannot turn off the terminal's echo: {0}")]
    EchoOff(io::Error),
    /// The line typed could not be read.
    #[error("cannot read the password: {0}")]
    Read(io::Error),
}

/// Makes the users-file line for `name`, reading the password from stdin.
pub fn run(name: &str) -> Result<String, PasswdError> {
    let hash = read_and_hash(name)?;
    Ok(users_line(name, hash.as_str()))
}

/// Adds `name` to the users file at `path`, or replaces its password there, reading the
/// password from stdin; says what it did.
pub fn run_file(name: &str, path: &Path) -> Result<String, PasswdError> {
    let hash = read_and_hash(name)?;
    Ok(file::write(
        path,
        name,
        hash.as_str(),
        &users_line(name, hash.as_str()),
    )?)
}

/// Checks that `name` can be a login, reads its password and hashes it.
fn read_and_hash(name: &str) -> Result<argon2::password_hash::PasswordHashString, PasswdError> {
    let max = Limits::default().max_login_bytes;
    crate::names::validate_login(name, max, crate::names::LoginCharset::Unicode).map_err(
        |why| PasswdError::NotALogin {
            name: name.to_owned(),
            why,
        },
    )?;
    let password = if io::stdin().is_terminal() {
        let first = ask(&format!("Password for {name}: "))?;
        let again = ask("Again, to be sure: ")?;
        if first != again {
            return Err(PasswdError::Differ);
        }
        first
    } else {
        read_line(&mut io::stdin().lock()).map_err(PasswdError::Stdin)?
    };
    if password.is_empty() {
        return Err(PasswdError::Empty);
    }
    Ok(hash::make(password.as_bytes(), hash::default_params())?)
}

/// The users-file line for `name`: a bare TOML key where the name allows one, a quoted
/// key otherwise (a `.` in a bare key would make a nested table).
pub fn users_line(name: &str, hash: &str) -> String {
    let bare = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        format!("{name} = \"{hash}\"")
    } else {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{quoted}\" = \"{hash}\"")
    }
}

/// One line without its line ending; an empty input gives an empty password.
fn read_line(input: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Asks for a password on the terminal with echo turned off, restoring it afterwards
/// (also for `a-chat client --user`).
pub fn ask(prompt: &str) -> Result<String, AskError> {
    let mut stderr = io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let echo_off = EchoOff::new().map_err(AskError::EchoOff)?;
    let line = read_line(&mut io::stdin().lock());
    drop(echo_off);
    let _ = writeln!(stderr);
    line.map_err(AskError::Read)
}

/// The terminal's settings before echo was turned off, put back on drop.
struct EchoOff {
    /// The settings to restore.
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> io::Result<EchoOff> {
        // SAFETY: tcgetattr and tcsetattr on stdin, with a termios struct we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(EchoOff { saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: puts back the settings read from the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_bare_keys_are_quoted() {
        assert_eq!(users_line("alice", "$h"), "alice = \"$h\"");
        assert_eq!(users_line("bob-2_x", "$h"), "bob-2_x = \"$h\"");
        assert_eq!(users_line("b.b", "$h"), "\"b.b\" = \"$h\"");
        assert_eq!(users_line("zoë", "$h"), "\"zoë\" = \"$h\"");
        assert_eq!(users_line("a\"b\\", "$h"), "\"a\\\"b\\\\\" = \"$h\"");
    }

    #[test]
    fn one_line_is_read_without_its_ending() {
        let read = |s: &str| read_line(&mut s.as_bytes()).unwrap();
        assert_eq!(read("secret\n"), "secret");
        assert_eq!(read("two words\r\nrest\n"), "two words");
        assert_eq!(read("no newline"), "no newline");
        assert_eq!(read(""), "");
    }

    #[test]
    fn a_users_line_parses_as_a_users_file() {
        let hash = hash::make(b"pw", hash::tests::cheap()).unwrap();
        let text = format!("[users]\n{}\n", users_line("b.b", hash.as_str()));
        let users = crate::auth::Users::parse(&text, "u.toml").unwrap();
        assert!(users.verify("b.b", "pw"));
    }
}

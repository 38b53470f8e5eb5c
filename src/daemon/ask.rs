//! `a-chat reload`: asks a running daemon to reload, through its admin endpoint
//! (`POST /reload`), and reports the outcome as an exit status, so that `systemctl reload`
//! fails when the reload did. Without an admin endpoint it can only send SIGHUP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Most bytes read of the endpoint's answer (it is one line of text).
const MAX_ANSWER: u64 = 64 * 1024;

/// How `a-chat reload` went.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file's `[admin] listen` cannot be read: the daemon was not asked.
    #[error("{path}: {why}\n(the daemon was not asked to reload; its settings in force stay)")]
    Unreadable { path: String, why: String },
    /// Nowhere to ask and nobody to signal.
    #[error("nowhere to ask for a reload: give --config with an [admin] listen, --admin ADDR, or --pid PID (SIGHUP)")]
    Nowhere,
    /// The daemon refused the reload (its answer says why).
    #[error("{0}")]
    Refused(String),
    /// The endpoint could not be reached or answered something else.
    #[error("asking {addr} (POST /reload): {why}")]
    Unreachable { addr: SocketAddr, why: String },
    /// SIGHUP could not be sent.
    #[error("cannot send SIGHUP to process {pid}: {why}")]
    Signal { pid: u32, why: std::io::Error },
}

/// What a reload that was asked for did.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// The endpoint's answer: what was applied.
    Applied(String),
    /// SIGHUP was sent; the outcome is in the daemon's log only.
    Signalled(u32),
}

/// Asks for a reload: through the admin endpoint (`admin`, else `config`'s `[admin] listen`),
/// else by SIGHUP to `pid`.
pub fn reload(
    config: Option<&Path>,
    admin: Option<SocketAddr>,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<Asked, ReloadError> {
    let (from_file, token) = match config {
        Some(path) => (admin_listen(path)?, token_for(path)?),
        None => (None, std::env::var(TOKEN_VAR).ok()),
    };
    match (admin.or(from_file), pid) {
        (Some(addr), _) => ask(addr, token.as_deref(), timeout).map(Asked::Applied),
        (None, Some(pid)) => signal(pid).map(|()| Asked::Signalled(pid)),
        (None, None) => Err(ReloadError::Nowhere),
    }
}

/// The file's `[admin] listen`, read without checking the rest: the daemon checks the
/// whole file itself (it alone may read what the file names, such as credentials), and
/// says why it refuses it.
fn admin_listen(path: &Path) -> Result<Option<SocketAddr>, ReloadError> {
    let unreadable = |why: String| ReloadError::Unreadable {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    let listen = table.get("admin").and_then(|admin| admin.get("listen"));
    match listen.map(|v| v.as_str()) {
        None | Some(Some("")) => Ok(None),
        Some(Some(addr)) => crate::config::parse_addr(addr)
            .map(Some)
            .map_err(|e| unreadable(format!("[admin] listen: {e}"))),
        Some(None) => Err(unreadable("[admin] listen is not a string".into())),
    }
}

/// The environment variable that gives `a-chat reload` the admin token to present.
pub const TOKEN_VAR: &str = "A_CHAT_ADMIN_TOKEN";

/// The token `a-chat reload` presents: `$A_CHAT_ADMIN_TOKEN`, else, when the file names an
/// `[admin] tokens_file` this process can read, its token named `reload`, else its first
/// by name (the daemon's audit line says which).
fn token_for(path: &Path) -> Result<Option<String>, ReloadError> {
    if let Ok(token) = std::env::var(TOKEN_VAR) {
        return Ok(Some(token));
    }
    let unreadable = |why: String| ReloadError::Unreadable {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    let file = table
        .get("admin")
        .and_then(|admin| admin.get("tokens_file"))
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if file.is_empty() {
        return Ok(None);
    }
    // `credential:NAME` is the file of that name among the service's credentials.
    let file = match file.strip_prefix("credential:") {
        Some(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => Path::new(&dir).join(name),
            None => return Ok(None),
        },
        None => Path::new(file).to_path_buf(),
    };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(None);
    };
    let tokens: toml::Table = toml::from_str(&text).unwrap_or_default();
    let Some(tokens) = tokens.get("tokens").and_then(|t| t.as_table()) else {
        return Ok(None);
    };
    let chosen = tokens
        .get("reload")
        .or_else(|| tokens.iter().min_by(|a, b| a.0.cmp(b.0)).map(|(_, v)| v));
    Ok(chosen.and_then(|v| v.as_str()).map(str::to_owned))
}

/// `POST /reload` to the endpoint at `addr`; the answer's text when it says 200.
fn ask(addr: SocketAddr, token: Option<&str>, timeout: Duration) -> Result<String, ReloadError> {
    let unreachable = |why: String| ReloadError::Unreachable { addr, why };
    // An unspecified address (0.0.0.0:9100) is asked on loopback, as a local client would.
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&target, timeout.min(Duration::from_secs(5)))
        .map_err(|e| unreachable(e.to_string()))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| unreachable(e.to_string()))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: {target}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(|e| unreachable(format!("no answer in time ({e})")))?;
    let (status, body) =
        parse_answer(&answer).ok_or_else(|| unreachable("not an HTTP answer".into()))?;
    let text = body.trim_end().to_owned();
    match status {
        200 => Ok(text
            .strip_prefix("reloaded: applied ")
            .unwrap_or(&text)
            .to_owned()),
        422 | 503 => Err(ReloadError::Refused(text)),
        401 => Err(unreachable(format!(
            "the endpoint needs a token: set {TOKEN_VAR}, or let this process read [admin] tokens_file"
        ))),
        404 => Err(unreachable(
            "the daemon has no POST /reload (an older a-chat?)".into(),
        )),
        _ => Err(unreachable(format!("answered {status}: {text}"))),
    }
}

/// The status and the body of a complete HTTP/1.1 answer.
fn parse_answer(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn signal(pid: u32) -> Result<(), ReloadError> {
    let id = libc::pid_t::try_from(pid).unwrap_or(0);
    if id <= 0 {
        let why = std::io::Error::from(std::io::ErrorKind::InvalidInput);
        return Err(ReloadError::Signal { pid, why });
    }
    // SAFETY: kill has no memory preconditions; a wrong pid is an error it returns.
    if unsafe { libc::kill(id, libc::SIGHUP) } != 0 {
        let why = std::io::Error::last_os_error();
        return Err(ReloadError::Signal { pid, why });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_status_and_body() {
        let a = b"HTTP/1.1 422 Unprocessable Content\r\nContent-Length: 5\r\n\r\nwhy\r\n";
        assert_eq!(parse_answer(a), Some((422, "why\r\n".into())));
        assert_eq!(parse_answer(b"SSH-2.0\r\n\r\n"), None);
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn nowhere_to_ask_is_said() {
        let e = reload(None, None, None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ReloadError::Nowhere), "{e}");
    }
}

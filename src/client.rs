//! The interactive client: lines typed on stdin go to the server, lines from the server
//! go to stdout, both at once. When stdin ends, the client stops sending and prints what
//! the server still has for it; when the server closes, the client exits.
//!
//! On a terminal, what the server sends is shown through `screen` (control and bidi
//! characters visible, invalid UTF-8 as U+FFFD, lines bounded), whatever the server is;
//! piped, it is passed through byte for byte as it arrives, holding no line at all.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::io::Write as _;

use futures::io::BufReader;
use futures::{
    select, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Stream, StreamExt,
};

use crate::screen::{LineCutter, MAX_LINE};
use crate::{runtime, tls};

#[path = "client_errors.rs"]
mod errors;
pub use errors::{CredentialsError, ProbeError, TargetError};

/// Bytes asked of one read from the server.
const READ_SIZE: usize = 16 * 1024;

/// What the server sends, read by read, until it closes.
fn reads(
    reader: Box<dyn AsyncRead + Unpin + Send>,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buf = vec![0; READ_SIZE];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Where what the server sends goes: a terminal gets it rendered line by line, a pipe or
/// file gets the bytes as they are.
struct Screen {
    /// On a terminal: the lines, cut at `MAX_LINE`. `None` when piped.
    cutter: Option<LineCutter>,
    /// Rendered text waiting to be written, reused between reads.
    shown: String,
}

impl Screen {
    fn new() -> Screen {
        let terminal = std::io::stdout().is_terminal();
        Screen {
            cutter: terminal.then(|| LineCutter::new(MAX_LINE)),
            shown: String::new(),
        }
    }

    fn show(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match &mut self.cutter {
            None => out.write_all(data)?,
            Some(cutter) => {
                self.shown.clear();
                cutter.push(data, &mut self.shown);
                out.write_all(self.shown.as_bytes())?;
            }
        }
        out.flush()
    }

    /// The server closed: the last line, even without its `\n`.
    fn finish(&mut self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if let Some(cutter) = &mut self.cutter {
            self.shown.clear();
            cutter.finish(&mut self.shown);
            out.write_all(self.shown.as_bytes())?;
        }
        out.flush()
    }
}

/// Where a client connects: `HOST:PORT` as the user wrote it, and the addresses it names,
/// tried in turn (`localhost` names `::1` and `127.0.0.1`; a daemon may listen on one only).
#[derive(Debug, Clone)]
pub struct Target {
    /// As written: for messages, and its host for TLS's server name.
    pub name: String,
    /// What `name` resolved to, in the resolver's order.
    pub addrs: Vec<SocketAddr>,
}

impl Target {
    /// Reads `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`, resolving a host name.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        use std::net::ToSocketAddrs;
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target {
                name: s.to_owned(),
                addrs: vec![addr],
            });
        }
        if s.rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(TargetError::NotHostPort { text: s.to_owned() });
        }
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve {
                text: s.to_owned(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TargetError::NoAddress { text: s.to_owned() });
        }
        Ok(Target {
            name: s.to_owned(),
            addrs,
        })
    }

    /// The host part, without its port or brackets: the name a server's certificate must
    /// carry unless `--server-name` says otherwise.
    pub fn host(&self) -> &str {
        let host = self.name.rsplit_once(':').map_or(&*self.name, |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// How a-chat's own clients speak TLS (`--tls`, `--ca`, `--cert`, `--key`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The CA (PEM) that signed the server's certificate; the system's trusted roots when
    /// unset.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for a server that requires mutual TLS.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry; the address's IP when unset.
    pub server_name: Option<String>,
}

/// A connection to a server, plain or TLS, as a reading and a writing half.
struct Link {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// The plain socket, to end our side with a shutdown (closing the runtime's stream
    /// does not); `None` over TLS, where a close_notify ends it.
    plain: Option<runtime::TcpStream>,
}

/// Connects to the first of `target`'s addresses that answers, with a TLS handshake when
/// `tls` is given.
async fn connect(target: &Target, tls: Option<&TlsOptions>) -> std::io::Result<Link> {
    let mut failed = None;
    let mut stream = None;
    for addr in &target.addrs {
        match runtime::connect(*addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => failed = Some(e),
        }
    }
    let Some(stream) = stream else {
        let e = failed.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
        return Err(std::io::Error::new(
            e.kind(),
            format!("cannot connect to {target}: {e}"),
        ));
    };
    let addr = target;
    let Some(options) = tls else {
        return Ok(Link {
            reader: Box::new(stream.clone()),
            writer: Box::new(stream.clone()),
            plain: Some(stream),
        });
    };
    let invalid = |e: tls::LoadError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let cert_and_key = options
        .cert_and_key
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let config = tls::client_config(options.ca.as_deref(), cert_and_key).map_err(invalid)?;
    let host = options
        .server_name
        .clone()
        .unwrap_or_else(|| target.host().to_owned());
    let (connector, name) = tls::connector(config, &host).map_err(invalid)?;
    let session = connector.connect(name, stream).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("TLS handshake with {addr} failed: {e}"))
    })?;
    let (reader, writer) = session.split();
    Ok(Link {
        reader: Box::new(reader),
        writer: Box::new(writer),
        plain: None,
    })
}

/// The first line for a server with authenticated logins: `NAME PASSWORD`.
pub fn credentials(user: &str) -> Result<String, CredentialsError> {
    let password = match std::env::var("A_CHAT_PASSWORD") {
        Ok(password) => password,
        Err(_) if std::io::stdin().is_terminal() => {
            crate::auth::passwd::ask(&format!("Password for {user}: "))?
        }
        Err(_) => return Err(CredentialsError::NoPassword),
    };
    Ok(format!("{user} {password}\n"))
}

/// Runs the client until the server closes the connection. `login`, when given, is sent
/// first (the `NAME PASSWORD` line of `--user`).
pub fn run(
    target: Target,
    tls: Option<TlsOptions>,
    login: Option<String>,
) -> std::io::Result<Ended> {
    let addr = &target;
    runtime::block_on(async move {
        let Link {
            reader,
            mut writer,
            plain,
        } = connect(addr, tls.as_ref()).await?;
        let mut first = plain.is_some();
        if let Some(login) = &login {
            writer.write_all(login.as_bytes()).await?;
            writer.flush().await?;
        }
        if std::io::stdin().is_terminal() {
            eprintln!(
                "Connected to {addr}{}.\n{}\
                 Messages are `name1, name2: text`; `yourname: hello` echoes back to you.\n\
                 Ctrl-D quits.",
                if tls.is_some() { " (TLS)" } else { "" },
                if login.is_some() {
                    "Logged in with --user.\n"
                } else {
                    "Type your login name first (one word).\n"
                }
            );
        }
        let mut from_server = Box::pin(reads(reader)).fuse();
        let mut screen = Screen::new();
        let mut from_stdin = BufReader::new(async_std::io::stdin()).lines().fuse();
        let mut stdin_open = true;
        // If the server's last line is an `error:` line it closes the connection after (a
        // login taken, a line too long, a login timeout...), the client failed.
        let mut last_line = LastLine::default();
        loop {
            select! {
                data = from_server.next() => match data {
                    Some(data) => {
                        let data = data?;
                        if std::mem::take(&mut first) && speaks_tls(&data) {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("the server at {addr} answered in TLS: this port wants --tls"),
                            ));
                        }
                        last_line.push(&data);
                        screen.show(&data)?;
                    }
                    None => break,
                },
                line = from_stdin.next() => match line {
                    Some(line) => {
                        let mut line = line?;
                        line.push('\n');
                        writer.write_all(line.as_bytes()).await?;
                    }
                    None if stdin_open => {
                        // Nothing more to send: tell the server (over TLS, with a
                        // close_notify), then print what it still sends.
                        stdin_open = false;
                        match &plain {
                            Some(stream) => stream.shutdown(std::net::Shutdown::Write)?,
                            None => writer.close().await?,
                        }
                    }
                    None => {}
                },
            }
        }
        screen.finish()?;
        let last_was_error = last_line.last().is_some_and(|line| {
            crate::protocol::error_closes_connection(&String::from_utf8_lossy(line))
        });
        Ok(if last_was_error {
            Ended::AfterError
        } else {
            Ended::Closed
        })
    })
}

/// Whether the first bytes a server sent are a TLS record (an alert or a handshake, version
/// 3.x): what a TLS port answers to a plaintext client, which a terminal would show as
/// garbage.
fn speaks_tls(data: &[u8]) -> bool {
    matches!(data, [0x15 | 0x16, 0x03, ..])
}

/// How a client session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server closed the connection after the conversation.
    Closed,
    /// The server closed it right after an `error:` line (exit status 1).
    AfterError,
}

/// Proves a round trip at `addr` within `timeout`: connects (with a TLS handshake when
/// `tls` is given) and has a line answered: with `user`, its `NAME PASSWORD` login and a
/// line to itself; without, an empty first line, which the daemon answers with an
/// `error:` line before any password check (counted as a probe, logged at debug only: no
/// failed login, nothing in the log at info). A daemon
/// that accepts connections but cannot serve them (all its connection tokens out) fails
/// the probe.
pub fn probe(
    addr: &Target,
    timeout: Duration,
    tls: Option<TlsOptions>,
    user: Option<(String, String)>,
) -> Result<(), ProbeError> {
    runtime::block_on(async move {
        let round_trip = async {
            let Link {
                reader, mut writer, ..
            } = connect(addr, tls.as_ref())
                .await
                .map_err(ProbeError::Connect)?;
            // Without a user, an empty first line: the daemon's reader and writer answer
            // it (`error: login is empty`), which proves a round trip without a login in
            // the log.
            let (ping, want) = match &user {
                Some((name, login)) => (
                    format!("{login}{name}: probe\n"),
                    Some(format!("from {name}: probe")),
                ),
                None => ("\n".to_owned(), None),
            };
            writer
                .write_all(ping.as_bytes())
                .await
                .map_err(ProbeError::Io)?;
            writer.flush().await.map_err(ProbeError::Io)?;
            let mut lines = BufReader::new(reader).lines();
            while let Some(line) = lines.next().await {
                let line = line.map_err(ProbeError::Io)?;
                match &want {
                    Some(want) if line == *want => return Ok(()),
                    None if line.starts_with("error: ") => return Ok(()),
                    Some(_) if line.starts_with("error: ") => {
                        let target = addr.to_string();
                        return Err(ProbeError::Answered { target, line });
                    }
                    _ => {}
                }
            }
            Err(ProbeError::Closed {
                target: addr.to_string(),
            })
        };
        match runtime::timeout(timeout, round_trip).await {
            Ok(result) => result,
            Err(runtime::Elapsed) => Err(ProbeError::Timeout {
                target: addr.to_string(),
                timeout,
            }),
        }
    })
}

/// The last complete line the server sent (its first 256 bytes), and whether anything
/// came after it, to tell how the conversation ended.
#[derive(Default)]
struct LastLine {
    /// The last complete line, cut at 256 bytes.
    done: Vec<u8>,
    /// The line being received (cut at 256 bytes); a non-empty one means the last
    /// complete line was not the last thing sent.
    partial: Vec<u8>,
}

impl LastLine {
    const KEEP: usize = 256;

    fn push(&mut self, data: &[u8]) {
        for piece in data.split_inclusive(|&b| b == b'\n') {
            let room = Self::KEEP.saturating_sub(self.partial.len());
            let body = piece.strip_suffix(b"\n").unwrap_or(piece);
            self.partial
                .extend_from_slice(&body[..body.len().min(room)]);
            if piece.ends_with(b"\n") {
                self.done = std::mem::take(&mut self.partial);
            }
        }
    }

    /// The last line, if nothing but whole lines followed it.
    fn last(&self) -> Option<&[u8]> {
        self.partial.is_empty().then_some(self.done.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::LastLine;

    #[test]
    fn the_last_line_is_found_across_reads() {
        let mut l = LastLine::default();
        l.push(b"from a: hi\nerror: li");
        assert_eq!(l.last(), None);
        l.push(b"ne too long\n");
        assert_eq!(l.last(), Some(&b"error: line too long"[..]));
        l.push(&[b'x'; 1000]);
        l.push(b"\n");
        assert_eq!(l.last().map(<[u8]>::len), Some(256));
    }
}

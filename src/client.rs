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

/// How a-chat's own clients speak TLS (`--tls`, `--ca`, `--cert`, `--key`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The CA (PEM) that signed the server's certificate.
    pub ca: PathBuf,
    /// A client certificate and its key (PEM), for a server that requires mutual TLS.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry; the address's IP when unset.
    pub server_name: Option<String>,
}

/// A connection to a server, plain or TLS, as a reading and a writing half.
struct Link {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
}

/// Connects to `addr`, with a TLS handshake when `tls` is given.
async fn connect(addr: SocketAddr, tls: Option<&TlsOptions>) -> std::io::Result<Link> {
    let stream = runtime::connect(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    let Some(options) = tls else {
        return Ok(Link {
            reader: Box::new(stream.clone()),
            writer: Box::new(stream),
        });
    };
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let cert_and_key = options
        .cert_and_key
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let config = tls::client_config(&options.ca, cert_and_key).map_err(invalid)?;
    let host = options
        .server_name
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let (connector, name) = tls::connector(config, &host).map_err(invalid)?;
    let session = connector.connect(name, stream).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("TLS handshake with {addr} failed: {e}"))
    })?;
    let (reader, writer) = session.split();
    Ok(Link {
        reader: Box::new(reader),
        writer: Box::new(writer),
    })
}

/// Runs the client until the server closes the connection.
pub fn run(addr: SocketAddr, tls: Option<TlsOptions>) -> std::io::Result<()> {
    runtime::block_on(async move {
        let Link { reader, mut writer } = connect(addr, tls.as_ref()).await?;
        if std::io::stdin().is_terminal() {
            eprintln!(
                "Connected to {addr}{}.\n\
                 Type your login name first (one word), then messages as `name1, name2: text`;\n\
                 `yourname: hello` echoes back to you. Ctrl-D quits.",
                if tls.is_some() { " (TLS)" } else { "" }
            );
        }
        let mut from_server = Box::pin(reads(reader)).fuse();
        let mut screen = Screen::new();
        let mut from_stdin = BufReader::new(async_std::io::stdin()).lines().fuse();
        let mut stdin_open = true;
        loop {
            select! {
                data = from_server.next() => match data {
                    Some(data) => screen.show(&data?)?,
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
                        writer.close().await?;
                    }
                    None => {}
                },
            }
        }
        screen.finish()
    })
}

/// Connects to `addr` (completing a TLS handshake when `tls` is given) and closes
/// again: exit status 0 if the daemon accepts connections.
pub fn probe(addr: SocketAddr, timeout: Duration, tls: Option<TlsOptions>) -> bool {
    runtime::block_on(async move {
        matches!(
            runtime::timeout(timeout, connect(addr, tls.as_ref())).await,
            Ok(Ok(_))
        )
    })
}

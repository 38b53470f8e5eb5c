//! A bench connection's transport: a plain non-blocking TCP socket, or TLS over one
//! (`--tls`), as one enum chosen when the connection opens, so the plaintext path
//! costs a single predictable branch per system call and nothing else.
//!
//! TLS runs rustls's sans-I/O `ClientConnection` straight on the socket, fit for the
//! bench's edge-triggered epoll loops: [`Link::read`] returns a short count only once
//! the socket said `EAGAIN` (or at the end of the stream) and every decrypted byte has
//! been handed out, so "a short read means drained" holds for both kinds; records that
//! the socket could not take yet stay in rustls ([`Link::wants_write`]) until the next
//! EPOLLOUT, when [`Link::send_pending`] writes them. Handshake messages go out from
//! either side; plaintext written before the handshake ends (the login) waits in
//! rustls and leaves right after it, so every connection completes its handshake first.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use futures_rustls::rustls::client::Resumption;
use futures_rustls::rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::ServerName;

use super::wslink::WsLink;

/// How bench connections speak TLS: one client configuration for all of them.
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsSetup({:?})", self.name)
    }
}

/// `--tls`, `--ca`, `--cert`/`--key`, `--server-name` as given.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// The name the server's certificate must carry: `--server-name`, else the address's IP.
pub fn server_name(given: Option<&str>, ip: IpAddr) -> Result<ServerName<'static>, String> {
    match given {
        Some(n) => ServerName::try_from(n.to_owned())
            .map_err(|e| format!("--server-name {n:?} cannot name a TLS server: {e}")),
        None => Ok(ServerName::IpAddress(ip.into())),
    }
}

impl TlsSetup {
    /// Reads the CA (and the client certificate and key) and fixes the server name.
    /// Session resumption is off: every connection makes a full handshake, as after a
    /// restart of the server, for either target.
    pub fn new(opts: &TlsOptions, ip: IpAddr) -> Result<TlsSetup, String> {
        let ca = opts.ca.as_deref().ok_or("--tls needs --ca FILE")?;
        let pair = match (&opts.cert, &opts.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err("--cert and --key go together".into()),
        };
        let mut config = a_chat::tls::client_config(Some(ca), pair).map_err(|e| e.to_string())?;
        config.resumption = Resumption::disabled();
        Ok(TlsSetup {
            config: Arc::new(config),
            name: server_name(opts.server_name.as_deref(), ip)?,
        })
    }
}

/// One connection's transport.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<TlsLink>),
    /// `--transport ws`: a WebSocket session, one text frame per line.
    Ws(Box<WsLink>),
}

pub struct TlsLink {
    sock: TcpStream,
    tls: ClientConnection,
}

impl Link {
    /// Wraps a connected socket; with `tls`, starts the handshake (the ClientHello is
    /// queued, and sent by the first [`Link::write`] or [`Link::send_pending`]).
    pub fn new(sock: TcpStream, tls: Option<&TlsSetup>) -> io::Result<Link> {
        Link::over(sock, tls, false, false)
    }

    /// As [`Link::new`]; with `websocket`, a WebSocket session (its upgrade request is
    /// queued the same way) over a plain socket, carrying lines (a-chat) or, `binary`, a
    /// byte stream (NATS).
    pub fn over(
        sock: TcpStream,
        tls: Option<&TlsSetup>,
        websocket: bool,
        binary: bool,
    ) -> io::Result<Link> {
        if websocket {
            if tls.is_some() {
                return Err(io::Error::other(
                    "--transport ws runs over plain TCP: leave out --tls",
                ));
            }
            let host = sock.peer_addr()?.to_string();
            return Ok(Link::Ws(Box::new(WsLink::new(sock, &host, binary))));
        }
        match tls {
            None => Ok(Link::Plain(sock)),
            Some(t) => {
                let tls = ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(io::Error::other)?;
                Ok(Link::Tls(Box::new(TlsLink { sock, tls })))
            }
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(s) => s,
            Link::Tls(t) => &t.sock,
            Link::Ws(w) => &w.sock,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    /// Reads plaintext. A count below `buf.len()` means the socket is drained (or at
    /// its end); `Ok(0)` is the end of the stream.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => (&*s).read(buf),
            Link::Tls(t) => t.read(buf),
            Link::Ws(w) => w.read(buf),
        }
    }

    /// Writes plaintext; `WouldBlock` once the socket takes no more.
    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => (&*s).write(buf),
            Link::Tls(t) => t.write(buf),
            Link::Ws(w) => w.write(buf),
        }
    }

    /// TLS records wait for the socket (always false for plain sockets).
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(t) => t.tls.wants_write(),
            Link::Ws(w) => w.wants_write(),
        }
    }

    /// Writes the waiting TLS records; `WouldBlock` if the socket fills first.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(_) => Ok(()),
            Link::Tls(t) => t.send_pending(),
            Link::Ws(w) => w.send_pending(),
        }
    }

    /// Writes `out[*pos..]`, then the TLS records still waiting, for as long as the
    /// socket takes them: `*pos` moves past what went out, and `*writable` turns false
    /// at `WouldBlock` (the next EPOLLOUT sets it again). `Interrupted` is retried; any
    /// other error is returned, with `*pos` at what went out before it.
    #[inline]
    pub fn flush(&mut self, out: &[u8], pos: &mut usize, writable: &mut bool) -> io::Result<()> {
        while *writable {
            let r = if *pos < out.len() {
                self.write(&out[*pos..])
            } else if self.wants_write() {
                // TLS records the socket could not take yet (never for plain sockets).
                self.send_pending().map(|()| 0)
            } else {
                break;
            };
            match r {
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The negotiated protocol version and cipher suite, once the handshake is done.
    pub fn describe(&self) -> Option<String> {
        match self {
            Link::Plain(_) => None,
            Link::Ws(_) => Some("WebSocket (RFC 6455)".into()),
            Link::Tls(t) => {
                let v = t.tls.protocol_version()?;
                let s = t.tls.negotiated_cipher_suite()?;
                let kx = t
                    .tls
                    .negotiated_key_exchange_group()
                    .map_or(String::new(), |g| format!(", {:?}", g.name()));
                Some(format!("{v:?}, {:?}{kx}", s.suite()))
            }
        }
    }
}

impl TlsLink {
    fn send_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends what the handshake (or a key update) produced while reading; a full
    /// socket leaves it for the next EPOLLOUT.
    fn answer(&mut self) -> io::Result<()> {
        match self.send_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        loop {
            while n < buf.len() {
                match self.tls.reader().read(&mut buf[n..]) {
                    Ok(0) => return Ok(n), // close_notify: the end, after what came before
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return if n > 0 { Ok(n) } else { Err(e) },
                }
            }
            if n == buf.len() {
                return Ok(n);
            }
            match self.tls.read_tls(&mut self.sock) {
                Ok(_) => {} // at EOF the reader says so next: Ok(0) or UnexpectedEof
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => return Ok(n),
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.answer(); // the alert, if it fits
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            self.answer()?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_pending()?;
        let n = self.tls.writer().write(buf)?;
        self.answer()?;
        if n == 0 {
            // rustls's buffer is full before the handshake ended: wait for the socket.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_defaults_to_the_ip() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            server_name(None, ip).unwrap(),
            ServerName::IpAddress(ip.into())
        );
        let n = server_name(Some("chat.example"), ip).unwrap();
        assert_eq!(n, ServerName::try_from("chat.example").unwrap());
        assert!(server_name(Some("bad name!"), ip).is_err());
    }

    #[test]
    fn options_need_a_ca_and_a_whole_pair() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let e = TlsSetup::new(&TlsOptions::default(), ip).unwrap_err();
        assert!(e.contains("--ca"), "{e}");
        let o = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            cert: Some("c.pem".into()),
            ..TlsOptions::default()
        };
        let e = TlsSetup::new(&o, ip).unwrap_err();
        assert!(e.contains("--cert and --key"), "{e}");
        let o = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = TlsSetup::new(&o, ip).unwrap_err();
        assert!(e.contains("--ca"), "{e}");
    }

    #[test]
    fn plain_links_never_hold_pending_output() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut link = Link::new(s, None).unwrap();
        assert!(!link.wants_write());
        assert!(link.send_pending().is_ok());
        assert_eq!(link.write(b"hi\n").unwrap(), 3);
        assert!(link.describe().is_none());
    }

    #[test]
    fn flush_writes_from_the_position_while_the_socket_is_writable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let mut link = Link::new(s, None).unwrap();
        let (mut pos, mut writable) = (0, false);
        link.flush(b"hi\nthere\n", &mut pos, &mut writable).unwrap();
        assert_eq!(pos, 0, "nothing goes out until the socket is writable");
        (pos, writable) = (3, true);
        link.flush(b"hi\nthere\n", &mut pos, &mut writable).unwrap();
        assert_eq!(pos, 9);
        assert!(writable, "the socket took all of it");
        let mut got = [0; 6];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"there\n");
    }
}

//! A blocking line client over TLS for the tests, written with rustls directly.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use a_chat::tls;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::{ClientConnection, StreamOwned};

use super::{Pki, WAIT};

/// A line client over TLS, written with rustls directly (blocking).
pub struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects and completes the handshake, presenting `cert` (e.g. "client") if given.
    pub fn connect(addr: SocketAddr, pki: &Pki, cert: Option<&str>) -> std::io::Result<TlsClient> {
        TlsClient::connect_after(addr, pki, cert, b"")
    }

    /// Connects, sends `preamble` in the clear (a balancer's PROXY header), then completes
    /// the handshake as [`TlsClient::connect`] does.
    pub fn connect_after(
        addr: SocketAddr,
        pki: &Pki,
        cert: Option<&str>,
        preamble: &[u8],
    ) -> std::io::Result<TlsClient> {
        let paths = cert.map(|c| (pki.path(&format!("{c}.pem")), pki.path(&format!("{c}.key"))));
        let config = tls::client_config(
            Some(std::path::Path::new(&pki.path("ca.pem"))),
            paths.as_ref().map(|(c, k)| (c.as_ref(), k.as_ref())),
        )
        .expect("client config");
        let name = "127.0.0.1".try_into().unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
        let mut sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(WAIT))?;
        sock.write_all(preamble)?;
        let mut stream = StreamOwned::new(conn, sock);
        stream.conn.complete_io(&mut stream.sock)?;
        Ok(TlsClient {
            stream: BufReader::new(stream),
        })
    }

    pub fn send(&mut self, line: &str) {
        self.try_send(line).expect("send");
    }

    pub fn try_send(&mut self, line: &str) -> std::io::Result<()> {
        let s = self.stream.get_mut();
        s.write_all(format!("{line}\n").as_bytes())?;
        s.flush()
    }

    /// The next line; `None` at the end of the stream or on an error.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stream.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
        }
    }

    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line().as_deref(), Some(want));
    }

    pub fn login(addr: SocketAddr, pki: &Pki, name: &str) -> TlsClient {
        let mut c = TlsClient::connect(addr, pki, None).expect("TLS connect");
        c.send(name);
        c.send(&format!("{name}: ready?"));
        c.expect(&format!("from {name}: ready?"));
        c
    }
}

impl TlsClient {
    /// The certificate the server presented in the handshake (DER).
    pub fn server_certificate(&self) -> CertificateDer<'static> {
        self.stream
            .get_ref()
            .conn
            .peer_certificates()
            .expect("a server certificate")[0]
            .clone()
            .into_owned()
    }
}

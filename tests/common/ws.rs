//! A blocking WebSocket client for the tests (tungstenite over a std socket, plain or TLS),
//! and the address of a daemon's WebSocket listener.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use a_chat::tls;
use futures_rustls::rustls::{ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::{Daemon, Pki, WAIT};

/// A WebSocket chat client: one text frame per line each way.
pub struct WsClient<S: Read + Write = TcpStream> {
    pub ws: WebSocket<S>,
}

/// What a request for a session was answered with, when it was not a session.
pub type Refusal = tungstenite::Error;

/// Opens a session at `ws://addr/`, sending `Origin: origin` if given.
pub fn try_connect(addr: SocketAddr, origin: Option<&str>) -> Result<WsClient, Refusal> {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let (ws, _) = tungstenite::client(request, sock).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("handshake interrupted"),
    })?;
    Ok(WsClient { ws })
}

impl WsClient {
    pub fn connect(addr: SocketAddr) -> WsClient {
        try_connect(addr, None).expect("WebSocket session")
    }

    /// Connects and logs in as `name`; the login is confirmed by a line sent to itself.
    pub fn login(addr: SocketAddr, name: &str) -> WsClient {
        let mut client = WsClient::connect(addr);
        client.send(name);
        client.send(&format!("{name}: ready"));
        client.expect(&format!("from {name}: ready"));
        client
    }
}

/// Opens a session at `wss://addr/`, trusting the test CA.
pub fn connect_tls(addr: SocketAddr, pki: &Pki) -> WssClient {
    connect_tls_as(addr, pki, None)
}

/// A WebSocket session over TLS.
pub type WssClient = WsClient<StreamOwned<ClientConnection, TcpStream>>;

/// Opens a session at `wss://addr/`, presenting the test PKI's certificate `cert` if given.
pub fn connect_tls_as(addr: SocketAddr, pki: &Pki, cert: Option<&str>) -> WssClient {
    let ca = pki.path("ca.pem");
    let paths = cert.map(|c| (pki.path(&format!("{c}.pem")), pki.path(&format!("{c}.key"))));
    let pair = (paths.as_ref()).map(|(c, k)| (std::path::Path::new(c), std::path::Path::new(k)));
    let config = tls::client_config(Some(std::path::Path::new(&ca)), pair).expect("client config");
    let name = "127.0.0.1".try_into().unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let stream = StreamOwned::new(conn, sock);
    let request = format!("wss://{addr}/").into_client_request().unwrap();
    let (ws, _) = tungstenite::client(request, stream).expect("wss session");
    WsClient { ws }
}

impl WssClient {
    /// The certificate the server presented.
    pub fn server_certificate(&self) -> Vec<u8> {
        let certs = self
            .ws
            .get_ref()
            .conn
            .peer_certificates()
            .expect("certificates");
        certs[0].as_ref().to_vec()
    }
}

impl<S: Read + Write> WsClient<S> {
    pub fn send(&mut self, line: &str) {
        self.ws.send(Message::text(line)).expect("send a frame");
    }

    /// Sends any message (binary, ping, a text with a newline...).
    pub fn send_message(&mut self, message: Message) -> tungstenite::Result<()> {
        self.ws.send(message)
    }

    /// The next text frame; `None` once the session or the socket closed (or WAIT passed).
    pub fn line(&mut self) -> Option<String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Some(text.to_string()),
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got.as_deref(), Some(want), "expected {want:?}");
    }

    /// Reads until the server's close frame: its code and reason, and the text frames before.
    pub fn close_frame(&mut self) -> (Option<(CloseCode, String)>, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => lines.push(text.to_string()),
                Ok(Message::Close(frame)) => {
                    return (frame.map(|f| (f.code, f.reason.to_string())), lines)
                }
                Ok(_) => continue,
                Err(_) => return (None, lines),
            }
        }
    }
}

impl Daemon {
    /// The address of the WebSocket listener (`tls`: the one over TLS), from its
    /// `listening on ADDR (websocket...)` log line.
    pub fn ws_addr(&mut self, tls: bool) -> SocketAddr {
        let kind = if tls {
            "(websocket tls)"
        } else {
            "(websocket)"
        };
        let line = self
            .wait_log(|l| l.contains("listening on ") && l.contains(kind))
            .unwrap_or_else(|| panic!("no WebSocket listener; log:\n{}", self.log_text()));
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }
}

/// The raw bytes of an HTTP exchange (one request, read until the server closes).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

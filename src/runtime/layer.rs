//! What a connection's bytes pass through above its TCP socket: a TLS session, or a
//! WebSocket session (over the socket or over TLS). One type, so that the reader and the
//! writer call the same four operations whatever the listener was.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

use super::sock::Sock;
use crate::transport::Session;

/// The layer over a connection's socket; a plain connection has none.
///
/// Kept in one allocation per connection (`Conn`'s `Arc<Mutex<Layer>>`): boxing the TLS
/// session as well would cost every TLS connection a second one.
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    Tls(TlsServerStream),
    /// Boxed as the upgrade made it.
    WebSocket(Box<Session<Carrier>>),
}

/// The stream under a WebSocket session.
pub enum Carrier {
    Tcp(Sock),
    Tls(Box<TlsServerStream>),
}

impl Layer {
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Layer::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
            Layer::WebSocket(ws) => ws.poll_read(cx, buf),
        }
    }

    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Layer::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
            Layer::WebSocket(ws) => ws.poll_write(cx, buf),
        }
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Layer::Tls(tls) => Pin::new(tls).poll_flush(cx),
            Layer::WebSocket(ws) => ws.poll_flush(cx),
        }
    }

    /// Queues the layer's goodbye (a close frame, then TLS's close_notify) and sends what
    /// the socket takes at once.
    pub fn close_write(&mut self) {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        if let Layer::WebSocket(ws) = self {
            use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
            ws.start_close(CloseCode::Normal, "");
            let _ = ws.poll_flush(&mut cx);
        }
        if let Some(tls) = self.tls() {
            tls.close_notify();
        }
    }

    /// Stops the reads of a WebSocket session, which must not see its socket's reading
    /// side shut (tungstenite would take it for the end of the session and send nothing
    /// more); false for TLS, whose socket is shut as a plain one.
    pub fn stop_reading(&mut self) -> bool {
        match self {
            Layer::WebSocket(ws) => {
                ws.stop_reading();
                true
            }
            Layer::Tls(_) => false,
        }
    }

    /// The TLS session, directly under the chat or under a WebSocket session.
    pub fn tls(&mut self) -> Option<&mut TlsServerStream> {
        match self {
            Layer::Tls(tls) => Some(tls),
            Layer::WebSocket(ws) => match ws.carrier_mut() {
                Carrier::Tls(tls) => Some(tls),
                Carrier::Tcp(_) => None,
            },
        }
    }
}

impl AsyncRead for Carrier {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Carrier::Tcp(sock) => Pin::new(sock).poll_read(cx, buf),
            Carrier::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Carrier {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Carrier::Tcp(sock) => Pin::new(sock).poll_write(cx, buf),
            Carrier::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Carrier::Tcp(sock) => Pin::new(sock).poll_flush(cx),
            Carrier::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Carrier::Tcp(sock) => Pin::new(sock).poll_close(cx),
            Carrier::Tls(tls) => Pin::new(&mut **tls).poll_close(cx),
        }
    }
}

pub use super::tls_stream::TlsServerStream;

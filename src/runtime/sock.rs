//! The TCP socket under a TLS or WebSocket session ([`Sock`]), and a look at what has
//! arrived on a socket without taking it ([`peek`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// The TCP socket under a TLS or WebSocket session, which reads and writes through it.
pub struct Sock(pub(super) Arc<async_io::Async<std::net::TcpStream>>);

impl Sock {
    /// Writes as much of `buf` as the socket takes now: how much that was (0 when it is
    /// full). Never waits, and leaves the socket's writing slot (the writer's waker) as
    /// it was, so that any half of a connection may call it.
    pub(super) fn write_now(&self, mut buf: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        let whole = buf.len();
        while !buf.is_empty() {
            match self.0.get_ref().write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(whole - buf.len())
    }

    /// Copies what has arrived into `buf` without taking it from the socket, waiting until
    /// something has (0: the client closed).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        peek(&self.0, buf).await
    }
}

/// Copies what has arrived on `sock` into `buf` without taking it, waiting until something
/// has. Waits in the socket's one reading slot (`poll_readable`) rather than through
/// async-io's own `peek`, whose wait list allocates a slab of wakers that the connection
/// keeps for its whole life (see [`super::Conn::readable`]).
pub(super) async fn peek(
    sock: &async_io::Async<std::net::TcpStream>,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match sock.get_ref().peek(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => return done,
        }
        futures::future::poll_fn(|cx| sock.poll_readable(cx)).await?;
    }
}

impl AsyncRead for Sock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

//! An accepted chat connection's socket (`Conn`), shared by its reader, its writer and its
//! queue.

use std::io::{self, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWriteExt};

use super::layer::{Carrier, Layer, TlsServerStream};
use super::sock::Sock;
use super::TcpStream;

/// Has the kernel end a connection whose peer vanished without a FIN or a reset (a dropped
/// Wi-Fi, a NAT that forgot it) within about `within`, so that its login is freed: TCP
/// keepalive probes after `within / 2` of silence, one every `within / 8`, and
/// `TCP_USER_TIMEOUT` of `within`, which ends the connection once that long has passed
/// without an acknowledgement (of data or of a probe). The probes are the kernel's: an idle
/// client that is alive costs one small packet each way per probe, and a-chat's tasks never
/// wake for them. The reader then sees ETIMEDOUT. Zero turns all of it off.
fn set_dead_peer_timeout(stream: &std::net::TcpStream, within: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if within.is_zero() {
        return Ok(());
    }
    let secs = |d: Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(within / 2)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(within / 8)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4),
        (
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            within.as_millis().min(i32::MAX as u128) as libc::c_int,
        ),
    ];
    for (level, name, value) in options {
        // SAFETY: a valid descriptor, and a pointer to a c_int with its size.
        let r = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An accepted chat connection's socket, shared by its reader, its writer and its queue:
/// plain, or TLS after a handshake (see [`Conn::into_tls`]), or a WebSocket session (see
/// [`Conn::into_websocket`]).
///
/// It sits directly on the reactor that async-std itself runs on (async-io), which also
/// offers a readiness wait: a reader that has just emptied a plain socket waits for the
/// next readiness event instead of paying a `read` that can only say "would block".
#[derive(Clone)]
pub struct Conn {
    /// The TCP socket, for plain reads and writes and for shutting it down.
    sock: Arc<async_io::Async<std::net::TcpStream>>,
    /// The TLS or WebSocket session over `sock`. Reader and writer share it: each call
    /// locks it for one poll and never across a wait. `None` on a plain listener, which
    /// pays one pointer for it and nothing else.
    layer: Option<Arc<Mutex<Layer>>>,
}

impl Conn {
    /// Takes over a socket from the listener and turns off Nagle's algorithm (the
    /// writer batches by itself). Fails if the client is already gone.
    pub fn from_accepted(stream: TcpStream, dead_peer: Duration) -> io::Result<Conn> {
        let stream = std::net::TcpStream::try_from(stream)?;
        stream.set_nodelay(true)?;
        set_dead_peer_timeout(&stream, dead_peer)?;
        Ok(Conn {
            sock: Arc::new(async_io::Async::new(stream)?),
            layer: None,
        })
    }

    /// The socket, for a TLS handshake over it.
    pub fn sock(&self) -> Sock {
        Sock(self.sock.clone())
    }

    /// The client's certificate (the first of its chain), on a TLS connection that
    /// presented one.
    pub fn peer_certificate(&self) -> Option<rustls_pki_types::CertificateDer<'static>> {
        let mut layer = lock(self.layer.as_ref()?);
        let first = layer.tls()?.peer_certificates()?.first()?;
        Some(first.clone().into_owned())
    }

    /// The same connection, reading and writing through the TLS session `stream` (made
    /// by a handshake over [`Conn::sock`]).
    pub fn into_tls(self, stream: TlsServerStream) -> Conn {
        self.into_layer(Layer::Tls(stream))
    }

    /// The same connection, reading and writing lines through the WebSocket session
    /// `session` (made by an upgrade over [`Conn::sock`] or a TLS session over it).
    pub fn into_websocket(self, session: Box<crate::transport::Session<Carrier>>) -> Conn {
        self.into_layer(Layer::WebSocket(session))
    }

    fn into_layer(self, layer: Layer) -> Conn {
        Conn {
            sock: self.sock,
            layer: Some(Arc::new(Mutex::new(layer))),
        }
    }

    /// True for a TLS or WebSocket connection: its reads may find data that its session
    /// already holds, so a readiness wait on the socket would be wrong.
    pub fn is_buffered(&self) -> bool {
        self.layer.is_some()
    }

    /// Copies what has arrived into `buf` without taking it from the socket, waiting until
    /// something has (0: the client closed). For a PROXY header, which comes before any TLS.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        super::sock::peek(&self.sock, buf).await
    }

    /// Resolves once the peer has closed (or reset) its side; stays pending for good once
    /// it has sent anything, which is left in the socket for a later read.
    pub async fn closed(&self) {
        let mut byte = [0u8; 1];
        if let Ok(1..) = super::sock::peek(&self.sock, &mut byte).await {
            futures::future::pending::<()>().await;
        }
    }

    /// Resolves once the socket has new data (or an end, or an error) to read.
    ///
    /// Waits in the socket's one reading slot (`poll_readable`, the slot its reads use),
    /// not through async-io's `readable()`, whose wait list allocates and keeps a slab of
    /// wakers in every connection that ever waited (96 B of each idle connection). Only
    /// the connection's reader waits to read, so one slot is enough.
    pub async fn readable(&self) -> io::Result<()> {
        futures::future::poll_fn(|cx| self.sock.poll_readable(cx)).await
    }

    /// Reads what is there into `buf`, or registers the task to be woken when there is.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &self.layer {
            None => Pin::new(&mut &*self.sock).poll_read(cx, buf),
            Some(layer) => lock(layer).poll_read(cx, buf),
        }
    }

    /// Reads what is there, waiting only when nothing is.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        futures::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Reads what the kernel (or the TLS session) already holds, without waiting: `Ok(0)`
    /// when nothing is there.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.layer.is_some() {
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            return match self.poll_read(&mut cx, buf) {
                Poll::Ready(result) => result,
                Poll::Pending => Ok(0),
            };
        }
        match self.sock.get_ref().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    /// Writes what the socket takes at once, without waiting: how many bytes of `buf`
    /// were taken, and whether they are all on their way (on a TLS connection, also
    /// flushed out of the session). When not, [`Conn::write_all`] of the rest (empty on
    /// a TLS connection whose records wait to be flushed) finishes the write.
    pub fn write_now(&self, buf: &[u8]) -> io::Result<(usize, bool)> {
        let Some(layer) = &self.layer else {
            return match io::Write::write(&mut self.sock.get_ref(), buf) {
                Ok(n) => Ok((n, n == buf.len())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((0, buf.is_empty())),
                Err(e) => Err(e),
            };
        };
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut stream = lock(layer);
        let mut taken = 0;
        while taken < buf.len() {
            match stream.poll_write(&mut cx, &buf[taken..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => taken += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok((taken, false)),
            }
        }
        match stream.poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => Ok((taken, true)),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok((taken, false)),
        }
    }

    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let Some(layer) = &self.layer else {
            return (&*self.sock).write_all(buf).await;
        };
        let mut written = 0;
        while written < buf.len() {
            let n =
                futures::future::poll_fn(|cx| lock(layer).poll_write(cx, &buf[written..])).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written += n;
        }
        futures::future::poll_fn(|cx| lock(layer).poll_flush(cx)).await
    }

    /// Shuts the socket down. Shutting down the writing side first queues the session's
    /// goodbye (a WebSocket close frame, TLS's close_notify), sent if the socket takes it
    /// at once. A WebSocket session's reading side is ended in the session, not in the
    /// socket (see `Layer::stop_reading`): whoever stops it wakes the reader.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match (&self.layer, how) {
            (Some(layer), Shutdown::Write) => lock(layer).close_write(),
            (Some(layer), Shutdown::Read) if lock(layer).stop_reading() => return Ok(()),
            _ => {}
        }
        self.sock.get_ref().shutdown(how)
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poll of the TLS session never panics halfway in a way that matters here; if one
    // ever did, the connection would fail on its next read or write.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

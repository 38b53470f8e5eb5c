//! The server side of a TLS connection over its socket ([`TlsServerStream`]), made by
//! [`accept`]: a-chat's own small layer over rustls's unbuffered API, so that an idle TLS
//! connection keeps no buffer.
//!
//! rustls's buffered connection keeps a 4 KiB record buffer (and two queues) for the
//! connection's whole life. Here records are read into, and sealed in, a buffer of the
//! thread; a connection keeps bytes only while a record is incomplete, while plaintext
//! waits for its reader, or while the socket does not take what was sealed, and gives
//! the memory back once that is over. The record work itself is in `tls_records.rs`.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use futures_rustls::rustls::unbuffered::WriteTraffic;
use futures_rustls::rustls::ServerConfig;
use rustls_pki_types::CertificateDer;

use super::sock::Sock;
use super::tls_records::{self, advance, sealed_len, Advanced, OnTraffic, Pending, Stage};

/// Ciphertext asked of the socket per read, as rustls's own buffered connection asks. It
/// bounds the work of one turn of the reader: a client that sends a record per byte of
/// plaintext gets about 190 records opened per turn, not a whole 16 KiB record's worth
/// of them (750), while the other connections on the thread wait.
const READ_SIZE: usize = 4096;

/// Plaintext sealed per write: one record's worth.
const SEAL_SIZE: usize = 16 * 1024;

/// The most ciphertext kept waiting for the rest of a message: the largest handshake
/// message rustls takes (64 KiB) and a record of the largest size (16 KiB and its
/// overhead). rustls refuses longer ones itself; this bounds the buffer whatever it does.
const MAX_INCOMPLETE: usize = (64 + 17) * 1024;

/// Reads of the socket per poll that end with nothing for the reader: then the task
/// yields, so that a client sending records with no plaintext cannot hold the thread.
const FILLS_PER_POLL: usize = 4;

thread_local! {
    /// Where records are read and opened when no incomplete record waits: no connection
    /// keeps a buffer for its reads.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where records are sealed before the socket takes them: no connection keeps a
    /// buffer for its writes either.
    static SEAL_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An accepted TLS connection after its handshake: reads give the client's plaintext,
/// writes seal records and send them.
pub struct TlsServerStream {
    /// rustls's state for the session: where the handshake is, the keys, the sequence
    /// numbers. It keeps no buffers: they are the fields below.
    conn: UnbufferedServerConnection,
    /// The socket the records travel on.
    sock: Sock,
    /// Ciphertext of an incomplete record (or handshake message) in `incoming[..filled]`,
    /// kept for the next read to complete; the rest is zeroed room for that read. Empty,
    /// with no memory, between records.
    incoming: Vec<u8>,
    /// How much of `incoming` was received.
    filled: usize,
    /// Plaintext opened and not yet read.
    plain: Pending,
    /// Records sealed (or made by rustls: handshake, alerts) that the socket has not
    /// taken yet; they go out before anything sealed later.
    outgoing: Pending,
    /// Where the session is.
    stage: Stage,
    /// The client said goodbye (close_notify) or its stream ended between records: a read
    /// gives 0 once `plain` is empty.
    read_closed: bool,
    /// close_notify was queued: nothing more is sealed.
    write_closed: bool,
}

/// Runs the server side of a handshake on `sock` with `config`. Fails with the
/// `rustls::Error` inside the `io::Error` when TLS went wrong, with a plain one when the
/// socket did (the client left).
pub async fn accept(sock: Sock, config: Arc<ServerConfig>) -> io::Result<TlsServerStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut stream = TlsServerStream {
        conn,
        sock,
        incoming: Vec::new(),
        filled: 0,
        plain: Pending::default(),
        outgoing: Pending::default(),
        stage: Stage::Handshaking,
        read_closed: false,
        write_closed: false,
    };
    futures::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

fn invalid(e: futures_rustls::rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsServerStream {
    /// The client's certificate chain, when it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bounded like the reads: a client sending its handshake in tiny records yields.
        for _ in 0..FILLS_PER_POLL * 4 {
            ready!(self.poll_flush_records(cx))?;
            match self.stage {
                Stage::Traffic => return Poll::Ready(Ok(())),
                Stage::Closed => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Stage::Handshaking if self.read_closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                }
                Stage::Handshaking => ready!(self.poll_fill(cx))?,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads once from the socket and opens what came: Ready once something was read (or
    /// the stream ended), Pending when nothing has arrived.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.filled == 0 {
            return READ_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                let n = ready!(Pin::new(&mut &*self.sock.0).poll_read(cx, &mut buf[..READ_SIZE]))?;
                if n == 0 {
                    return Poll::Ready(self.ended());
                }
                let advanced = self.advance_over(&mut buf[..n]);
                let rest = &buf[advanced.used..n];
                if !rest.is_empty() {
                    self.incoming = rest.to_vec();
                    self.filled = rest.len();
                }
                Poll::Ready(self.after(advanced))
            });
        }
        if self.filled >= MAX_INCOMPLETE {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TLS message longer than a-chat takes",
            )));
        }
        // Zeroed once as the buffer grows, not per read: a client sending a record a byte
        // at a time costs a read and a look at the record's header per byte.
        if self.incoming.len() - self.filled < READ_SIZE / 4 {
            self.incoming.resize(self.filled + READ_SIZE, 0);
        }
        // At most a read's worth, however much room is left from a longer message.
        let end = self.incoming.len().min(self.filled + READ_SIZE);
        let room = &mut self.incoming[self.filled..end];
        let n = ready!(Pin::new(&mut &*self.sock.0).poll_read(cx, room))?;
        if n == 0 {
            return Poll::Ready(self.ended());
        }
        self.filled += n;
        Poll::Ready(self.advance_kept(None))
    }

    fn advance_over(&mut self, ciphertext: &mut [u8]) -> Advanced {
        advance(
            &mut self.conn,
            ciphertext,
            &mut self.plain,
            &mut self.outgoing,
            None,
        )
    }

    /// Runs rustls over the incomplete ciphertext kept in `incoming` (with what a read
    /// just added to it), calling `on_traffic` once application data may go.
    fn advance_kept(&mut self, on_traffic: Option<OnTraffic<'_>>) -> io::Result<()> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let advanced = advance(
            &mut self.conn,
            &mut incoming[..self.filled],
            &mut self.plain,
            &mut self.outgoing,
            on_traffic,
        );
        self.incoming = incoming;
        self.used_up(advanced.used);
        self.after(advanced)
    }

    /// Drops the first `used` bytes of the incomplete ciphertext, and its memory once
    /// none is left.
    fn used_up(&mut self, used: usize) {
        if used == 0 {
            return;
        }
        if used >= self.filled {
            self.incoming = Vec::new();
            self.filled = 0;
        } else {
            self.incoming.copy_within(used..self.filled, 0);
            self.filled -= used;
        }
    }

    /// Takes in what rustls said: where the session is, whether the client said goodbye.
    /// On an error, the alert about it goes out if the socket takes it at once.
    fn after(&mut self, advanced: Advanced) -> io::Result<()> {
        self.read_closed |= advanced.peer_closed;
        match advanced.stage {
            Ok(stage) => {
                self.stage = stage;
                if stage == Stage::Closed {
                    self.read_closed = true;
                    self.write_closed = true;
                }
                Ok(())
            }
            Err(e) => {
                // rustls is not asked anything more: it would look at what failed again.
                self.stage = Stage::Closed;
                self.read_closed = true;
                self.write_closed = true;
                let _ = self.send_now();
                Err(invalid(e))
            }
        }
    }

    /// The client's stream ended: between records, a goodbye without close_notify (many
    /// clients just close); inside one, an error.
    fn ended(&mut self) -> io::Result<()> {
        self.read_closed = true;
        if self.filled > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client's stream ended inside a TLS record",
            ));
        }
        Ok(())
    }

    /// Sends what waits in `outgoing` as far as the socket takes it now, without waiting
    /// and without touching the socket's writing slot (the writer's).
    fn send_now(&mut self) -> io::Result<()> {
        let sent = self.sock.write_now(self.outgoing.waiting())?;
        self.outgoing.take(sent);
        Ok(())
    }

    /// Seals `plaintext` (one record's worth at most) and sends the records as far as
    /// the socket takes them now; the rest waits in `outgoing`.
    fn seal(&mut self, plaintext: &[u8]) -> io::Result<()> {
        SEAL_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut room = sealed_len(plaintext.len());
            // A second try only when the records needed more room than the estimate:
            // rustls then says how much, and keeps what it queued for the next call.
            for _ in 0..2 {
                if buf.len() < room {
                    buf.resize(room, 0);
                }
                let mut sealed = None;
                let mut on_traffic = |traffic: &mut WriteTraffic<'_, ServerConnectionData>| {
                    sealed = Some(tls_records::encrypt(traffic, plaintext, &mut buf[..room]));
                };
                self.advance_kept(Some(&mut on_traffic))?;
                let len = match sealed {
                    Some(Ok(len)) => len,
                    Some(Err(Ok(needed))) => {
                        room = needed;
                        continue;
                    }
                    Some(Err(Err(e))) => return Err(invalid(e)),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "TLS session closed",
                        ))
                    }
                };
                return self.send_records(&buf[..len]);
            }
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS records larger than rustls said they would be",
            ))
        })
    }

    /// Sends records just sealed, after any that wait, as far as the socket takes them
    /// now; the rest waits in `outgoing`.
    fn send_records(&mut self, records: &[u8]) -> io::Result<()> {
        if self.outgoing.is_empty() {
            let sent = self.sock.write_now(records)?;
            self.outgoing.push(&records[sent..]);
            Ok(())
        } else {
            self.outgoing.push(records);
            self.send_now()
        }
    }

    /// Queues close_notify (once, after the handshake) and sends what the socket takes
    /// now.
    pub fn close_notify(&mut self) {
        if self.write_closed {
            return;
        }
        self.write_closed = true;
        if self.stage == Stage::Traffic {
            let mut alert = [0u8; 64];
            let mut len = 0;
            let mut on_traffic = |traffic: &mut WriteTraffic<'_, ServerConnectionData>| {
                len = tls_records::close_notify(traffic, &mut alert)
            };
            let _ = self.advance_kept(Some(&mut on_traffic));
            self.outgoing.push(&alert[..len]);
        }
        let _ = self.send_now();
    }
}

impl AsyncRead for TlsServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        for _ in 0..FILLS_PER_POLL {
            if !this.plain.is_empty() {
                let waiting = this.plain.waiting();
                let n = waiting.len().min(buf.len());
                buf[..n].copy_from_slice(&waiting[..n]);
                this.plain.take(n);
                return Poll::Ready(Ok(n));
            }
            if this.read_closed {
                return Poll::Ready(Ok(0));
            }
            ready!(this.poll_fill(cx))?;
            // What rustls made of it (an alert, a key update) goes out now if it can;
            // else with the writer's next flush. A failed send is the writer's to see.
            let _ = this.send_now();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl AsyncWrite for TlsServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // What waits goes first: at most one write's records wait at a time.
        ready!(this.poll_flush_records(cx))?;
        let n = buf.len().min(SEAL_SIZE);
        this.seal(&buf[..n])?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_records(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.close_notify();
        ready!(this.poll_flush_records(cx))?;
        match this.sock.0.get_ref().shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl TlsServerStream {
    /// Sends what waits in `outgoing`, waiting in the socket's writing slot when it is
    /// full.
    fn poll_flush_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut &*self.sock.0).poll_write(cx, self.outgoing.waiting()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.take(n);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[path = "tls_stream_tests.rs"]
mod tests;

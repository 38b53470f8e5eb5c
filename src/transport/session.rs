//! A WebSocket session as the byte stream that the reader and the writer already speak
//! (ARCHITECTURE §14): each text frame a client sends is one protocol line (its `\n` is
//! added here), and each line a-chat writes leaves as one text frame.
//!
//! What a line cannot carry ends the session with a close frame that says why (binary
//! frames, a frame or message over `max_line_bytes`, a newline inside a frame, text that
//! is not UTF-8, a frame that breaks RFC 6455), and reaches the reader as an error that
//! names it ([`Refused`]), so that the connection's close line and metrics say so too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::io::{AsyncRead, AsyncWrite};
use futures::{Sink, Stream};

use crate::metrics::WsRefusal;

/// Frames taken in one read at most before the reader lets other connections run: a
/// client sending pings (or empty frames) at full speed gets one turn's worth at a time.
const FRAMES_PER_READ: usize = 64;

/// What tungstenite reads from the socket at once. Allocated for the life of the session,
/// so kept small: browsers send lines one at a time.
const READ_BUFFER: usize = 4096;

/// Frames are written to the socket once this much is buffered (and at every flush, which
/// ends each of the writer's batches). Also what the session keeps after a burst.
const WRITE_BUFFER: usize = 4096;

/// Why a session was closed for what its client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub struct Refused(pub WsRefusal);

impl Refused {
    /// The close frame's status code (RFC 6455 §7.4.1).
    fn code(self) -> CloseCode {
        match self.0 {
            WsRefusal::Binary => CloseCode::Unsupported,
            WsRefusal::TooBig => CloseCode::Size,
            WsRefusal::Newline | WsRefusal::InvalidUtf8 => CloseCode::Invalid,
            WsRefusal::Protocol => CloseCode::Protocol,
        }
    }

    /// The close frame's reason, for the person who reads it in a browser's console.
    pub fn reason(self) -> &'static str {
        match self.0 {
            WsRefusal::Binary => "binary frames are not accepted: send each line as a text frame",
            WsRefusal::TooBig => "line too long: a message may be at most max_line_bytes",
            WsRefusal::Newline => "a text frame carries one line: no newline inside it",
            WsRefusal::InvalidUtf8 => "invalid utf-8",
            WsRefusal::Protocol => "not a valid WebSocket frame",
        }
    }

    /// The refusal an I/O error from [`Session`] carries, if it is one.
    pub fn of(e: &io::Error) -> Option<Refused> {
        e.get_ref()?.downcast_ref::<Refused>().copied()
    }
}

/// The framing settings of a session whose lines are at most `max_line_bytes`.
pub fn config(max_line_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for one batch of the writer past the buffer: the writer waits for the
        // socket before it hands over more (see `poll_write`).
        .max_write_buffer_size(WRITE_BUFFER + (1 << 20))
        .max_message_size(Some(max_line_bytes))
        .max_frame_size(Some(max_line_bytes))
}

/// A WebSocket session over `S` (a TCP socket or a TLS session), read and written as
/// lines.
pub struct Session<S> {
    /// The framing (tungstenite), which also answers pings and the client's close.
    ws: WebSocketStream<S>,
    /// A line received that did not fit the reader's buffer, with its `\n`, and how much
    /// of it has been read since. Empty nearly always.
    incoming: Vec<u8>,
    taken: usize,
    /// a-chat stopped reading (a kick, lame duck): reads end until the session closes.
    /// The socket's reading side stays open, so that tungstenite can still send the last
    /// lines and its close frame, and read the client's answer to it.
    stopped: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(ws: WebSocketStream<S>) -> Session<S> {
        Session {
            ws,
            incoming: Vec::new(),
            taken: 0,
            stopped: false,
        }
    }

    /// The stream under the framing.
    pub fn carrier(&self) -> &S {
        self.ws.get_ref()
    }

    pub fn carrier_mut(&mut self) -> &mut S {
        self.ws.get_mut()
    }

    /// Reads the lines that have arrived into `buf` (each text frame's text and a `\n`),
    /// as many whole ones as fit; waits only when none has. `Ok(0)`: the client closed.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.stopped {
            return Poll::Ready(Ok(0));
        }
        if self.taken < self.incoming.len() {
            let n = (self.incoming.len() - self.taken).min(buf.len());
            buf[..n].copy_from_slice(&self.incoming[self.taken..self.taken + n]);
            self.taken += n;
            if self.taken == self.incoming.len() {
                self.incoming = Vec::new();
                self.taken = 0;
            }
            return Poll::Ready(Ok(n));
        }
        let mut filled = 0;
        for _ in 0..FRAMES_PER_READ {
            let next = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending if filled > 0 => return Poll::Ready(Ok(filled)),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            let text = match next {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(filled)),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => return self.refuse(cx, WsRefusal::Binary),
                Some(Ok(_)) => continue, // pings (answered by tungstenite), pongs
                // The client (or an operator's kick, which shuts the reading side) ended
                // the stream without a close frame: the end of input, not bad input.
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    return Poll::Ready(Ok(filled))
                }
                Some(Err(e)) => {
                    return match refusal_of(&e) {
                        Some(why) => self.refuse(cx, why),
                        None if filled > 0 => Poll::Ready(Ok(filled)),
                        None => Poll::Ready(Err(into_io(e))),
                    }
                }
            };
            let line = text.as_bytes();
            if memchr::memchr(b'\n', line).is_some() {
                return self.refuse(cx, WsRefusal::Newline);
            }
            let room = &mut buf[filled..];
            if line.len() < room.len() {
                room[..line.len()].copy_from_slice(line);
                room[line.len()] = b'\n';
                filled += line.len() + 1;
                continue;
            }
            // It does not fit: what does goes now, the rest at the next read.
            let mut whole = Vec::with_capacity(line.len() + 1);
            whole.extend_from_slice(line);
            whole.push(b'\n');
            let n = room.len();
            room.copy_from_slice(&whole[..n]);
            self.incoming = whole;
            self.taken = n;
            return Poll::Ready(Ok(filled + n));
        }
        if filled > 0 {
            return Poll::Ready(Ok(filled));
        }
        // More frames wait: the reader comes back after the others have had a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Sends a close frame that says why (if the socket takes it now) and ends the read
    /// with an error that carries the same refusal.
    fn refuse(&mut self, cx: &mut Context<'_>, why: WsRefusal) -> Poll<io::Result<usize>> {
        let refused = Refused(why);
        self.start_close(refused.code(), refused.reason());
        let _ = Pin::new(&mut self.ws).poll_flush(cx);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refused)))
    }

    /// Ends the reads until the session closes (see `stopped`).
    pub fn stop_reading(&mut self) {
        self.stopped = true;
    }

    /// Queues a close frame; sent by the next flush. Reads go on after it, until the
    /// client's answer (a-chat's linger).
    pub fn start_close(&mut self, code: CloseCode, reason: &'static str) {
        self.stopped = false;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame)));
    }

    /// Takes whole lines of `buf` as text frames, as many as the session has room for;
    /// waits only when it has room for none. A-chat writes whole lines; a tail without
    /// its `\n` is taken as a line of its own.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut taken = 0;
        while taken < buf.len() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Pending if taken > 0 => break,
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(into_io(e))),
                Poll::Ready(Ok(())) => {}
            }
            let rest = &buf[taken..];
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let text = String::from_utf8_lossy(&rest[..end]).into_owned();
            if let Err(e) = Pin::new(&mut self.ws).start_send(Message::text(text)) {
                return Poll::Ready(Err(into_io(e)));
            }
            taken += (end + 1).min(rest.len());
        }
        Poll::Ready(Ok(taken))
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(into_io)
    }
}

/// The refusal a framing error stands for; `None` for the socket's own errors and ends.
fn refusal_of(e: &WsError) -> Option<WsRefusal> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(WsRefusal::TooBig),
        WsError::Capacity(_) => Some(WsRefusal::TooBig),
        WsError::Utf8(_) => Some(WsRefusal::InvalidUtf8),
        WsError::Protocol(_) | WsError::AttackAttempt => Some(WsRefusal::Protocol),
        _ => None,
    }
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

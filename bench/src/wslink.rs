//! `--transport ws`: the bench's lines over a WebSocket session (RFC 6455, client side) on
//! a non-blocking socket, for the same edge-triggered epoll loops as plain TCP and TLS.
//!
//! Lines written become masked text frames (one per line) in an output buffer that the
//! socket drains; frames read become their text and a `\n`. As for TLS,
//! [`WsLink::read`] returns a short count only once the socket said `EAGAIN` (or at the
//! end) and every decoded byte has been handed out, and bytes the socket could not take
//! wait ([`WsLink::wants_write`]) for the next EPOLLOUT. The upgrade request goes out
//! first; frames written before the 101 answer wait for it (RFC 6455 §4.1: a client
//! sends no frame before the server's answer), which is read and checked.
//!
//! In `binary` mode (NATS, whose protocol is a byte stream over WebSocket), each write is
//! one binary frame as it is, and frames read are handed out as they are.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// The key of every upgrade request (the RFC's example): the bench checks the answer's
/// `Sec-WebSocket-Accept` against it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

pub struct WsLink {
    pub(super) sock: TcpStream,
    /// Frames (and first the upgrade request) not yet taken by the socket.
    out: Vec<u8>,
    /// Frames written before the 101 answer arrived: they go out once it has.
    held: Vec<u8>,
    out_pos: usize,
    /// The start of a line written without its `\n` yet.
    partial: Vec<u8>,
    /// Bytes read and not yet decoded (a frame cut by a read).
    raw: Vec<u8>,
    /// Decoded lines not yet handed out.
    lines: Vec<u8>,
    lines_pos: usize,
    /// The 101 answer has been read.
    upgraded: bool,
    /// The server's close frame arrived: the end of the stream after `lines`.
    closed: bool,
    /// The mask of the next frame (any value will do; it changes per frame).
    mask: u32,
    /// Bytes, not lines: one binary frame per write, frames read as they are.
    binary: bool,
}

impl WsLink {
    /// Queues the upgrade request to `host` (sent by the first write or flush).
    pub fn new(sock: TcpStream, host: &str, binary: bool) -> WsLink {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        WsLink {
            sock,
            out: request.into_bytes(),
            held: Vec::new(),
            out_pos: 0,
            partial: Vec::new(),
            raw: Vec::new(),
            lines: Vec::new(),
            lines_pos: 0,
            upgraded: false,
            closed: false,
            mask: 0x9e37_79b9,
            binary,
        }
    }

    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Writes the waiting bytes; `WouldBlock` if the socket fills first.
    pub fn send_pending(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match (&self.sock).write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Takes all of `buf` (each whole line a frame), then writes what the socket takes.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.binary {
            self.frame(0x2, buf);
            return match self.send_pending() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                _ => Ok(buf.len()),
            };
        }
        let mut rest = buf;
        while let Some(end) = memchr_nl(rest) {
            if self.partial.is_empty() {
                self.frame(0x1, &rest[..end]);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..end]);
                self.frame(0x1, &line);
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        match self.send_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(buf.len()),
        }
    }

    /// Appends one masked frame of `opcode` (1 text, 2 binary) carrying `line`.
    fn frame(&mut self, opcode: u8, line: &[u8]) {
        self.mask = self.mask.rotate_left(5) ^ 0x5bd1_e995;
        let mask = self.mask.to_be_bytes();
        let out = if self.upgraded {
            &mut self.out
        } else {
            &mut self.held
        };
        out.push(0x80 | opcode);
        match line.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(line.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }

    /// Reads lines (see the module's comment).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        loop {
            let ready = &self.lines[self.lines_pos..];
            let k = ready.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&ready[..k]);
            (n, self.lines_pos) = (n + k, self.lines_pos + k);
            if n == buf.len() || (self.closed && self.lines_pos == self.lines.len()) {
                return Ok(n);
            }
            self.lines.clear();
            self.lines_pos = 0;
            let at = self.raw.len();
            self.raw.resize(at + READ_CHUNK, 0);
            let got = (&self.sock).read(&mut self.raw[at..]);
            self.raw.truncate(at + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Ok(n),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => return Ok(n),
                Err(e) => return Err(e),
            }
            self.decode()?;
        }
    }

    /// Moves the whole frames of `raw` (after the 101 answer) into `lines`.
    fn decode(&mut self) -> io::Result<()> {
        let mut at = 0;
        if !self.upgraded {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]);
            if !head.starts_with("HTTP/1.1 101") || !head.contains(ACCEPT) {
                let first = head.lines().next().unwrap_or_default().to_owned();
                return Err(io::Error::other(format!(
                    "the upgrade was refused: {first}"
                )));
            }
            self.upgraded = true;
            at = end + 4;
            let held = std::mem::take(&mut self.held);
            self.out.extend_from_slice(&held);
            match self.send_pending() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
        while let Some((opcode, start, len)) = header(&self.raw[at..]) {
            let payload = &self.raw[at + start..at + start + len];
            match opcode {
                0x1 | 0x2 if self.binary => self.lines.extend_from_slice(payload),
                0x1 => {
                    self.lines.extend_from_slice(payload);
                    self.lines.push(b'\n');
                }
                0x8 => self.closed = true,
                _ => {} // pongs; the server sends no pings
            }
            at += start + len;
        }
        self.raw.drain(..at);
        Ok(())
    }
}

/// A whole server frame at the start of `raw` (unmasked, unfragmented, as a-chat sends
/// them): its opcode, where its payload starts and how long it is.
fn header(raw: &[u8]) -> Option<(u8, usize, usize)> {
    let (first, second) = (*raw.first()?, *raw.get(1)?);
    let (len, start) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(raw.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    (raw.len() >= start + len).then_some((first & 0x0f, start, len))
}

fn memchr_nl(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_are_decoded_whole_and_only_whole() {
        assert_eq!(header(&[0x81, 2, b'h', b'i']), Some((1, 2, 2)));
        assert_eq!(header(&[0x81, 2, b'h']), None);
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(vec![b'x'; 256]);
        assert_eq!(header(&long), Some((1, 4, 256)));
        assert_eq!(header(&long[..100]), None);
    }
}

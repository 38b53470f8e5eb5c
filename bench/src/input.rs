//! What comes in on a connection, for the worker and burst loops: reading a
//! socket dry with the unparsed tail of the last read carried over ([`read_dry`]),
//! and splitting the bytes into a-chat lines or RESP values ([`split`]).

use std::io;

use super::link::Link;
use super::wire::{self, Resp};

/// A loop's connections, as [`read_dry`] needs them.
pub trait Reader {
    /// Why a connection is lost when the server closes it.
    const EOF: &'static str;

    /// Whether connection `ci` is closed already: it is read no more.
    fn is_closed(&self, ci: usize) -> bool;

    /// Connection `ci`'s link and the input left unparsed by its last read.
    fn input(&mut self, ci: usize) -> (&mut Link, &mut Vec<u8>);

    /// Handles every complete line or RESP value in `data`; returns the bytes used.
    fn consume(&mut self, ci: usize, data: &[u8]) -> usize;

    /// Counts input that cannot be what the server sends.
    fn malformed(&mut self);

    /// Connection `ci` is lost, for `why`.
    fn lost(&mut self, ci: usize, why: String);
}

/// Reads connection `ci` until the socket is drained: until a short read, or
/// with `hangup` (the peer closed: the end of the stream must be seen) until
/// EOF or EAGAIN. `rbuf` holds the carried-over input and what each read adds.
pub fn read_dry<R: Reader>(r: &mut R, ci: usize, rbuf: &mut [u8], hangup: bool) {
    loop {
        if r.is_closed(ci) {
            return;
        }
        let (link, partial) = r.input(ci);
        let plen = partial.len();
        if plen > rbuf.len() / 2 {
            r.malformed();
            r.lost(ci, format!("incomplete input over {plen} bytes"));
            return;
        }
        rbuf[..plen].copy_from_slice(partial);
        let room = rbuf.len() - plen;
        match link.read(&mut rbuf[plen..]) {
            Ok(0) => {
                r.lost(ci, R::EOF.into());
                return;
            }
            Ok(n) => {
                let total = plen + n;
                let used = r.consume(ci, &rbuf[..total]);
                let (_, partial) = r.input(ci);
                partial.clear();
                partial.extend_from_slice(&rbuf[used..total]);
                if n < room && !hangup {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                r.lost(ci, format!("read: {e}"));
                return;
            }
        }
    }
}

/// One complete piece of input.
pub enum Item<'a> {
    /// An a-chat line, without its newline.
    Line(&'a [u8]),
    /// A RESP value, and how many bytes it took.
    Resp(Resp<'a>, usize),
}

/// Hands every complete a-chat line (or with `resp`, RESP value) of `data` to
/// `each`, in order; returns the bytes used, or `Err` at input that is not RESP
/// (after handing over the values before it).
pub fn split<'a>(data: &'a [u8], resp: bool, mut each: impl FnMut(Item<'a>)) -> Result<usize, ()> {
    let mut pos = 0;
    if !resp {
        while let Some(n) = wire::find_byte(&data[pos..], b'\n') {
            each(Item::Line(&data[pos..pos + n]));
            pos += n + 1;
        }
        return Ok(pos);
    }
    while let Some((v, n)) = wire::parse_resp(&data[pos..])? {
        each(Item::Resp(v, n));
        pos += n;
    }
    Ok(pos)
}

//! What travels between nodes, as bytes, with no I/O: the relay frame that carries one
//! node's deliveries to another, and the directory events that tell every node who
//! logged in where. Decoding never panics and never trusts a length: a frame is input
//! from the network like any client line.
//!
//! A relay frame is `A1` followed by records, so that two frames for the same node are
//! merged by dropping the second one's header. A record is one message line and the
//! logins on the destination node it goes to:
//!
//! ```text
//! u16 sender length, sender, u16 recipient count, (u16 length, login)*, u32 line length, line
//! ```
//!
//! all lengths little-endian. The line is the delivery line as the recipient reads it
//! (`from alice: hi\n`), so the receiving node queues a slice of the frame itself.
//!
//! The first record names the node that sent the frame: no sender, no recipient, and the
//! node's name as its line. A node of an earlier version, which wrote no such record,
//! delivers nothing for it (it has no recipient), so nodes of both versions read each
//! other's frames during a rolling upgrade. The receiving node checks each record
//! (`checks.rs`): its sender must be a login that the named node holds; in a frame that
//! names no node, a login that any other node holds.

use std::collections::HashMap;
use std::ops::Range;

/// The first bytes of every relay frame: the format and its version.
pub const MAGIC: &[u8; 2] = b"A1";

/// The header of a frame from `node`: [`MAGIC`], then the record that names the node.
pub fn header(node: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MAGIC.len() + 8 + node.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&(node.len() as u32).to_le_bytes());
    buf.extend_from_slice(node.as_bytes());
    buf
}

/// How long `frame`'s header is, and the node it names (`None`: a frame of an earlier
/// version, which names none); `None` when it is not a relay frame.
fn read_header(frame: &[u8]) -> Option<(usize, Option<&str>)> {
    if !frame.starts_with(MAGIC) {
        return None;
    }
    let mut records = Records {
        frame,
        at: MAGIC.len(),
        source: None,
    };
    match records.record() {
        Ok(first) if first.sender.is_empty() && first.recipients.is_empty() => {
            let node = std::str::from_utf8(&frame[first.line]).ok();
            Some((first.raw.end, node))
        }
        _ => Some((MAGIC.len(), None)),
    }
}

/// A relay frame under construction, for one destination node.
#[derive(Debug)]
pub struct FrameWriter {
    buf: Vec<u8>,
    /// The header's length: the frame is empty while it holds nothing more.
    head: usize,
    /// Deliveries written so far (recipients over all records), for the metrics.
    deliveries: u64,
}

impl FrameWriter {
    /// A frame sent by node `me`.
    pub fn new(me: &str) -> FrameWriter {
        let buf = header(me);
        FrameWriter {
            head: buf.len(),
            buf,
            deliveries: 0,
        }
    }

    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Adds one message line for `recipients` (logins as they logged in). A sender,
    /// recipient or line too long for its length field cannot come from a client whose
    /// limits passed validation; such a record is left out and `false` returned.
    pub fn push(&mut self, sender: &str, recipients: &[&str], line: &[u8]) -> bool {
        let fits = sender.len() <= u16::MAX as usize
            && recipients.len() <= u16::MAX as usize
            && recipients.iter().all(|r| r.len() <= u16::MAX as usize)
            && line.len() <= u32::MAX as usize;
        if !fits {
            return false;
        }
        self.buf
            .extend_from_slice(&(sender.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(sender.as_bytes());
        self.buf
            .extend_from_slice(&(recipients.len() as u16).to_le_bytes());
        for r in recipients {
            self.buf.extend_from_slice(&(r.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(r.as_bytes());
        }
        self.buf
            .extend_from_slice(&(line.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(line);
        self.deliveries += recipients.len() as u64;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == self.head
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Appends the records of frame `next` to frame `into` (both from this node to the same
/// node, so with the same header).
pub fn merge(into: &mut Vec<u8>, next: &[u8]) {
    let head = read_header(next).map_or(next.len(), |(head, _)| head);
    into.extend_from_slice(&next[head..]);
}

/// One record of a relay frame, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'f> {
    pub sender: &'f str,
    pub recipients: Vec<&'f str>,
    /// Where the delivery line lies in the frame.
    pub line: Range<usize>,
    /// Where the whole record lies in the frame.
    pub raw: Range<usize>,
}

/// Why a relay frame was not read to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// It does not start with a readable header: another format, or another program's
    /// message.
    NotAFrame,
    /// A length points past the end, or a name is not UTF-8.
    Malformed,
}

/// The records of a relay frame, in the order they were written. Stops at the first
/// malformed record: the records before it are good.
pub fn records(frame: &[u8]) -> Result<Records<'_>, FrameError> {
    let (at, source) = read_header(frame).ok_or(FrameError::NotAFrame)?;
    Ok(Records { frame, at, source })
}

/// The iterator [`records`] gives.
pub struct Records<'f> {
    frame: &'f [u8],
    at: usize,
    /// The node the header names (`None` in a frame of the first version).
    source: Option<&'f str>,
}

impl<'f> Records<'f> {
    /// The node that sent the frame, as its header says (`None`: a frame of an earlier
    /// version, which does not say).
    pub fn source(&self) -> Option<&'f str> {
        self.source
    }

    /// The frame's header, to start a frame with the same one.
    fn header(&self) -> &'f [u8] {
        let end = read_header(self.frame).map_or(MAGIC.len(), |(end, _)| end);
        &self.frame[..end]
    }

    fn take(&mut self, n: usize) -> Result<Range<usize>, FrameError> {
        let end = self.at.checked_add(n).ok_or(FrameError::Malformed)?;
        if end > self.frame.len() {
            return Err(FrameError::Malformed);
        }
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn u16(&mut self) -> Result<usize, FrameError> {
        let r = self.take(2)?;
        Ok(u16::from_le_bytes([self.frame[r.start], self.frame[r.start + 1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, FrameError> {
        let r = self.take(4)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.frame[r]);
        Ok(u32::from_le_bytes(b) as usize)
    }

    fn str(&mut self, n: usize) -> Result<&'f str, FrameError> {
        let r = self.take(n)?;
        std::str::from_utf8(&self.frame[r]).map_err(|_| FrameError::Malformed)
    }

    fn record(&mut self) -> Result<Record<'f>, FrameError> {
        let start = self.at;
        let n = self.u16()?;
        let sender = self.str(n)?;
        let count = self.u16()?;
        // Each recipient takes at least its two length bytes: a count the rest of the
        // frame cannot hold allocates nothing.
        if count > (self.frame.len() - self.at) / 2 {
            return Err(FrameError::Malformed);
        }
        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            let n = self.u16()?;
            recipients.push(self.str(n)?);
        }
        let n = self.u32()?;
        let line = self.take(n)?;
        Ok(Record {
            sender,
            recipients,
            raw: start..line.end,
            line,
        })
    }
}

impl<'f> Iterator for Records<'f> {
    type Item = Result<Record<'f>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.frame.len() {
            return None;
        }
        let record = self.record();
        if record.is_err() {
            // Nothing after a malformed record can be trusted.
            self.at = self.frame.len();
        }
        Some(record)
    }
}

/// How many deliveries a relay frame holds (recipients over its records), as far as it
/// can be read.
pub fn deliveries(frame: &[u8]) -> u64 {
    records(frame).map_or(0, |r| {
        r.map_while(Result::ok)
            .map(|r| r.recipients.len() as u64)
            .sum()
    })
}

/// The frame with only the records of senders that have at most `light` bytes of
/// records in it, and how many deliveries were left out: when a node falls behind, a
/// sender flooding it loses its lines before one that sends a few. Linear in the frame,
/// whatever its number of senders. Records after a malformed one are left out, as the
/// router would; `None` when the frame cannot be read at all.
pub fn keep_light(frame: &[u8], light: usize) -> Option<(Vec<u8>, u64)> {
    let mut by_sender: HashMap<&str, usize> = HashMap::new();
    for record in records(frame).ok()?.map_while(Result::ok) {
        *by_sender.entry(record.sender).or_default() += record.raw.len();
    }
    let mut kept = records(frame).ok()?.header().to_vec();
    let mut dropped = 0;
    for record in records(frame).ok()?.map_while(Result::ok) {
        if by_sender[record.sender] <= light {
            kept.extend_from_slice(&frame[record.raw]);
        } else {
            dropped += record.recipients.len() as u64;
        }
    }
    Some((kept, dropped))
}

/// A change to the cluster's login directory, as published on the directory channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirEvent {
    /// `node` now holds `login`, whose canonical form is `look`.
    Login {
        node: String,
        look: String,
        login: String,
    },
    /// `node` no longer holds the login with canonical form `look`.
    Logout { node: String, look: String },
    /// `node` is gone (it left, or its lease ran out): none of its logins are held.
    NodeGone { node: String },
}

/// Parses a directory event (`L\nnode\nlook\nlogin`, `U\nnode\nlook`, `D\nnode`). The
/// scripts in `registry.lua` write them; anything else is `None`.
pub fn parse_event(payload: &[u8]) -> Option<DirEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('\n');
    let kind = parts.next()?;
    let node = parts.next()?.to_owned();
    let event = match kind {
        "L" => DirEvent::Login {
            node,
            look: parts.next()?.to_owned(),
            login: parts.next()?.to_owned(),
        },
        "U" => DirEvent::Logout {
            node,
            look: parts.next()?.to_owned(),
        },
        "D" => DirEvent::NodeGone { node },
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(event)
}

/// Parses a directory entry as the registry stores it (`node\nlogin`, by look).
pub fn parse_entry(value: &[u8]) -> Option<(&str, &str)> {
    std::str::from_utf8(value).ok()?.split_once('\n')
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;

//! The lines a connection's queue holds: deliveries (a range of a read's buffer that
//! every recipient of the read's messages shares, one line or several back to back) or a
//! line the server writes itself.

use std::sync::Arc;

/// One line queued for a client.
pub enum Out {
    /// Deliveries `from X: text`: a range of a buffer shared by every recipient of the
    /// messages of one read, holding one line or several consecutive lines of one sender
    /// to the same recipients; each line is counted as delivered once written.
    Delivery(Shared),
    /// A line the server originates (`error: ...`), not counted as a delivery.
    Server(Vec<u8>),
}

impl Out {
    /// Bytes this item keeps alive while it is queued beyond its own (see [`Queue`]'s
    /// `pinned`): the rest of the shared buffer its range is in.
    pub fn pinned(&self) -> usize {
        match self {
            Out::Delivery(line) => line.neighbours_len(),
            Out::Server(_) => 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Out::Delivery(line) => line.bytes(),
            Out::Server(line) => line,
        }
    }

    /// Deliveries this item holds: 0 for a line of the server's own.
    pub fn deliveries(&self) -> u64 {
        match self {
            Out::Delivery(line) => line.deliveries(),
            Out::Server(_) => 0,
        }
    }
}

/// A range of a shared buffer: delivery lines without a copy per recipient.
#[derive(Clone)]
pub struct Shared {
    buf: Arc<[u8]>,
    start: u32,
    end: u32,
    /// Delivery lines in the range: a sender's run of messages to the same recipients
    /// travels as one range, queued and written once, but counted line by line.
    lines: u32,
}

impl Shared {
    /// `buf[range]`, one delivery line; the range must be in bounds.
    pub fn new(buf: Arc<[u8]>, range: std::ops::Range<usize>) -> Shared {
        Shared::lines(buf, range, 1)
    }

    /// `buf[range]`, holding `lines` delivery lines back to back.
    pub fn lines(buf: Arc<[u8]>, range: std::ops::Range<usize>, lines: u32) -> Shared {
        assert!(range.start <= range.end && range.end <= buf.len());
        Shared {
            buf,
            start: range.start as u32,
            end: range.end as u32,
            lines,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    /// Delivery lines in the range.
    pub fn deliveries(&self) -> u64 {
        u64::from(self.lines)
    }

    /// Bytes of the buffer this range keeps alive beyond its own: its neighbours'.
    pub fn neighbours_len(&self) -> usize {
        self.buf.len() - (self.end - self.start) as usize
    }

    /// The same line in a buffer of its own, which keeps nothing else alive.
    pub fn detached(&self) -> Shared {
        let bytes = self.bytes();
        Shared {
            buf: bytes.into(),
            start: 0,
            end: bytes.len() as u32,
            lines: self.lines,
        }
    }
}

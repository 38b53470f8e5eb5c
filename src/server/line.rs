//! The lines a connection's queue holds: a delivery (a range of a read's buffer that
//! every recipient of the read's messages shares) or a line the server writes itself.

use std::sync::Arc;

/// One line queued for a client.
pub enum Out {
    /// A delivery `from X: text`: a range of a buffer shared by every recipient of the
    /// messages of one read; counted as delivered once written.
    Delivery(Shared),
    /// A line the server originates (`error: ...`), not counted as a delivery.
    Server(Vec<u8>),
}

impl Out {
    /// Bytes this item keeps alive while it is queued (see [`Queue`]'s `pinned`).
    pub fn pinned(&self) -> usize {
        match self {
            Out::Delivery(line) => line.backing_len(),
            Out::Server(_) => 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Out::Delivery(line) => line.bytes(),
            Out::Server(line) => line,
        }
    }
}

/// A range of a shared buffer: one delivery line without a copy per recipient.
#[derive(Clone)]
pub struct Shared {
    buf: Arc<[u8]>,
    start: u32,
    end: u32,
}

impl Shared {
    /// `buf[range]`, which must be in bounds.
    pub fn new(buf: Arc<[u8]>, range: std::ops::Range<usize>) -> Shared {
        assert!(range.start <= range.end && range.end <= buf.len());
        Shared {
            buf,
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    /// Bytes of the buffer this line keeps alive (its own and its neighbours').
    pub fn backing_len(&self) -> usize {
        self.buf.len()
    }

    /// The same line in a buffer of its own, which keeps nothing else alive.
    pub fn detached(&self) -> Shared {
        let bytes = self.bytes();
        Shared {
            buf: bytes.into(),
            start: 0,
            end: bytes.len() as u32,
        }
    }
}

//! The lines a connection's queue holds: deliveries (a range of a read's buffer that
//! every recipient of the read's messages shares, one line or several back to back) or a
//! line the server writes itself.

use std::sync::Arc;

/// A queue keeps at most this share of its soft bound (`outbound_queue_bytes`) alive in
/// other lines of the reads its deliveries came from: one in four, so that what a client
/// that does not read costs stays within its bounds plus a quarter of the soft one.
const PINNED_SHARE: usize = 4;

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

    /// The item to queue in a queue that already keeps `pinned` bytes of other lines
    /// alive (see [`Out::pinned`]) under the soft bound `soft`: a delivery whose read's
    /// buffer would take that past [`PINNED_SHARE`] of `soft` is queued as a copy.
    pub fn within_pinned_share(self, pinned: usize, soft: usize) -> Out {
        match self {
            Out::Delivery(line)
                if line.neighbours_len() > 0
                    && pinned + line.neighbours_len() > soft / PINNED_SHARE =>
            {
                Out::Delivery(line.detached())
            }
            out => out,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A short line of a large read: queued as it is while the queue's share allows,
    /// as a copy that keeps nothing else alive past it.
    #[test]
    fn a_short_line_of_a_large_read_is_copied_past_the_pinned_share() {
        let read: Arc<[u8]> = vec![b'x'; 64 * 1024].into();
        let line = || Out::Delivery(Shared::new(read.clone(), 0..8));
        let soft = 1 << 20;
        let kept = line().within_pinned_share(0, soft);
        assert_eq!(kept.pinned(), 64 * 1024 - 8);
        let copied = line().within_pinned_share(soft / PINNED_SHARE - 1000, soft);
        assert_eq!((copied.pinned(), copied.bytes().len()), (0, 8));
        // A run that is the whole read pins nothing beyond itself: never copied.
        let run = Out::Delivery(Shared::lines(read.clone(), 0..read.len(), 9));
        match run.within_pinned_share(soft, soft) {
            Out::Delivery(run) => {
                assert!(Arc::ptr_eq(&run.buf, &read), "copied");
                assert_eq!(run.deliveries(), 9);
            }
            Out::Server(_) => panic!("not a delivery"),
        }
    }
}

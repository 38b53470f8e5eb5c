//! The bench payload: who sent it, its sequence number and its send time, in a
//! fixed-width header at a fixed place, padded to the requested size.
//!
//! Layout (ASCII, lowercase hex, fixed width so a template can be patched in place):
//! `SSSSSSSS QQQQQQQQQQQQ TTTTTTTTTTTTTTTT.....`
//! - `S`: sender index (32 bits), `Q`: sequence number (48 bits),
//! - `T`: send time in nanoseconds since the bench started (64 bits),
//! - `.` padding up to the payload size. The payload never starts or ends with
//!   whitespace, since a-chat trims message text.

/// Bytes of the header; the smallest payload the bench can send.
pub const HEADER_LEN: usize = 38;
const SENDER_AT: usize = 0;
const SENDER_W: usize = 8;
const SEQ_AT: usize = 9;
const SEQ_W: usize = 12;
const TS_AT: usize = 22;
const TS_W: usize = 16;
const PAD: u8 = b'.';

/// Largest sequence number the header can carry.
pub const MAX_SEQ: u64 = (1 << (4 * SEQ_W)) - 1;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as `dst.len()` lowercase hex digits (the low bits of `v`).
#[inline]
pub fn write_hex(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Reads fixed-width lowercase or uppercase hex; `None` on any other byte.
#[inline]
pub fn read_hex(src: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &b in src {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Fills a whole payload (`payload.len()` ≥ [`HEADER_LEN`]): header and padding.
pub fn fill(payload: &mut [u8], sender: u32, seq: u64, ts_ns: u64) {
    assert!(
        payload.len() >= HEADER_LEN,
        "payload shorter than its header"
    );
    write_hex(
        &mut payload[SENDER_AT..SENDER_AT + SENDER_W],
        u64::from(sender),
    );
    payload[SENDER_AT + SENDER_W] = b' ';
    payload[SEQ_AT + SEQ_W] = b' ';
    payload[HEADER_LEN..].fill(PAD);
    patch(payload, seq, ts_ns);
}

/// Rewrites only the sequence number and the timestamp of a filled payload.
#[inline]
pub fn patch(payload: &mut [u8], seq: u64, ts_ns: u64) {
    write_hex(&mut payload[SEQ_AT..SEQ_AT + SEQ_W], seq);
    write_hex(&mut payload[TS_AT..TS_AT + TS_W], ts_ns);
}

/// What a received payload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub sender: u32,
    pub seq: u64,
    pub ts_ns: u64,
}

/// Decodes a payload of exactly `size` bytes; `None` if it is not one of ours
/// (wrong length, bad header or bad padding at the end).
#[inline]
pub fn decode(payload: &[u8], size: usize) -> Option<Decoded> {
    if payload.len() != size || size < HEADER_LEN {
        return None;
    }
    if payload[SENDER_AT + SENDER_W] != b' ' || payload[SEQ_AT + SEQ_W] != b' ' {
        return None;
    }
    if size > HEADER_LEN && payload[size - 1] != PAD {
        return None;
    }
    Some(Decoded {
        sender: read_hex(&payload[SENDER_AT..SENDER_AT + SENDER_W])? as u32,
        seq: read_hex(&payload[SEQ_AT..SEQ_AT + SEQ_W])?,
        ts_ns: read_hex(&payload[TS_AT..TS_AT + TS_W])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut p = vec![0u8; 64];
        fill(&mut p, 42, 7, 123_456_789);
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            "0000002a 000000000007 00000000075bcd15.........................."
        );
        assert_eq!(
            decode(&p, 64),
            Some(Decoded {
                sender: 42,
                seq: 7,
                ts_ns: 123_456_789
            })
        );
        patch(&mut p, MAX_SEQ, u64::MAX);
        let d = decode(&p, 64).unwrap();
        assert_eq!((d.sender, d.seq, d.ts_ns), (42, MAX_SEQ, u64::MAX));
    }

    #[test]
    fn exact_header_size() {
        let mut p = vec![0u8; HEADER_LEN];
        fill(&mut p, 1, 2, 3);
        assert_eq!(decode(&p, HEADER_LEN).unwrap().seq, 2);
        assert!(!p.last().unwrap().is_ascii_whitespace());
    }

    #[test]
    fn rejects_foreign_payloads() {
        let mut p = vec![0u8; 64];
        fill(&mut p, 1, 2, 3);
        assert!(decode(&p, 65).is_none(), "wrong size");
        assert!(decode(&p[..63], 64).is_none(), "truncated");
        let mut bad = p.clone();
        bad[63] = b'x';
        assert!(decode(&bad, 64).is_none(), "bad padding");
        let mut bad = p.clone();
        bad[3] = b'g';
        assert!(decode(&bad, 64).is_none(), "bad hex");
        let mut bad = p.clone();
        bad[8] = b'x';
        assert!(decode(&bad, 64).is_none(), "bad separator");
        assert!(decode(b"ping", 4).is_none());
    }

    #[test]
    fn hex_helpers() {
        let mut b = [0u8; 4];
        write_hex(&mut b, 0x1_abcd);
        assert_eq!(&b, b"abcd", "keeps the low digits");
        assert_eq!(read_hex(b"00fF"), Some(255));
        assert_eq!(read_hex(b"0x"), None);
    }
}

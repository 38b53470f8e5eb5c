//! The two wire formats the bench speaks, without allocation on the hot path:
//! a-chat lines (`from alice: text`) and the small part of RESP that Redis
//! pub/sub needs. Also the message templates that senders patch in place.

use super::payload;

/// Position of the first `b` in `hay`, eight bytes at a time.
#[inline]
pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let rep = LO * u64::from(b);
    let mut i = 0;
    while i + 8 <= hay.len() {
        let w = u64::from_le_bytes(hay[i..i + 8].try_into().unwrap()) ^ rep;
        let t = w.wrapping_sub(LO) & !w & HI;
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == b).map(|p| p + i)
}

/// One line from an a-chat server (without its `\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum ChatLine<'a> {
    From { login: &'a [u8], text: &'a [u8] },
    Error(&'a [u8]),
    Notice(&'a [u8]),
    Other(&'a [u8]),
}

pub fn parse_chat_line(line: &[u8]) -> ChatLine<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(rest) = line.strip_prefix(b"from ") {
        if let Some(colon) = find_byte(rest, b':') {
            if rest.get(colon + 1) == Some(&b' ') {
                return ChatLine::From {
                    login: &rest[..colon],
                    text: &rest[colon + 2..],
                };
            }
        }
    } else if let Some(rest) = line.strip_prefix(b"error: ") {
        return ChatLine::Error(rest);
    } else if let Some(rest) = line.strip_prefix(b"notice: ") {
        return ChatLine::Notice(rest);
    }
    ChatLine::Other(line)
}

/// The client index in a bench login or channel name `<prefix><decimal index>`.
#[inline]
/// An a-chat client's first lines: the login (`NAME` or, with a password, `NAME
/// PASSWORD`) and a message to itself that confirms the login.
pub fn achat_hello(name: &str, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("{name} {password}\n{name}: ping\n"),
        None => format!("{name}\n{name}: ping\n"),
    }
}

pub fn client_index(name: &[u8], prefix: &[u8]) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
    }
    Some(v)
}

/// One RESP value, as far as pub/sub needs: arrays are flat (bulk strings and
/// integers) and keep only their first and last element.
#[derive(Debug, PartialEq, Eq)]
pub enum Resp<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Bulk(Option<&'a [u8]>),
    Array {
        len: usize,
        first: Option<&'a [u8]>,
        last: Option<&'a [u8]>,
    },
}

/// A line ending in `\r\n` at `pos`: (its content, the position after it).
/// `Ok(None)` if incomplete.
fn resp_line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ()> {
    match find_byte(&buf[pos..], b'\n') {
        None => Ok(None),
        Some(n) if n >= 1 && buf[pos + n - 1] == b'\r' => {
            Ok(Some((&buf[pos..pos + n - 1], pos + n + 1)))
        }
        Some(_) => Err(()),
    }
}

fn parse_int(s: &[u8]) -> Result<i64, ()> {
    std::str::from_utf8(s)
        .map_err(|_| ())?
        .parse()
        .map_err(|_| ())
}

/// A scalar value, its bytes (an integer's as its text), and where it ends.
type Scalar<'a> = (Resp<'a>, &'a [u8], usize);

/// A scalar at `pos` (not an array).
fn resp_scalar(buf: &[u8], pos: usize) -> Result<Option<Scalar<'_>>, ()> {
    let Some((line, after)) = resp_line(buf, pos)? else {
        return Ok(None);
    };
    let (&kind, body) = line.split_first().ok_or(())?;
    match kind {
        b'+' => Ok(Some((Resp::Simple(body), body, after))),
        b'-' => Ok(Some((Resp::Error(body), body, after))),
        b':' => Ok(Some((Resp::Int(parse_int(body)?), body, after))),
        b'$' => {
            let n = parse_int(body)?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), &[], after)));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err(());
            }
            let s = &buf[after..after + n];
            Ok(Some((Resp::Bulk(Some(s)), s, after + n + 2)))
        }
        _ => Err(()),
    }
}

/// Parses one RESP value at the start of `buf`: `Ok(Some((value, consumed)))`,
/// `Ok(None)` when more bytes are needed, `Err(())` on anything unexpected.
pub fn parse_resp(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>, ()> {
    if buf.first() != Some(&b'*') && buf.first() != Some(&b'>') {
        if buf.is_empty() {
            return Ok(None);
        }
        return Ok(resp_scalar(buf, 0)?.map(|(v, _, end)| (v, end)));
    }
    let Some((line, mut pos)) = resp_line(buf, 0)? else {
        return Ok(None);
    };
    let len = parse_int(&line[1..])?;
    let len = usize::try_from(len).unwrap_or(0);
    let (mut first, mut last) = (None, None);
    for i in 0..len {
        let Some((_, bytes, end)) = resp_scalar(buf, pos)? else {
            return Ok(None);
        };
        if i == 0 {
            first = Some(bytes);
        }
        last = Some(bytes);
        pos = end;
    }
    Ok(Some((Resp::Array { len, first, last }, pos)))
}

/// A message ready to copy into a send buffer: `bytes`, with a payload at each
/// offset in `payload_at` whose sequence number and timestamp get patched.
#[derive(Debug, Clone, Default)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub payload_at: Vec<usize>,
}

impl Template {
    /// Appends one copy to `out`, with `seq` and `ts_ns` written in.
    #[inline]
    pub fn append(&self, out: &mut Vec<u8>, size: usize, seq: u64, ts_ns: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        for &at in &self.payload_at {
            payload::patch(&mut out[start + at..start + at + size], seq, ts_ns);
        }
    }
}

/// `r1, r2: <payload>\n` from `sender` to the logins `recipients`.
pub fn chat_template(recipients: &[&str], sender: u32, size: usize) -> Template {
    let mut bytes = recipients.join(", ").into_bytes();
    bytes.extend_from_slice(b": ");
    let at = bytes.len();
    bytes.resize(at + size, 0);
    payload::fill(&mut bytes[at..], sender, 0, 0);
    bytes.push(b'\n');
    Template {
        bytes,
        payload_at: vec![at],
    }
}

/// One `PUB <subject> <size>` and its payload per subject (NATS).
pub fn nats_template(subjects: &[&str], sender: u32, size: usize) -> Template {
    let mut t = Template::default();
    for subject in subjects {
        t.bytes
            .extend_from_slice(format!("PUB {subject} {size}\r\n").as_bytes());
        let at = t.bytes.len();
        t.bytes.resize(at + size, 0);
        payload::fill(&mut t.bytes[at..], sender, 0, 0);
        t.bytes.extend_from_slice(b"\r\n");
        t.payload_at.push(at);
    }
    t
}

/// One `PUBLISH <channel> <payload>` per channel, as RESP arrays.
pub fn redis_template(channels: &[&str], sender: u32, size: usize) -> Template {
    let mut t = Template::default();
    for ch in channels {
        let head = format!(
            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{}\r\n${}\r\n",
            ch.len(),
            ch,
            size
        );
        t.bytes.extend_from_slice(head.as_bytes());
        let at = t.bytes.len();
        t.bytes.resize(at + size, 0);
        payload::fill(&mut t.bytes[at..], sender, 0, 0);
        t.bytes.extend_from_slice(b"\r\n");
        t.payload_at.push(at);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_matches_position() {
        let hay: Vec<u8> = (0..200u8)
            .map(|i| if i % 37 == 36 { b'\n' } else { b'a' + i % 20 })
            .collect();
        for start in 0..hay.len() {
            let want = hay[start..].iter().position(|&c| c == b'\n');
            assert_eq!(find_byte(&hay[start..], b'\n'), want, "start {start}");
        }
        assert_eq!(find_byte(b"", b'\n'), None);
        assert_eq!(find_byte(b"\x80\x81\x0a", b'\n'), Some(2));
        assert_eq!(find_byte(b"\x01\x00\x0b\x0a", b'\n'), Some(3));
    }

    #[test]
    fn chat_lines() {
        assert_eq!(
            parse_chat_line(b"from alice: hi: there\r"),
            ChatLine::From {
                login: b"alice",
                text: b"hi: there"
            }
        );
        assert_eq!(
            parse_chat_line(b"error: login \"x\" is taken"),
            ChatLine::Error(b"login \"x\" is taken")
        );
        assert_eq!(parse_chat_line(b"notice: bye"), ChatLine::Notice(b"bye"));
        assert_eq!(
            parse_chat_line(b"from alice hi"),
            ChatLine::Other(b"from alice hi")
        );
        assert_eq!(parse_chat_line(b"hello"), ChatLine::Other(b"hello"));
    }

    #[test]
    fn client_indexes() {
        assert_eq!(client_index(b"b12-345", b"b12-"), Some(345));
        assert_eq!(client_index(b"b12-", b"b12-"), None);
        assert_eq!(client_index(b"b12-3x", b"b12-"), None);
        assert_eq!(client_index(b"other-3", b"b12-"), None);
    }

    #[test]
    fn resp_values() {
        let push = b"*3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$5\r\nhello\r\n:3\r\n";
        let (v, n) = parse_resp(push).unwrap().unwrap();
        assert_eq!(
            v,
            Resp::Array {
                len: 3,
                first: Some(b"message"),
                last: Some(b"hello")
            }
        );
        assert_eq!(parse_resp(&push[n..]).unwrap().unwrap(), (Resp::Int(3), 4));
        for cut in 0..n {
            assert_eq!(parse_resp(&push[..cut]), Ok(None), "cut {cut}");
        }
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n";
        let (v, _) = parse_resp(sub).unwrap().unwrap();
        assert_eq!(
            v,
            Resp::Array {
                len: 3,
                first: Some(b"subscribe"),
                last: Some(b"1")
            }
        );
        assert_eq!(
            parse_resp(b"-ERR no\r\n").unwrap().unwrap().0,
            Resp::Error(b"ERR no")
        );
        assert_eq!(
            parse_resp(b"+OK\r\n").unwrap().unwrap().0,
            Resp::Simple(b"OK")
        );
        assert_eq!(parse_resp(b"$-1\r\n").unwrap().unwrap().0, Resp::Bulk(None));
        assert!(parse_resp(b"?what\r\n").is_err());
        assert!(parse_resp(b"$2\r\nabcd\r\n").is_err());
    }

    #[test]
    fn templates_patch_payloads() {
        let t = chat_template(&["b-1", "b-2"], 0, 40);
        let mut out = Vec::new();
        t.append(&mut out, 40, 5, 9);
        let line = std::str::from_utf8(&out).unwrap();
        assert!(line.starts_with("b-1, b-2: 00000000 000000000005 0000000000000009"));
        assert!(line.ends_with("..\n"));
        assert_eq!(out.len(), "b-1, b-2: ".len() + 40 + 1);

        let t = redis_template(&["c1", "c2"], 3, 40);
        let mut out = Vec::new();
        t.append(&mut out, 40, 1, 2);
        let (v, n) = parse_resp(&out).unwrap().unwrap();
        let Resp::Array {
            len: 3,
            first: Some(b"PUBLISH"),
            last: Some(p),
        } = v
        else {
            panic!("{v:?}")
        };
        let d = payload::decode(p, 40).unwrap();
        assert_eq!((d.sender, d.seq, d.ts_ns), (3, 1, 2));
        assert!(parse_resp(&out[n..]).unwrap().is_some());
    }
}

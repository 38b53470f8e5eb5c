//! The PROXY protocol header (versions 1 and 2, as HAProxy defines them), which a load
//! balancer in TCP mode sends first on each connection to say whose it is. Pure functions,
//! no I/O: the connection reads through [`parse`] exactly the bytes of the header and no
//! more, and the client's own bytes follow untouched.
//!
//! Only addresses listed in `[server] proxy_protocol_from` are asked for a header; see
//! `server::connection` for the edge that reads it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest version 1 header, CRLF included (the spec's own bound).
pub const MAX_V1: usize = 107;
/// The longest version 2 header a-chat takes: the 16-byte preamble and up to 1 KiB of
/// addresses and TLVs. The spec allows 64 KiB; a balancer sends about 50 bytes plus a
/// few optional TLVs, and a larger header only costs memory before a login.
pub const MAX_V2: usize = 16 + 1024;

/// The 12 bytes that begin a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection: the client's address and port.
    Proxied(SocketAddr),
    /// The balancer speaking for itself (v2 LOCAL, e.g. a health check), or a family the
    /// header cannot express (v1 UNKNOWN, v2 UNSPEC or UNIX): the socket's own address
    /// stands.
    Local,
}

/// The result of looking at the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A whole header of `len` bytes begins the input.
    Complete { len: usize, header: Header },
    /// The input is a header's beginning; the header is at least `at_least` bytes long, so
    /// that many can be read without reading past it.
    Incomplete { at_least: usize },
    /// No header can begin so.
    Invalid(Invalid),
}

/// Why the input is not a PROXY header, in words for the person reading the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Neither `PROXY ` nor the version 2 signature.
    NotProxy,
    /// A version 1 line with no CRLF within 107 bytes.
    V1TooLong,
    /// A version 1 line that is not `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or `PROXY UNKNOWN`.
    V1Malformed,
    /// A version 2 header with a version other than 2, a command other than LOCAL/PROXY,
    /// or (with PROXY) a datagram transport or a family or transport the spec lacks.
    V2Unsupported,
    /// A version 2 header longer than [`MAX_V2`].
    V2TooLong,
    /// A version 2 header too short for the addresses of its family.
    V2Truncated,
}

/// Why a connection that owed a header was closed: the `reason` label of
/// `achat_proxy_headers_refused_total`.
pub use crate::metrics::ProxyRefusal as Refusal;

impl From<Invalid> for Refusal {
    fn from(why: Invalid) -> Refusal {
        match why {
            Invalid::NotProxy => Refusal::Missing,
            Invalid::V1TooLong | Invalid::V2TooLong => Refusal::TooLong,
            Invalid::V1Malformed | Invalid::V2Truncated => Refusal::Malformed,
            Invalid::V2Unsupported => Refusal::Unsupported,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::NotProxy => "the connection did not begin with a PROXY protocol header",
            Invalid::V1TooLong => "PROXY v1 header has no CRLF within 107 bytes",
            Invalid::V1Malformed => {
                "PROXY v1 header is not TCP4/TCP6 with two addresses and two ports, or UNKNOWN"
            }
            Invalid::V2Unsupported => "PROXY v2 header has an unknown version or command",
            Invalid::V2TooLong => "PROXY v2 header is longer than 1040 bytes",
            Invalid::V2Truncated => "PROXY v2 header is too short for its address family",
        })
    }
}

/// Looks at the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Parse {
    match buf.first() {
        None => Parse::Incomplete { at_least: 1 },
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Parse::Invalid(Invalid::NotProxy),
    }
}

fn parse_v1(buf: &[u8]) -> Parse {
    let known = buf.len().min(V1_PREFIX.len());
    if buf[..known] != V1_PREFIX[..known] {
        return Parse::Invalid(Invalid::NotProxy);
    }
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_V1 {
            return Parse::Invalid(Invalid::V1TooLong);
        }
        // "PROXY UNKNOWN\r\n" is the shortest header: 15 bytes.
        return Parse::Incomplete {
            at_least: (buf.len() + 1).max(15),
        };
    };
    if newline == 0 || window[newline - 1] != b'\r' {
        return Parse::Invalid(Invalid::V1Malformed);
    }
    let end = newline - 1;
    let len = end + 2;
    match v1_line(&buf[V1_PREFIX.len()..end]) {
        Some(header) => Parse::Complete { len, header },
        None => Parse::Invalid(Invalid::V1Malformed),
    }
}

/// `TCP4 SRC DST SPORT DPORT`, `TCP6 …` or `UNKNOWN[ anything]`, without the prefix and CRLF.
fn v1_line(line: &[u8]) -> Option<Header> {
    let line = std::str::from_utf8(line).ok()?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Some(Header::Local);
    }
    let mut parts = line.split(' ');
    let family = parts.next()?;
    let (src, dst, sport, dport) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let ip: IpAddr = match family {
        "TCP4" => {
            dst.parse::<Ipv4Addr>().ok()?;
            src.parse::<Ipv4Addr>().ok()?.into()
        }
        "TCP6" => {
            dst.parse::<Ipv6Addr>().ok()?;
            src.parse::<Ipv6Addr>().ok()?.into()
        }
        _ => return None,
    };
    port(dport)?;
    Some(Header::Proxied(SocketAddr::new(ip, port(sport)?)))
}

/// A decimal port as the spec writes it: digits only, no sign, no leading zero.
fn port(text: &str) -> Option<u16> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parse {
    let known = buf.len().min(V2_SIGNATURE.len());
    if buf[..known] != V2_SIGNATURE[..known] {
        return Parse::Invalid(Invalid::NotProxy);
    }
    if buf.len() < 16 {
        return Parse::Incomplete { at_least: 16 };
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Parse::Invalid(Invalid::V2Unsupported);
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2 {
        return Parse::Invalid(Invalid::V2TooLong);
    }
    if buf.len() < len {
        return Parse::Incomplete { at_least: len };
    }
    let body = &buf[16..len];
    if command == 0 {
        // LOCAL: the balancer's own connection; the family and addresses are to be ignored.
        return Parse::Complete {
            len,
            header: Header::Local,
        };
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    // DGRAM (2) names a datagram's sender, which a stream listener has no client for;
    // values past the spec's (family 3, transport 2) must be refused, it says.
    if family > 3 || transport > 1 {
        return Parse::Invalid(Invalid::V2Unsupported);
    }
    let header = match family {
        // AF_INET: source, destination, source port, destination port.
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Header::Proxied(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        2 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Header::Proxied(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        1 | 2 => return Parse::Invalid(Invalid::V2Truncated),
        // AF_UNSPEC, AF_UNIX or a family yet to come: the receiver keeps the socket's
        // addresses, as the spec asks.
        _ => Header::Local,
    };
    Parse::Complete { len, header }
}

/// An address or a network (`10.0.0.5`, `10.0.0.0/8`, `2001:db8::/32`) a connection may
/// come from: an entry of `[server] proxy_protocol_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    net: IpAddr,
    prefix: u8,
}

impl Source {
    /// True when `ip` is inside; an IPv4 client seen on a dual-stack socket
    /// (`::ffff:10.0.0.5`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a `proxy_protocol_from` entry is not an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not an address or a network: write e.g. \"10.0.0.5\", \"10.0.0.0/8\" or \"2001:db8::/32\"")]
pub struct NotASource {
    /// The entry as written.
    pub text: String,
}

impl std::str::FromStr for Source {
    type Err = NotASource;

    fn from_str(text: &str) -> Result<Source, NotASource> {
        let bad = || NotASource {
            text: text.to_owned(),
        };
        let (ip, prefix) = match text.split_once('/') {
            None => (text, None),
            Some((ip, prefix)) => (ip, Some(prefix)),
        };
        let net: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(bad()),
            },
            Some(_) => return Err(bad()),
        };
        Ok(Source { net, prefix })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;

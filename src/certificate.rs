//! What a-chat reads in an X.509 certificate (RFC 5280), walking its DER just far enough:
//! when it stops being valid (`notAfter`, for the
//! `achat_tls_certificate_expiry_timestamp_seconds` gauge that an alert fires on weeks
//! before a renewal is missed), and the names a client certificate vouches for (for
//! `[tls] client_identity = "login"`). Pure: bytes in, values out; anything unexpected is
//! `None` or nothing, never a panic.

use std::path::Path;

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;

/// The parts of a certificate's `tbsCertificate` a-chat reads.
struct Tbs<'a> {
    validity: &'a [u8],
    subject: &'a [u8],
    /// The contents of `[3] extensions`, when there are any.
    extensions: Option<&'a [u8]>,
}

fn tbs(der: &[u8]) -> Option<Tbs<'_>> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, then validity, subject and
    // subjectPublicKeyInfo, then the optional [1] and [2] unique ids and [3] extensions.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, validity, rest) = element(tbs)? else {
        return None;
    };
    let (SEQUENCE, subject, rest) = element(rest)? else {
        return None;
    };
    let mut rest = element(rest)?.2;
    let mut extensions = None;
    while !rest.is_empty() {
        let (tag, content, after) = element(rest)?;
        if tag == 0xa3 {
            extensions = Some(element(content)?.1);
        }
        rest = after;
    }
    Some(Tbs {
        validity,
        subject,
        extensions,
    })
}

/// The `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let after = element(tbs(der)?.validity)?.2;
    let (tag, time, _) = element(after)?;
    let time = std::str::from_utf8(time).ok()?;
    match tag {
        0x17 => utc_time(time),
        0x18 => generalized_time(time),
        _ => None,
    }
}

/// The names a client certificate vouches for, as `[tls] client_identity = "login"`
/// reads them: its subjectAltName's email addresses and DNS names, or, when it has
/// none, its subject's common name (CN). Empty when it has neither.
pub fn identity(der: &[u8]) -> Vec<String> {
    let Some(tbs) = tbs(der) else {
        return Vec::new();
    };
    let sans = tbs.extensions.map(alt_names).unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    common_name(tbs.subject).into_iter().collect()
}

/// The subject's common name (CN), for the log line of a login.
pub fn subject(der: &[u8]) -> Option<String> {
    common_name(tbs(der)?.subject)
}

/// The email (`[1]`) and DNS (`[2]`) names of the subjectAltName extension.
fn alt_names(mut extensions: &[u8]) -> Vec<String> {
    const SUBJECT_ALT_NAME: [u8; 3] = [0x55, 0x1d, 0x11];
    let mut names = Vec::new();
    while let Some((SEQUENCE, extension, rest)) = element(extensions) {
        extensions = rest;
        let Some((0x06, oid, mut fields)) = element(extension) else {
            continue;
        };
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        // An optional `critical` BOOLEAN, then the value in an OCTET STRING.
        if fields.first() == Some(&0x01) {
            fields = element(fields).map_or(&[][..], |(_, _, rest)| rest);
        }
        let Some((0x04, value, _)) = element(fields) else {
            continue;
        };
        let Some((SEQUENCE, mut general, _)) = element(value) else {
            continue;
        };
        while let Some((tag, name, rest)) = element(general) {
            general = rest;
            if matches!(tag, 0x81 | 0x82) {
                if let Ok(name) = std::str::from_utf8(name) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

/// The first common name (2.5.4.3) of a Name.
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    while let Some((0x31, set, rest)) = element(name) {
        name = rest;
        let Some((SEQUENCE, pair, _)) = element(set) else {
            continue;
        };
        let Some((0x06, oid, value)) = element(pair) else {
            continue;
        };
        if oid == CN {
            let (_, text, _) = element(value)?;
            return std::str::from_utf8(text).ok().map(str::to_owned);
        }
    }
    None
}

/// `YYMMDDHHMMSSZ` (years 1950 to 2049).
fn utc_time(text: &str) -> Option<i64> {
    let year: i64 = text.get(..2)?.parse().ok()?;
    let year = if year >= 50 { 1900 + year } else { 2000 + year };
    seconds(year, text.get(2..)?)
}

/// `YYYYMMDDHHMMSSZ`.
fn generalized_time(text: &str) -> Option<i64> {
    seconds(text.get(..4)?.parse().ok()?, text.get(4..)?)
}

/// `MMDDHHMMSSZ` of `year`, as Unix seconds.
fn seconds(year: i64, rest: &str) -> Option<i64> {
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let part = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day, hour, minute, second) = (part(0)?, part(2)?, part(4)?, part(6)?, part(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `notAfter` of the first certificate of a PEM file (the server's own, in a chain).
pub fn expiry_of_pem_file(path: &Path) -> Option<i64> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    not_after(&first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.extend([0x82, (content.len() >> 8) as u8, content.len() as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn certificate(version: bool, after: Vec<u8>) -> Vec<u8> {
        with_names(version, after, "client", &[])
    }

    /// A certificate whose subject's CN is `cn` and whose subjectAltName holds `sans`
    /// (`(tag, name)`: 0x81 email, 0x82 DNS, 0x87 an IP address).
    fn with_names(version: bool, after: Vec<u8>, cn: &str, sans: &[(u8, &str)]) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(der(0xa0, &der(0x02, &[2])));
        }
        tbs.extend(der(0x02, &[1]));
        tbs.extend(der(0x30, &[]));
        tbs.extend(der(0x30, &[0x31; 200]));
        let mut validity = der(0x17, b"250101000000Z");
        validity.extend(after);
        tbs.extend(der(0x30, &validity));
        let mut country = der(0x06, &[0x55, 0x04, 0x06]);
        country.extend(der(0x13, b"FR"));
        let mut common = der(0x06, &[0x55, 0x04, 0x03]);
        common.extend(der(0x0c, cn.as_bytes()));
        let mut subject = der(0x31, &der(0x30, &country));
        subject.extend(der(0x31, &der(0x30, &common)));
        tbs.extend(der(0x30, &subject));
        tbs.extend(der(0x30, &[0x05, 0x00]));
        if !sans.is_empty() {
            let names: Vec<u8> = sans
                .iter()
                .flat_map(|(tag, name)| der(*tag, name.as_bytes()))
                .collect();
            let mut basic = der(0x06, &[0x55, 0x1d, 0x13]);
            basic.extend(der(0x04, &der(0x30, &[])));
            let mut san = der(0x06, &[0x55, 0x1d, 0x11]);
            san.extend(der(0x01, &[0xff]));
            san.extend(der(0x04, &der(0x30, &names)));
            let mut list = der(0x30, &basic);
            list.extend(der(0x30, &san));
            tbs.extend(der(0xa3, &der(0x30, &list)));
        }
        der(0x30, &der(0x30, &tbs))
    }

    #[test]
    fn identity_is_the_alt_names_or_else_the_common_name() {
        let after = || der(0x17, b"270102030405Z");
        let plain = with_names(true, after(), "alice", &[]);
        assert_eq!(identity(&plain), ["alice"]);
        assert_eq!(subject(&plain).as_deref(), Some("alice"));
        let sans = [
            (0x81, "bob@example.org"),
            (0x87, "\x7f\0\0\x01"),
            (0x82, "bob"),
        ];
        let with_san = with_names(true, after(), "Bob Smith", &sans);
        assert_eq!(identity(&with_san), ["bob@example.org", "bob"]);
        assert_eq!(subject(&with_san).as_deref(), Some("Bob Smith"));
        assert_eq!(not_after(&with_san), Some(1_798_859_045));
        for cut in 0..with_san.len() {
            let _ = identity(&with_san[..cut]);
        }
        assert!(identity(b"not a certificate").is_empty());
    }

    #[test]
    fn not_after_is_read_in_both_time_forms() {
        let utc = certificate(true, der(0x17, b"270102030405Z"));
        assert_eq!(not_after(&utc), Some(1_798_859_045));
        let generalized = certificate(false, der(0x18, b"20991231235959Z"));
        assert_eq!(not_after(&generalized), Some(4_102_444_799));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn anything_else_is_none_never_a_panic() {
        let good = certificate(true, der(0x17, b"270102030405Z"));
        for cut in 0..good.len() {
            assert_eq!(not_after(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            not_after(&certificate(true, der(0x17, b"2701020304Z"))),
            None
        );
        assert_eq!(
            not_after(&certificate(true, der(0x17, b"271302030405Z"))),
            None
        );
        assert_eq!(
            not_after(&certificate(true, der(0x02, b"270102030405Z"))),
            None
        );
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(b""), None);
    }
}

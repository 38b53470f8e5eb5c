//! When a certificate stops being valid: its `notAfter`, read from the DER of an X.509
//! certificate (RFC 5280) by walking just far enough into its structure, for the
//! `achat_tls_certificate_expiry_timestamp_seconds` gauge that an alert fires on weeks
//! before a renewal is missed. Pure: bytes in, a Unix time out; anything unexpected is
//! `None`, never a panic.

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

/// The `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, validity, _) = element(tbs)? else {
        return None;
    };
    let after = element(validity)?.2;
    let (tag, time, _) = element(after)?;
    let time = std::str::from_utf8(time).ok()?;
    match tag {
        0x17 => utc_time(time),
        0x18 => generalized_time(time),
        _ => None,
    }
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
        tbs.extend(der(0x30, &[]));
        der(0x30, &der(0x30, &tbs))
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

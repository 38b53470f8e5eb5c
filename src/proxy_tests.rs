//! The PROXY header parser against headers built byte by byte from the spec, on every
//! prefix (the connection must never read past a header) and on generated input.

use super::*;
use proptest::prelude::*;

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family << 4 | 1);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_inet(src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&8080u16.to_be_bytes());
    body.extend_from_slice(tlvs);
    v2(1, 1, &body)
}

fn complete(buf: &[u8]) -> (usize, Header) {
    match parse(buf) {
        Parse::Complete { len, header } => (len, header),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn addr(s: &str) -> Header {
    Header::Proxied(s.parse().unwrap())
}

#[test]
fn v1_headers_give_the_client_address_and_their_length() {
    let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8080\r\nalice\n";
    assert_eq!(complete(line), (42, addr("192.0.2.7:51234")));
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 8080\r\n";
    assert_eq!(complete(line), (line.len(), addr("[2001:db8::7]:65535")));
    assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (15, Header::Local));
    let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\nbob\n";
    assert_eq!(complete(unknown), (unknown.len() - 4, Header::Local));
}

#[test]
fn malformed_v1_headers_are_refused_with_their_reason() {
    for bad in [
        &b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n"[..],
        b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8080 9\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
        b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 +80 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 080 2\r\n",
        b"PROXY TCP4  192.0.2.7 10.0.0.1 80 2\r\n",
        b"PROXY UDP4 192.0.2.7 10.0.0.1 80 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 80 2\n",
        b"PROXY \r\n",
    ] {
        assert_eq!(
            parse(bad),
            Parse::Invalid(Invalid::V1Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 100]].concat();
    assert_eq!(parse(&long), Parse::Invalid(Invalid::V1TooLong));
    assert_eq!(parse(b"alice\n"), Parse::Invalid(Invalid::NotProxy));
    assert_eq!(parse(b"PROXYZ"), Parse::Invalid(Invalid::NotProxy));
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\n"),
        Parse::Invalid(Invalid::NotProxy)
    );
}

#[test]
fn v2_headers_give_the_client_address_and_skip_their_tlvs() {
    let h = v2_inet([192, 0, 2, 7], 51234, &[]);
    assert_eq!(complete(&h), (28, addr("192.0.2.7:51234")));
    // A unique-id TLV (type 0x05) and trailing client bytes.
    let mut h = v2_inet([198, 51, 100, 9], 1, &[0x05, 0, 3, b'a', b'b', b'c']);
    let len = h.len();
    h.extend_from_slice(b"alice\n");
    assert_eq!(complete(&h), (len, addr("198.51.100.9:1")));

    let mut body = vec![0u8; 36];
    body[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    body[32..34].copy_from_slice(&4242u16.to_be_bytes());
    assert_eq!(complete(&v2(1, 2, &body)), (52, addr("[2001:db8::7]:4242")));

    // LOCAL (a health check), UNSPEC and UNIX: the socket's own address stands.
    assert_eq!(complete(&v2(0, 0, &[])), (16, Header::Local));
    assert_eq!(complete(&v2(0, 1, &[0; 12])), (28, Header::Local));
    assert_eq!(complete(&v2(1, 0, &[])), (16, Header::Local));
    assert_eq!(complete(&v2(1, 3, &[0; 216])), (232, Header::Local));
    // UDP over IPv4, and a family the spec lacks: refused; LOCAL ignores both.
    for (byte, command) in [(0x12, 1), (0x41, 1), (0x13, 1)] {
        let mut header = v2(command, 1, &[0; 12]);
        header[13] = byte;
        assert_eq!(
            parse(&header),
            Parse::Invalid(Invalid::V2Unsupported),
            "{byte:#x}"
        );
    }
    let mut local = v2(0, 1, &[0; 12]);
    local[13] = 0x12;
    assert_eq!(complete(&local), (28, Header::Local));
}

#[test]
fn unusable_v2_headers_are_refused_with_their_reason() {
    let mut wrong_version = v2_inet([192, 0, 2, 7], 1, &[]);
    wrong_version[12] = 0x11;
    assert_eq!(
        parse(&wrong_version),
        Parse::Invalid(Invalid::V2Unsupported)
    );
    assert_eq!(
        parse(&v2(2, 1, &[0; 12])),
        Parse::Invalid(Invalid::V2Unsupported)
    );
    assert_eq!(
        parse(&v2(1, 1, &[0; 11])),
        Parse::Invalid(Invalid::V2Truncated)
    );
    assert_eq!(
        parse(&v2(1, 2, &[0; 35])),
        Parse::Invalid(Invalid::V2Truncated)
    );
    // The length is read before the body arrives: too long is refused at once.
    let long = v2(1, 1, &[0; 1025]);
    assert_eq!(parse(&long[..16]), Parse::Invalid(Invalid::V2TooLong));
    assert_eq!(complete(&v2(1, 1, &[0; 1024])).0, MAX_V2);
    assert_eq!(
        parse(b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\x0c"),
        Parse::Invalid(Invalid::NotProxy)
    );
}

/// Every prefix of a header asks for more, and never for more than the header holds: the
/// connection reads `at_least` bytes at a time and so never eats a client's first line.
fn every_prefix_asks_for_no_more_than_the_header(header: &[u8]) {
    for cut in 0..header.len() {
        match parse(&header[..cut]) {
            Parse::Incomplete { at_least } => assert!(
                cut < at_least && at_least <= header.len(),
                "prefix {cut} of {}: at_least {at_least}",
                header.len()
            ),
            other => panic!(
                "prefix {cut} of {:?}: {other:?}",
                String::from_utf8_lossy(header)
            ),
        }
    }
}

#[test]
fn prefixes_of_headers_never_ask_to_read_past_them() {
    every_prefix_asks_for_no_more_than_the_header(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8080\r\n");
    every_prefix_asks_for_no_more_than_the_header(b"PROXY UNKNOWN\r\n");
    every_prefix_asks_for_no_more_than_the_header(&v2_inet([192, 0, 2, 7], 1, &[1, 0, 2, 104, 50]));
    every_prefix_asks_for_no_more_than_the_header(&v2(0, 0, &[]));
}

/// A header as a balancer would write it, with the address it carries.
fn any_header() -> impl Strategy<Value = (Vec<u8>, Header)> {
    let v1_4 = (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
        let src = Ipv4Addr::from(ip);
        let line = format!("PROXY TCP4 {src} 10.0.0.1 {port} 8080\r\n");
        (
            line.into_bytes(),
            Header::Proxied(SocketAddr::new(src.into(), port)),
        )
    });
    let v1_6 = (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
        let src = Ipv6Addr::from(ip);
        let line = format!("PROXY TCP6 {src} ::1 {port} 8080\r\n");
        (
            line.into_bytes(),
            Header::Proxied(SocketAddr::new(src.into(), port)),
        )
    });
    let v2_4 = (
        any::<[u8; 4]>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(ip, port, tlvs)| {
            let header = Header::Proxied(SocketAddr::new(Ipv4Addr::from(ip).into(), port));
            (v2_inet(ip, port, &tlvs), header)
        });
    prop_oneof![v1_4, v1_6, v2_4]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// A header followed by the client's bytes: the header is found whole, with its
    /// address, and reading it in the sizes `parse` asks for stops exactly at its end.
    #[test]
    fn headers_are_read_exactly(
        (header, expected) in any_header(),
        rest in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let stream = [header.clone(), rest].concat();
        prop_assert_eq!(parse(&stream), Parse::Complete { len: header.len(), header: expected });
        let mut have = 0;
        loop {
            match parse(&stream[..have]) {
                Parse::Incomplete { at_least } => {
                    prop_assert!(at_least > have && at_least <= header.len());
                    have = at_least;
                }
                Parse::Complete { len, .. } => {
                    prop_assert_eq!(len, header.len());
                    prop_assert_eq!(have, len);
                    break;
                }
                Parse::Invalid(why) => prop_assert!(false, "{}", why),
            }
        }
    }

    /// Anything at all: no panic, and a complete header never claims more than was given.
    #[test]
    fn any_input_is_judged_without_panic(
        mut input in prop::collection::vec(any::<u8>(), 0..200),
        start in 0usize..3,
    ) {
        // Start most inputs like a header, so the parser's deeper branches are reached.
        match start {
            0 => input.splice(0..0, V2_SIGNATURE.iter().copied()).for_each(drop),
            1 => input.splice(0..0, b"PROXY ".iter().copied()).for_each(drop),
            _ => {}
        }
        match parse(&input) {
            Parse::Complete { len, .. } => prop_assert!(len <= input.len()),
            Parse::Incomplete { at_least } => prop_assert!(at_least > input.len()),
            Parse::Invalid(_) => {}
        }
    }
}

#[test]
fn sources_are_addresses_or_networks() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let one: Source = "10.0.0.5".parse().unwrap();
    assert!(one.contains(ip("10.0.0.5")) && !one.contains(ip("10.0.0.6")));
    assert!(
        one.contains(ip("::ffff:10.0.0.5")),
        "a dual-stack socket's view of it"
    );
    let net: Source = "10.1.0.0/16".parse().unwrap();
    assert!(net.contains(ip("10.1.255.3")) && !net.contains(ip("10.2.0.1")));
    assert!(!net.contains(ip("2001:db8::1")));
    let all: Source = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("192.0.2.1")));
    let v6: Source = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains(ip("2001:db8:1::9")) && !v6.contains(ip("2001:db9::1")));
    assert_eq!(v6.to_string(), "2001:db8::/32");
    assert_eq!(one.to_string(), "10.0.0.5/32");
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "::/129",
        "10.0.0.0/+8",
        "10.0.0.0/",
        "host",
        "",
    ] {
        let err = bad.parse::<Source>().unwrap_err().to_string();
        assert!(
            err.contains("is not an address or a network"),
            "{bad}: {err}"
        );
    }
}

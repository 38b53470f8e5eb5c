//! Client addresses as the per-address limits count them (`max_connections_per_ip`,
//! `[auth] max_failures_per_ip`): one pure function, so that both limits agree on what
//! "one address" is.
//!
//! - An IPv4 address seen through a dual-stack socket (`::ffff:a.b.c.d`) is the IPv4
//!   address `a.b.c.d`: a client is one address whichever listener it reached.
//! - An IPv6 address stands for its /64: one host gets a whole /64 from its provider and
//!   can change addresses within it at will, so counting each address alone would let it
//!   pass every per-address limit.

use std::net::{IpAddr, Ipv6Addr};

/// The bits of an IPv6 address that name its network: a /64.
const V6_PREFIX_BITS: u32 = 64;

/// The key the per-address limits count `ip` under: the IPv4 address of a v4-mapped
/// IPv6 address, the /64 network (host bits zero) of any other IPv6 address, and an
/// IPv4 address itself.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - V6_PREFIX_BITS);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        client_key(s.parse().unwrap()).to_string()
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        assert_eq!(key("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("127.0.0.1"), "127.0.0.1");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn an_ipv6_address_stands_for_its_64() {
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::1"), "::");
    }
}

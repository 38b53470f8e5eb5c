//! The per-address connect rate (`[server] connects_per_address` in
//! `connects_window`): an address that connects more often is refused with a clear line
//! until its window ends, as IRC servers throttle reconnect loops (ergo: 32 in 10
//! minutes). Listed addresses (`connects_exempt`: a balancer, an office behind one NAT,
//! loopback by default) are never throttled. Addresses are counted by their client key
//! (IPv6 by its /64). Bounded: at most [`MAX_ADDRESSES`] are remembered; when full, those
//! whose window ended are forgotten, and if none has, all are (the throttle opens for a
//! moment rather than grow).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client_key::client_key;
use crate::proxy::Source;

/// The most addresses remembered at once (about 40 bytes each).
pub const MAX_ADDRESSES: usize = 100_000;

/// The throttle of one daemon.
pub struct Throttle {
    /// Connects allowed per address in one window.
    max: u32,
    /// The window's length.
    window: Duration,
    /// Never throttled.
    exempt: Vec<Source>,
    /// Each address's window start and connects in it.
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// `None` when `max` is 0 (the throttle is off).
    pub fn new(max: u32, window: Duration, exempt: Vec<Source>) -> Option<Throttle> {
        (max > 0).then(|| Throttle {
            max,
            window,
            exempt,
            seen: Mutex::default(),
        })
    }

    /// Counts a connect from `ip` at `now`; false when it is over the rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.exempt.iter().any(|net| net.contains(ip)) {
            return true;
        }
        let key = client_key(ip);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_ADDRESSES && !seen.contains_key(&key) {
            let window = self.window;
            seen.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if seen.len() >= MAX_ADDRESSES {
                seen.clear();
            }
        }
        let (start, count) = seen.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= self.window {
            (*start, *count) = (now, 0);
        }
        *count = count.saturating_add(1);
        *count <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_rate_waits_for_its_window() {
        let ten_minutes = Duration::from_secs(600);
        let loopback = "127.0.0.0/8".parse().unwrap();
        let t = Throttle::new(3, ten_minutes, vec![loopback]).unwrap();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| t.allow(a, t0)));
        assert!(!t.allow(a, t0));
        assert!(!t.allow("::ffff:192.0.2.1".parse().unwrap(), t0));
        assert!(t.allow("192.0.2.2".parse().unwrap(), t0));
        assert!(t.allow(a, t0 + ten_minutes));
        // Exempt addresses are never counted.
        assert!((0..100).all(|_| t.allow("127.0.0.5".parse().unwrap(), t0)));
        // IPv6 by its /64.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!((0..3).all(|i| t.allow(v6(&format!("2001:db8::{i}")), t0)));
        assert!(!t.allow(v6("2001:db8::ffff"), t0));
        assert!(Throttle::new(0, ten_minutes, Vec::new()).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::new(1, Duration::from_secs(600), Vec::new()).unwrap();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            t.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(t.seen.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}

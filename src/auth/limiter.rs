//! Failed logins per address (ARCHITECTURE §9): an address with `max_failures_per_ip` failures
//! within a minute is refused outright, without a hash check, until its minute is over.
//!
//! Addresses are counted by their [`client_key`]: `::ffff:a.b.c.d` is `a.b.c.d`, and an
//! IPv6 address stands for its /64.
//!
//! Pure and clock-driven: every call takes `now`. Memory is bounded by
//! [`MAX_ADDRESSES`]: beyond it, the address whose window began first is forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::client_key::client_key;

/// How long failures count against an address, from its first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (about 64 bytes each).
pub const MAX_ADDRESSES: usize = 10_000;

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Check the password. The attempt counts as a failure until
    /// [`Limiter::succeeded`] or [`Limiter::unchecked`] says otherwise, so that attempts
    /// still being checked count too: a burst from one address gets at most `max` hash
    /// checks. `suspect` is true when the address had failures (or attempts being
    /// checked) in its window already: its check waits behind those of clean addresses.
    Check { suspect: bool },
    /// Refuse without a check. `first` is true once per window, for one log line per
    /// address rather than one per attempt.
    Refuse { first: bool },
}

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When its first failure arrived: failures count until `since + WINDOW`.
    since: Instant,
    /// Failures (and attempts being checked) since then.
    failures: u32,
    /// Whether an attempt was refused in this window already (for the log).
    refused: bool,
}

/// The failure counts of every address with recent failures.
#[derive(Debug)]
pub struct Limiter {
    /// Failures allowed per address within [`WINDOW`].
    max: u32,
    /// Addresses tracked at most; beyond it, the oldest window is forgotten.
    cap: usize,
    /// Each address with a window still open.
    table: HashMap<IpAddr, Window>,
    /// Addresses in the order their windows began, to expire and evict the oldest first.
    /// A record whose address has since begun a new window, or been forgiven, is stale
    /// and skipped; stale records are dropped as they expire or in a compaction.
    order: VecDeque<(IpAddr, Instant)>,
}

impl Limiter {
    pub fn new(max: u32) -> Limiter {
        Limiter::with_cap(max, MAX_ADDRESSES)
    }

    pub fn with_cap(max: u32, cap: usize) -> Limiter {
        Limiter {
            max,
            cap: cap.max(1),
            table: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Changes the number of failures allowed (on reload); counts so far stay.
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Decides on an attempt from `ip` at `now`, counting it as a failure if checked.
    pub fn attempt(&mut self, ip: IpAddr, now: Instant) -> Attempt {
        let ip = client_key(ip);
        self.expire(now);
        if let Some(window) = self.table.get_mut(&ip) {
            if now.saturating_duration_since(window.since) < WINDOW {
                if window.failures >= self.max {
                    let first = !window.refused;
                    window.refused = true;
                    return Attempt::Refuse { first };
                }
                let suspect = window.failures > 0;
                window.failures += 1;
                return Attempt::Check { suspect };
            }
            self.table.remove(&ip);
        }
        while self.table.len() >= self.cap {
            self.evict_oldest();
        }
        self.table.insert(
            ip,
            Window {
                since: now,
                failures: 1,
                refused: false,
            },
        );
        self.order.push_back((ip, now));
        if self.order.len() > 2 * self.cap {
            self.compact();
        }
        Attempt::Check { suspect: false }
    }

    /// The checked attempt from `ip` was right: it no longer counts as a failure.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.unchecked(ip);
    }

    /// The attempt from `ip` never reached its hash check (its client timed out or left
    /// while it waited, the drain began, or the queue was full): it is no failure.
    pub fn unchecked(&mut self, ip: IpAddr) {
        let ip = client_key(ip);
        if let Some(window) = self.table.get_mut(&ip) {
            window.failures = window.failures.saturating_sub(1);
            if window.failures == 0 && !window.refused {
                self.table.remove(&ip);
            }
        }
    }

    /// Forgets every window that has ended.
    fn expire(&mut self, now: Instant) {
        while let Some(&(ip, since)) = self.order.front() {
            if now.saturating_duration_since(since) < WINDOW {
                break;
            }
            self.order.pop_front();
            if self.table.get(&ip).is_some_and(|w| w.since == since) {
                self.table.remove(&ip);
            }
        }
    }

    /// Forgets the address whose window began first.
    fn evict_oldest(&mut self) {
        while let Some((ip, since)) = self.order.pop_front() {
            if self.table.get(&ip).is_some_and(|w| w.since == since) {
                self.table.remove(&ip);
                return;
            }
        }
        // Every record was stale, yet the table is full: cannot happen, but never loop.
        self.table.clear();
    }

    /// Drops the stale records, which successes can pile up.
    fn compact(&mut self) {
        let table = &self.table;
        self.order
            .retain(|(ip, since)| table.get(ip).is_some_and(|w| w.since == *since));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(a: Attempt) -> bool {
        matches!(a, Attempt::Check { .. })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn more_than_max_failures_a_minute_are_refused_until_the_minute_ends() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3);
        for _ in 0..3 {
            assert!(checked(l.attempt(ip(1), t0)));
        }
        assert_eq!(l.attempt(ip(1), t0), Attempt::Refuse { first: true });
        let later = t0 + Duration::from_secs(59);
        assert_eq!(l.attempt(ip(1), later), Attempt::Refuse { first: false });
        assert_eq!(
            l.attempt(ip(2), later),
            Attempt::Check { suspect: false },
            "others are not affected"
        );
        let after = t0 + WINDOW;
        assert!(checked(l.attempt(ip(1), after)), "a new minute");
    }

    #[test]
    fn a_success_does_not_count_as_a_failure() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2);
        for _ in 0..10 {
            assert!(checked(l.attempt(ip(1), t0)));
            l.succeeded(ip(1));
        }
        assert!(
            l.is_empty(),
            "nothing is kept for an address that only succeeds"
        );
        assert!(checked(l.attempt(ip(1), t0)));
        assert!(checked(l.attempt(ip(1), t0)));
        assert_eq!(l.attempt(ip(1), t0), Attempt::Refuse { first: true });
    }

    #[test]
    fn attempts_being_checked_count_against_the_limit() {
        let t0 = Instant::now();
        let mut l = Limiter::new(5);
        let checked = (0..200).filter(|_| checked(l.attempt(ip(1), t0))).count();
        assert_eq!(checked, 5);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_address_goes_first() {
        let t0 = Instant::now();
        let mut l = Limiter::with_cap(1, 100);
        for n in 0..1000 {
            l.attempt(ip(n), t0 + Duration::from_millis(n as u64));
            assert!(l.len() <= 100);
            assert!(l.order.len() <= 200);
        }
        // The newest 100 are still limited; the first ones were forgotten.
        let now = t0 + Duration::from_millis(1000);
        assert_eq!(l.attempt(ip(999), now), Attempt::Refuse { first: true });
        assert!(checked(l.attempt(ip(0), now)));
    }

    #[test]
    fn successes_do_not_pile_up_records() {
        let t0 = Instant::now();
        let mut l = Limiter::with_cap(3, 10);
        for n in 0..10_000 {
            l.attempt(ip(n % 7), t0);
            l.succeeded(ip(n % 7));
            assert!(l.order.len() <= 20);
        }
    }

    #[test]
    fn ended_windows_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1);
        for n in 0..50 {
            l.attempt(ip(n), t0);
        }
        assert_eq!(l.len(), 50);
        l.attempt(ip(1000), t0 + WINDOW);
        assert_eq!(l.len(), 1);
        assert_eq!(l.order.len(), 1);
    }

    #[test]
    fn an_address_with_failures_is_suspect_and_an_unchecked_attempt_is_no_failure() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2);
        assert_eq!(l.attempt(ip(1), t0), Attempt::Check { suspect: false });
        assert_eq!(l.attempt(ip(1), t0), Attempt::Check { suspect: true });
        // Neither reached its check (a timeout in the queue): both are forgotten.
        l.unchecked(ip(1));
        l.unchecked(ip(1));
        assert!(l.is_empty());
        assert_eq!(l.attempt(ip(1), t0), Attempt::Check { suspect: false });
    }

    #[test]
    fn mapped_and_plain_ipv4_are_one_address_and_ipv6_counts_by_64() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2);
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(checked(l.attempt(v4, t0)));
        assert!(checked(l.attempt(mapped, t0)));
        assert_eq!(l.attempt(v4, t0), Attempt::Refuse { first: true });
        let a: IpAddr = "2001:db8:0:7::1".parse().unwrap();
        let b: IpAddr = "2001:db8:0:7:ffff::9".parse().unwrap();
        assert!(checked(l.attempt(a, t0)));
        assert!(checked(l.attempt(b, t0)));
        assert_eq!(l.attempt(a, t0), Attempt::Refuse { first: true });
        let other: IpAddr = "2001:db8:0:8::1".parse().unwrap();
        assert!(checked(l.attempt(other, t0)));
    }
}

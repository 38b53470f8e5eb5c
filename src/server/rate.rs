//! A client's message rate (`[limits] messages_per_second`, `message_burst`), counted in
//! deliveries: a line to 64 names costs 64. A token bucket that may go into debt: what a
//! client sent is always routed, and the debt is paid by not reading its socket for a
//! while, so TCP slows the client down and nothing it sent is lost. Pure: the reader asks
//! it how long to wait and does the waiting.

use std::time::{Duration, Instant};

use crate::config::Limits;

/// One connection's bucket: kept small, as every connection holds one (the rate and the
/// burst are read from the connection's limits at each take).
#[derive(Debug)]
pub struct Bucket {
    /// Deliveries the client may still cause at once; negative while it owes.
    level: f64,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// The bucket of a connection accepted under `limits`; `None` when the limit is off
    /// (the reader then pays nothing for it).
    pub fn new(limits: &Limits, now: Instant) -> Option<Bucket> {
        (limits.messages_per_second > 0).then(|| Bucket {
            level: limits.message_burst.max(1) as f64,
            at: now,
        })
    }

    /// How many deliveries the client may cause now under `limits` (those the bucket was
    /// made with), at least one; or, when it owes, how long it must wait (not be read)
    /// before it may cause one.
    pub fn allowance(&mut self, limits: &Limits, now: Instant) -> Result<usize, Duration> {
        let rate = limits.messages_per_second.max(1) as f64;
        let burst = limits.message_burst.max(1) as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.level = (self.level + elapsed * rate).min(burst);
        if self.level >= 1.0 {
            Ok(self.level as usize)
        } else {
            Err(Duration::from_secs_f64((1.0 - self.level) / rate))
        }
    }

    /// Takes `deliveries` from the bucket (more than the allowance puts it in debt: one
    /// line to more names than are left is routed whole, and paid for by waiting).
    pub fn spend(&mut self, deliveries: usize) {
        self.level -= deliveries as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32) -> Limits {
        Limits {
            messages_per_second: rate,
            message_burst: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_is_free_then_the_rate_applies() {
        let t0 = Instant::now();
        let l = limits(10, 20);
        let mut b = Bucket::new(&l, t0).unwrap();
        assert_eq!(b.allowance(&l, t0), Ok(20));
        b.spend(20);
        // Empty: one more delivery is a tenth of a second away.
        let wait = b.allowance(&l, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.allowance(&l, t0 + wait), Ok(1));
        b.spend(1);
        // A long pause refills the burst, never more.
        assert_eq!(b.allowance(&l, t0 + Duration::from_secs(100)), Ok(20));
    }

    #[test]
    fn a_line_to_more_names_than_are_left_is_paid_by_waiting() {
        let t0 = Instant::now();
        let l = limits(100, 64);
        let mut b = Bucket::new(&l, t0).unwrap();
        b.spend(60);
        assert_eq!(b.allowance(&l, t0), Ok(4));
        b.spend(64);
        // 60 owed, and one more to allow: 0.61 s.
        let wait = b.allowance(&l, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.61).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(Bucket::new(&limits(0, 10), Instant::now()).is_none());
    }
}

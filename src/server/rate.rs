//! A client's message rate (`[limits] messages_per_second`, `message_burst`), counted in
//! deliveries: a line to 64 names costs 64. A token bucket that may go into debt: a line
//! is routed whole, and the debt is paid by not reading the client's socket for a while,
//! so TCP slows the client down and nothing it sent is lost. Pure: the reader asks it how
//! much it may route, or how long to wait, and does the waiting.

use std::time::Duration;

use crate::config::Limits;

/// One connection's bucket: eight bytes, as every connection holds one (the rate and the
/// burst are read from the connection's limits at each look, and time is counted from
/// the connection's accept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Deliveries the client may still cause at once; negative while it owes.
    level: f32,
    /// When `level` was last brought up to date, in milliseconds since the accept
    /// (wrapping after 49 days, when a bucket is full anyway).
    at_ms: u32,
}

impl Bucket {
    /// A full bucket for a connection accepted under `limits`.
    pub fn new(limits: &Limits) -> Bucket {
        Bucket {
            level: limits.message_burst.max(1) as f32,
            at_ms: 0,
        }
    }

    /// How many deliveries the client may cause now (`since` its accept) under `limits`
    /// (those the bucket was made with), at least one, and no bound when the limit is
    /// off; or, when it owes, how long it must wait (not be read) before it may cause one.
    pub fn allowance(&mut self, limits: &Limits, since: Duration) -> Result<usize, Duration> {
        if limits.messages_per_second == 0 {
            return Ok(usize::MAX);
        }
        let rate = limits.messages_per_second as f32;
        let burst = limits.message_burst.max(1) as f32;
        let now_ms = since.as_millis() as u32;
        let elapsed = now_ms.wrapping_sub(self.at_ms) as f32 / 1000.0;
        self.at_ms = now_ms;
        self.level = (self.level + elapsed * rate).min(burst);
        if self.level >= 1.0 {
            Ok(self.level as usize)
        } else {
            // At least a millisecond: time is counted in them.
            let wait = Duration::from_secs_f32((1.0 - self.level) / rate);
            Err(wait.max(Duration::from_millis(1)))
        }
    }

    /// Takes `deliveries` from the bucket (more than the allowance puts it in debt: one
    /// line to more names than are left is routed whole, and paid for by waiting).
    pub fn spend(&mut self, deliveries: usize) {
        self.level -= deliveries as f32;
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

    fn near(d: Duration, secs: f64) -> bool {
        (d.as_secs_f64() - secs).abs() < 0.002
    }

    #[test]
    fn a_burst_is_free_then_the_rate_applies() {
        let l = limits(10, 20);
        let mut b = Bucket::new(&l);
        let t0 = Duration::from_secs(3);
        assert_eq!(b.allowance(&l, t0), Ok(20));
        b.spend(20);
        // Empty: one more delivery is a tenth of a second away.
        let wait = b.allowance(&l, t0).unwrap_err();
        assert!(near(wait, 0.1), "{wait:?}");
        assert_eq!(b.allowance(&l, t0 + wait), Ok(1));
        b.spend(1);
        // A long pause refills the burst, never more.
        assert_eq!(b.allowance(&l, t0 + Duration::from_secs(100)), Ok(20));
    }

    #[test]
    fn a_line_to_more_names_than_are_left_is_paid_by_waiting() {
        let l = limits(100, 64);
        let mut b = Bucket::new(&l);
        b.spend(60);
        assert_eq!(b.allowance(&l, Duration::ZERO), Ok(4));
        b.spend(64);
        // 60 owed, and one more to allow: 0.61 s.
        let wait = b.allowance(&l, Duration::ZERO).unwrap_err();
        assert!(near(wait, 0.61), "{wait:?}");
    }

    #[test]
    fn zero_turns_it_off_and_the_bucket_is_small() {
        let l = limits(0, 10);
        let mut b = Bucket::new(&l);
        b.spend(1_000_000);
        assert_eq!(b.allowance(&l, Duration::ZERO), Ok(usize::MAX));
        assert_eq!(std::mem::size_of::<Bucket>(), 8);
    }
}

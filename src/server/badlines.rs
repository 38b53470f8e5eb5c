//! The rate at which one connection may send lines the daemon refuses (ARCHITECTURE §1, "bad
//! lines faster than a small documented rate"): a leaky bucket, pure and clock-driven so
//! it is tested without sleeping.
//!
//! Every refused line costs the daemon an `error:` answer in the sender's queue, and an
//! unknown recipient costs one per name. Without a bound, 64 KiB of `\n` became 65 536
//! answers; with it, a connection gets at most [`BURST`] answers at once and
//! [`PER_SECOND`] a second after that, then `error: too many bad lines` and a close.

use std::time::Instant;

/// What `Outbox::bad_line` decided about one refused line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    /// Within the rate: answer it.
    Answer,
    /// This line went over the rate: answer `error: too many bad lines` and close.
    TooMany,
    /// The connection is already being closed for it: answer nothing.
    Closing,
}

/// Bad lines a connection may send at once before the rate applies.
pub const BURST: f32 = 20.0;
/// Bad lines a second a connection may keep sending.
pub const PER_SECOND: f32 = 10.0;

/// One connection's bucket: it fills by one per bad line and empties at [`PER_SECOND`].
#[derive(Debug, Default)]
pub struct BadLines {
    /// Bad lines not yet leaked out of the bucket.
    level: f32,
    /// When `level` was last brought up to date; `None` before the first bad line, so an
    /// idle connection never reads the clock.
    at: Option<Instant>,
}

impl BadLines {
    /// Counts one bad line at `now`; false once the connection is over the rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let leaked = match self.at {
            Some(at) => now.saturating_duration_since(at).as_secs_f32() * PER_SECOND,
            None => 0.0,
        };
        self.at = Some(now);
        self.level = (self.level - leaked).max(0.0) + 1.0;
        self.level <= BURST
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_and_the_next_line_does_not() {
        let t = Instant::now();
        let mut bad = BadLines::default();
        for i in 0..BURST as usize {
            assert!(bad.allow(t), "line {i} of the burst");
        }
        assert!(!bad.allow(t));
    }

    #[test]
    fn the_rate_refills_the_bucket() {
        let t = Instant::now();
        let mut bad = BadLines::default();
        for _ in 0..BURST as usize {
            assert!(bad.allow(t));
        }
        // One second later, PER_SECOND lines leaked out: that many more pass.
        let later = t + Duration::from_secs(1);
        for i in 0..PER_SECOND as usize {
            assert!(bad.allow(later), "line {i} after a second");
        }
        assert!(!bad.allow(later));
    }

    #[test]
    fn a_steady_rate_under_the_limit_passes_forever() {
        let t = Instant::now();
        let mut bad = BadLines::default();
        for i in 0..10_000u64 {
            let now = t + Duration::from_millis(i * 120); // about 8 a second
            assert!(bad.allow(now), "line {i}");
        }
    }

    #[test]
    fn a_steady_rate_over_the_limit_is_caught() {
        let t = Instant::now();
        let mut bad = BadLines::default();
        let caught = (0..1000u64)
            .map(|i| t + Duration::from_millis(i * 50)) // 20 a second
            .position(|now| !bad.allow(now));
        // 20 a second fills the bucket by 10 a second: full after about two seconds.
        let caught = caught.expect("a flood at twice the rate must be caught");
        assert!((30..=50).contains(&caught), "caught at line {caught}");
    }
}

//! `achat_delivery_queue_wait_seconds`: how long deliveries wait in their recipient's
//! queue before they are on the socket. It is observed on the delivery path, once per
//! write of a batch, so it is a few atomic adds and no lock (the registry's own histogram
//! takes a lock per observation); each write counts once per delivery it carried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The first bucket's upper bound: 100 µs, in nanoseconds.
const FIRST_NS: u64 = 100_000;
/// Bucket bounds double from [`FIRST_NS`]: 100 µs to about 3.3 s, then `+Inf`.
const BUCKETS: usize = 16;

/// A histogram of queue waits with lock-free observations.
#[derive(Debug, Clone, Default)]
pub struct QueueWait {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Deliveries per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
    /// Sum of every delivery's wait, in nanoseconds.
    sum_ns: AtomicU64,
    /// Deliveries observed.
    count: AtomicU64,
}

/// The bucket a wait of `ns` falls in: the first whose bound is at least `ns`.
fn bucket(ns: u64) -> usize {
    let q = ns.saturating_sub(1) / FIRST_NS;
    ((u64::BITS - q.leading_zeros()) as usize).min(BUCKETS)
}

/// The upper bound of bucket `i`, in seconds.
fn bound(i: usize) -> f64 {
    (FIRST_NS << i) as f64 / 1e9
}

impl QueueWait {
    /// Registers `achat_delivery_queue_wait_seconds`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> QueueWait {
        let wait = QueueWait::default();
        registry.register_with_unit(
            "delivery_queue_wait",
            "Time deliveries waited from the moment their recipient's writer had lines to write until they were on the socket (each write counted once per delivery it carried)",
            prometheus_client::registry::Unit::Seconds,
            wait.clone(),
        );
        wait
    }

    /// Counts `deliveries` that each waited `ns` nanoseconds.
    pub fn observe(&self, ns: u64, deliveries: u64) {
        if deliveries == 0 {
            return;
        }
        let inner = &*self.inner;
        inner.buckets[bucket(ns)].fetch_add(deliveries, Ordering::Relaxed);
        inner
            .sum_ns
            .fetch_add(ns.saturating_mul(deliveries), Ordering::Relaxed);
        inner.count.fetch_add(deliveries, Ordering::Relaxed);
    }

    /// Deliveries observed so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for QueueWait {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let le = if i == BUCKETS {
                    f64::INFINITY
                } else {
                    bound(i)
                };
                (le, inner.buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        // The count is the buckets' own total, so a scrape racing an observation is
        // still a consistent histogram.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_falls_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(FIRST_NS), 0);
        assert_eq!(bucket(FIRST_NS + 1), 1);
        assert_eq!(bucket(2 * FIRST_NS), 1);
        assert_eq!(bucket(2 * FIRST_NS + 1), 2);
        assert_eq!(bucket(4 * FIRST_NS), 2);
        assert_eq!(bucket(FIRST_NS << (BUCKETS - 1)), BUCKETS - 1);
        assert_eq!(bucket((FIRST_NS << (BUCKETS - 1)) + 1), BUCKETS);
        assert_eq!(bucket(u64::MAX), BUCKETS);
        for ns in [1, 99_999, 100_001, 250_000, 1_000_000_000, 3_000_000_000] {
            let i = bucket(ns);
            assert!(ns as f64 / 1e9 <= bound(i), "{ns} under its bound");
            if i > 0 {
                assert!(ns as f64 / 1e9 > bound(i - 1), "{ns} over the previous");
            }
        }
    }

    #[test]
    fn each_delivery_of_a_write_counts_once() {
        let wait = QueueWait::default();
        wait.observe(150_000, 3);
        wait.observe(50_000, 0);
        wait.observe(10_000_000_000, 1);
        assert_eq!(wait.count(), 4);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("wait", "test", wait.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("wait_bucket{le=\"0.0001\"} 0\n"), "{text}");
        assert!(text.contains("wait_bucket{le=\"0.0002\"} 3\n"), "{text}");
        assert!(text.contains("wait_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("wait_count 4\n"), "{text}");
        assert!(text.contains("wait_sum 10.00045\n"), "{text}");
    }
}

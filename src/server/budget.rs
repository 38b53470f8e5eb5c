//! The memory bound on what is queued for clients (ARCHITECTURE §4b), shared by every
//! connection's queue: the per-queue bounds a slow consumer is judged by, and the total
//! (`outbound_total_bytes`) that all queues together stay within, cutting the
//! connections that hold the most first (as Redis 7's `maxmemory-clients` does).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::config::Limits;
use crate::metrics::{Metrics, SlowReason};

/// What the budget needs of a queue to cut the largest when the total is over.
/// (The queue is `outbox::Queue`; a trait keeps this file below it, not beside it.)
pub trait Held {
    /// Bytes queued now.
    fn queued(&self) -> usize;
    /// Whether it has been cut already.
    fn is_cut(&self) -> bool;
    /// Cuts it off for `why`; false when it was cut already.
    fn cut(&self, why: SlowReason) -> bool;
}

/// What every queue is measured against, and the running total of all of them. `Q` is
/// the queue type (`outbox::Queue`).
pub struct Budget<Q> {
    /// `outbound_queue_bytes`: a queue may stay above it for the grace, no longer. Also
    /// the most bytes of shared read buffers one queue may keep alive. Atomic, like the
    /// other bounds, so that a reload applies to every queue at once.
    soft: AtomicUsize,
    /// `outbound_queue_hard_bytes`: a queue above it is cut at once.
    hard: AtomicUsize,
    /// `slow_consumer_grace`, in nanoseconds of [`Budget::now`].
    grace_ns: AtomicU64,
    /// `outbound_total_bytes`: the bound on `total`.
    limit: AtomicUsize,
    /// The same bound, as the metrics show it.
    limit_gauge: Gauge,
    /// Bytes queued across every connection: the metrics gauge itself, so that keeping
    /// the total costs one atomic add per queued line and nothing at scrape time.
    total: Gauge,
    /// The clock of the queues' `over_since` stamps starts here.
    epoch: Instant,
    /// Every open queue by its connection's id (the one id a connection has, as in its
    /// log lines and in the router), to find the largest ones when the total is over the
    /// bound and to list them. Touched once when a connection opens and once when it
    /// closes, never per line.
    queues: Mutex<HashMap<u64, Weak<Q>>>,
    /// Set while one thread cuts queues down, so another that finds the total over the
    /// bound at the same moment does not cut a second round for the same excess.
    cutting: AtomicBool,
}

impl<Q: Held> Budget<Q> {
    pub fn new(limits: &Limits, metrics: &Metrics) -> Arc<Budget<Q>> {
        let budget = Arc::new(Budget {
            soft: AtomicUsize::new(0),
            hard: AtomicUsize::new(0),
            grace_ns: AtomicU64::new(0),
            limit: AtomicUsize::new(0),
            limit_gauge: metrics.operator.outbound_limit.clone(),
            total: metrics.outbound_queued.clone(),
            epoch: Instant::now(),
            queues: Mutex::default(),
            cutting: AtomicBool::new(false),
        });
        budget.set(limits);
        budget
    }

    /// Takes the bounds of `limits` (at start and on reload), for every queue at once.
    pub fn set(&self, limits: &Limits) {
        let grace = limits.slow_consumer_grace.as_nanos().min(u64::MAX as u128) as u64;
        self.soft
            .store(limits.outbound_queue_bytes, Ordering::Relaxed);
        self.hard
            .store(limits.outbound_queue_hard_bytes, Ordering::Relaxed);
        self.grace_ns.store(grace, Ordering::Relaxed);
        self.limit
            .store(limits.outbound_total_bytes, Ordering::Relaxed);
        self.limit_gauge
            .set(limits.outbound_total_bytes.min(i64::MAX as usize) as i64);
    }

    pub fn soft(&self) -> usize {
        self.soft.load(Ordering::Relaxed)
    }

    pub fn hard(&self) -> usize {
        self.hard.load(Ordering::Relaxed)
    }

    pub fn grace_ns(&self) -> u64 {
        self.grace_ns.load(Ordering::Relaxed)
    }

    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the budget was made, never 0 (0 means "not over" in a stamp).
    pub fn now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// The grace left to a queue that went over the soft bound at `since` (see `now`).
    pub fn grace_left(&self, since: u64) -> Duration {
        Duration::from_nanos(
            self.grace_ns()
                .saturating_sub(self.now().saturating_sub(since)),
        )
    }

    /// Registers the queue of connection `id`, until [`Budget::forget`].
    pub fn register(&self, id: u64, queue: Weak<Q>) {
        self.lock().insert(id, queue);
    }

    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Adds `n` queued bytes; true when the total is now over the bound.
    pub fn add(&self, n: usize) -> bool {
        let before = self.total.inc_by(n as i64);
        before + n as i64 > self.limit() as i64
    }

    pub fn sub(&self, n: usize) {
        self.total.dec_by(n as i64);
    }

    /// Bytes queued across every connection now.
    pub fn total(&self) -> usize {
        self.total.get().max(0) as usize
    }

    /// Every open queue (for `GET /connections`): a look at the list, which is touched
    /// once per connection opened or closed, never per line.
    pub fn queues(&self) -> Vec<Arc<Q>> {
        self.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// The open queue of connection `id`, if there is one.
    pub fn find(&self, id: u64) -> Option<Arc<Q>> {
        self.lock().get(&id).and_then(Weak::upgrade)
    }

    /// Cuts off the connections holding the most until the rest fits within the bound.
    /// Runs only when a queued line took the total over it, so its cost (a look at every
    /// queue) is paid once per excess, not per line.
    pub fn enforce(&self) {
        if self.cutting.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut largest: Vec<(usize, Arc<Q>)> = self
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .map(|q| (q.queued(), q))
            .filter(|(queued, q)| *queued > 0 && !q.is_cut())
            .collect();
        largest.sort_unstable_by_key(|(queued, _)| Reverse(*queued));
        let mut excess = self.total().saturating_sub(self.limit());
        for (held, queue) in largest {
            if excess == 0 {
                break;
            }
            if queue.cut(SlowReason::Total) {
                excess = excess.saturating_sub(held);
            }
        }
        self.cutting.store(false, Ordering::Release);
    }

    /// True when no queue is registered (for tests).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Q>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

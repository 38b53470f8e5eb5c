//! What the coordinator and the worker threads share: the run's phase, the
//! counters and window credits (atomics only), the eventfd wake-ups, and what
//! each worker hands back when it ends ([`WorkerStats`]).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::Mutex;
use std::time::Instant;

use super::checker::SeqChecker;
use super::histogram::Histogram;
use super::sys::EventFd;

pub const LOGIN: u8 = 0;
pub const RUN: u8 = 1;
pub const DRAIN: u8 = 2;
pub const DONE: u8 = 3;

/// How another thread wakes a worker blocked in epoll.
pub struct Wake {
    pub fd: EventFd,
    pub sleeping: AtomicBool,
    pub dirty: AtomicBool,
}

impl Wake {
    pub fn new() -> io::Result<Self> {
        Ok(Wake {
            fd: EventFd::new()?,
            sleeping: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
        })
    }

    pub fn notify(&self) {
        self.dirty.store(true, SeqCst);
        if self.sleeping.load(SeqCst) {
            self.fd.wake();
        }
    }
}

/// State shared by the coordinator and the workers: counters and credits only.
pub struct Shared {
    pub epoch: Instant,
    pub phase: AtomicU8,
    pub run_start_ns: AtomicU64,
    /// Per client: deliveries of its messages seen by their recipients.
    pub acked: Vec<AtomicU64>,
    /// Per client: messages it has sent.
    pub sent: Vec<AtomicU64>,
    pub confirmed: AtomicUsize,
    /// Clients whose login failed (an error or a closed connection before confirmation).
    pub login_failed: AtomicUsize,
    pub opened: AtomicUsize,
    /// Connections open now (closed ones, by the server or on errors, leave).
    pub open_conns: AtomicUsize,
    pub connect_failed: AtomicUsize,
    pub workers_connected: AtomicUsize,
    pub delivered: AtomicU64,
    pub sent_msgs: AtomicU64,
    pub sent_deliveries: AtomicU64,
    pub senders_done: AtomicUsize,
    /// Workers that have seen the drain phase and send no more.
    pub stopped_sending: AtomicUsize,
    /// Server errors, closed connections and malformed input seen so far.
    pub trouble: AtomicU64,
    notes: Mutex<Vec<String>>,
    pub wakes: Vec<Wake>,
}

const MAX_NOTES: usize = 8;

impl Shared {
    pub fn new(clients: usize, threads: usize) -> io::Result<Self> {
        Ok(Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(LOGIN),
            run_start_ns: AtomicU64::new(0),
            acked: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            confirmed: AtomicUsize::new(0),
            login_failed: AtomicUsize::new(0),
            opened: AtomicUsize::new(0),
            open_conns: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            workers_connected: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            sent_msgs: AtomicU64::new(0),
            sent_deliveries: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            stopped_sending: AtomicUsize::new(0),
            trouble: AtomicU64::new(0),
            notes: Mutex::new(Vec::new()),
            wakes: (0..threads)
                .map(|_| Wake::new())
                .collect::<io::Result<_>>()?,
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Keeps the first few problem descriptions for the summary.
    pub fn note(&self, what: impl FnOnce() -> String) {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() < MAX_NOTES {
            n.push(what());
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, SeqCst);
        for w in &self.wakes {
            w.notify();
        }
    }
}

/// What one worker measured.
#[derive(Default)]
pub struct WorkerStats {
    pub hist: Histogram,
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub server_errors: u64,
    pub notices: u64,
    pub closed: u64,
    /// Redis PUBLISH replies of 0: nobody was subscribed.
    pub unheard: u64,
    /// Open loop: how late each message went out, against its schedule.
    pub lag: Histogram,
    /// (sender, checker) for every pair received by this worker's clients.
    pub pairs: Vec<(usize, SeqChecker)>,
}

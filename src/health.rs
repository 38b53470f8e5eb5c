//! Whether the daemon wants new chat connections: starting, ready, draining, and whether a
//! cluster node can reach Redis. Set by the daemon, the drain and the cluster link; read
//! by the admin endpoint's `/readyz`. A leaf: it imports nothing of a-chat's.

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether the daemon wants new chat connections, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// One of `STARTING`, `READY`, `DRAINING`.
    state: AtomicU8,
    /// Set while a cluster node cannot reach Redis (ARCHITECTURE §10): it cannot take logins.
    cluster_down: std::sync::atomic::AtomicBool,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// The chat listeners are bound: ready, unless the drain has already begun.
    pub fn set_ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The drain has begun: not ready, for good.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY && !self.cluster_down.load(Ordering::Acquire)
    }

    pub fn is_cluster_down(&self) -> bool {
        self.cluster_down.load(Ordering::Acquire)
    }

    /// Whether this cluster node is connected to Redis and registered.
    pub fn set_cluster_up(&self, up: bool) {
        self.cluster_down.store(!up, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Ordering::Acquire) == DRAINING
    }
}

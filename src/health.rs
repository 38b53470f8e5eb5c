//! Whether the daemon wants new chat connections: starting, ready, draining, and whether a
//! cluster node can reach Redis. Set by the daemon, the drain and the cluster link; read
//! by the admin endpoint's `/readyz`. A leaf: it imports nothing of a-chat's.

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether the daemon wants new chat connections, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// One of `STARTING`, `READY`, `LAME_DUCK`, `DRAINING`.
    state: AtomicU8,
    /// Set while a cluster node cannot reach Redis (ARCHITECTURE §10): it cannot take logins.
    cluster_down: std::sync::atomic::AtomicBool,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;
const LAME_DUCK: u8 = 3;

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

    /// Lame duck mode has begun: not ready, for good. False when it or the drain had
    /// begun already.
    pub fn set_lame_duck(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        while state == STARTING || state == READY {
            match self
                .state
                .compare_exchange(state, LAME_DUCK, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    pub fn is_lame_duck(&self) -> bool {
        self.state.load(Ordering::Acquire) == LAME_DUCK
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

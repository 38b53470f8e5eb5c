//! The admin endpoint's connection slots: at most MAX_CONNECTIONS open at once, and a
//! newcomer at the cap takes the place of the connection that has waited longest for a
//! request head, so that clients trickling requests cannot hold off a health probe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::debug;

use super::MAX_CONNECTIONS;
use crate::runtime::TcpStream;

/// The admin connections open now (at most MAX_CONNECTIONS).
#[derive(Default)]
pub struct Slots {
    open: Mutex<Vec<Open>>,
    /// Ids for `open`.
    next: AtomicU64,
}

/// One open admin connection, as [`Slots`] knows it.
struct Open {
    id: u64,
    /// Since when it waits for (the rest of) a request head; `None` while it is answered.
    waiting_since: Option<Instant>,
    /// To close it when a newcomer takes its place.
    stream: TcpStream,
}

/// A connection's place in [`Slots`], given back on drop.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
}

impl Slots {
    /// A place for `stream`: a free one, or the one of the connection that has waited
    /// longest for a request head (which is closed); `None` if every connection is busy
    /// answering.
    pub fn take(self: &Arc<Self>, stream: &TcpStream) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_CONNECTIONS {
            let oldest = open
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.waiting_since.map(|since| (since, i)))
                .min()?
                .1;
            let evicted = open.swap_remove(oldest);
            debug!("admin connections all taken: closing the one waiting longest for a request");
            let _ = evicted.stream.shutdown(std::net::Shutdown::Both);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        open.push(Open {
            id,
            waiting_since: Some(Instant::now()),
            stream: stream.clone(),
        });
        Some(Slot {
            id,
            slots: self.clone(),
        })
    }
}

impl Slot {
    /// Marks the connection as waiting for a request head (`true`) or being answered.
    pub fn waiting(&self, waiting: bool) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = open.iter_mut().find(|o| o.id == self.id) {
            o.waiting_since = waiting.then(Instant::now);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|o| o.id != self.id);
    }
}

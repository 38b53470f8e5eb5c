//! What a connection holds for its life so that the accept loop's caps hold: its token
//! (`max_connections`) and its place in the per-address count (`max_connections_per_ip`).
//! Both are given back on drop, whichever way the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_listen::backpressure;

use crate::client_key::client_key;

/// A connection's token (accepting pauses while `max_connections` are out; never cloned,
/// see docs/ARCHITECTURE.md, "Pitfalls of the chosen crates"), which also tells the accept loop when it is given back.
pub struct Ticket {
    pub(super) _token: backpressure::Token,
    /// Woken when the connection ends (a full channel already holds the news).
    pub(super) freed: async_channel::Sender<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.freed.try_send(());
    }
}

/// What an address meets at the door, before its connection is served: the operators'
/// address bans and the connect-rate throttle (checked where the per-address cap is: at
/// accept, or once a balancer's PROXY header named the client).
#[derive(Clone)]
pub struct Door {
    /// The bans in force (shared with the admin's control surface).
    bans: Arc<crate::server::bans::Bans>,
    /// `None` when `connects_per_address` is 0.
    throttle: Option<Arc<crate::server::throttle::Throttle>>,
}

/// Why the door stays shut, and the line the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shut {
    Banned(String),
    Throttled,
}

impl Shut {
    /// What the refused client reads before the close.
    pub fn line(&self) -> &str {
        match self {
            Shut::Banned(line) => line,
            Shut::Throttled => "too many connections from your address, try again later",
        }
    }

    /// The HTTP status a WebSocket listener answers it with.
    pub fn status(&self) -> u16 {
        match self {
            Shut::Banned(_) => 403,
            Shut::Throttled => 429,
        }
    }

    pub fn refusal(&self) -> crate::metrics::Refusal {
        match self {
            Shut::Banned(_) => crate::metrics::Refusal::Banned,
            Shut::Throttled => crate::metrics::Refusal::Throttled,
        }
    }
}

impl Door {
    pub fn new(
        bans: Arc<crate::server::bans::Bans>,
        throttle: Option<crate::server::throttle::Throttle>,
    ) -> Door {
        Door {
            bans,
            throttle: throttle.map(Arc::new),
        }
    }

    /// Whether a connection from `ip` may come in (counted against the throttle).
    pub fn check(&self, ip: IpAddr) -> Result<(), Shut> {
        if !self.bans.is_empty() {
            if let Some(ban) = self.bans.on_address(ip) {
                return Err(Shut::Banned(ban.refusal("your address")));
            }
        }
        match &self.throttle {
            Some(throttle) if !throttle.allow(ip, std::time::Instant::now()) => {
                Err(Shut::Throttled)
            }
            _ => Ok(()),
        }
    }
}

/// Counts open connections per client address when `max_connections_per_ip` is set.
#[derive(Clone)]
pub struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in the per-address count, given back on drop.
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    pub fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Arc::default(),
        }
    }

    /// `Some(None)`: no cap configured; `Some(Some(slot))`: admitted; `None`: over the cap.
    /// Addresses are counted by their [`client_key`] (a v4-mapped address as IPv4, IPv6
    /// by its /64). The slot is boxed: with the cap off (the default), a connection pays
    /// one pointer for it, not the slot's 32 bytes.
    pub fn take(&self, ip: IpAddr) -> Option<Option<Box<IpSlot>>> {
        if self.max == 0 {
            return Some(None);
        }
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(Box::new(IpSlot {
            ip,
            open: self.open.clone(),
        })))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let per_ip = PerIp::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = per_ip.take(ip).unwrap();
        let b = per_ip.take(ip).unwrap();
        assert!(per_ip.take(ip).is_none());
        assert!(per_ip.take("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        let c = per_ip.take(ip).unwrap();
        drop((b, c));
        assert!(per_ip.open.lock().unwrap().is_empty());
        assert!(PerIp::new(0).take(ip).unwrap().is_none(), "no cap, no slot");
        // One client, whichever listener it reached; IPv6 by its /64.
        let _a = per_ip.take(ip).unwrap();
        let _b = per_ip.take("::ffff:127.0.0.1".parse().unwrap()).unwrap();
        assert!(per_ip.take(ip).is_none());
        let _c = per_ip.take("2001:db8::1".parse().unwrap()).unwrap();
        let _d = per_ip.take("2001:db8::2".parse().unwrap()).unwrap();
        assert!(per_ip.take("2001:db8::ffff:3".parse().unwrap()).is_none());
        assert!(per_ip.take("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}

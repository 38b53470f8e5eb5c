//! The router's one door to the other nodes of a cluster. The router is generic over
//! [`Elsewhere`]: on a single node it is [`Alone`], whose every method does nothing and is
//! compiled away, so the single-node router reads like the book's and pays nothing for a
//! cluster that is off; in a cluster it is [`Remote`] (the directory copy and the link,
//! in `cluster/remote.rs`).

use std::future::Future;

use async_channel::Receiver;

use crate::cluster::remote::{Claiming, Next, Remote, Routed};
use crate::metrics::Metrics;
use crate::server::event::Event;
use crate::server::outbox::Outbox;

/// Where the logins of other nodes are, as the router sees them.
pub trait Elsewhere: Send {
    /// Whether there are other nodes at all; `false` lets the router skip the work of
    /// looking for recipients there.
    const PRESENT: bool;

    /// What the router handles next: a reader's event, what the link sent, a registry's
    /// answer; `None` once every reader is gone.
    fn next(&mut self, events: &Receiver<Event>) -> impl Future<Output = Option<Next>> + Send;

    /// Whether a login of this look is being claimed from here.
    fn is_claiming(&self, look: &str) -> bool;

    /// Claims a login that is free on this node. `Err` hands it back to be registered at
    /// once (no other node to ask); `Ok`: the answer comes through [`Elsewhere::next`].
    fn claim(&mut self, c: Claiming, metrics: &Metrics) -> Result<(), Claiming>;

    /// The registry answered the claim of `look`.
    fn claimed(&mut self, look: &str);

    /// A login of this node ended: the others may take its look.
    fn release(&self, look: Box<str>);

    /// A recipient that is no login here (by its name, or by its canonical form `look`
    /// once computed): whether another node's login took the delivery.
    fn route(&mut self, name: &str, look: Option<&str>, metrics: &Metrics) -> Routed;

    /// The current message has been routed to every recipient.
    fn end_message(&mut self, from: &str, line: &[u8]);

    /// The current batch is routed: what it holds for other nodes goes out.
    fn end_batch(&mut self, sender: Option<&Outbox>, metrics: &Metrics);

    /// The cluster's state, for what the link sends (`None` on a single node, which
    /// receives nothing from a link).
    fn remote(&mut self) -> Option<&mut Remote>;
}

/// A single node: nobody elsewhere.
pub struct Alone;

impl Elsewhere for Alone {
    const PRESENT: bool = false;

    async fn next(&mut self, events: &Receiver<Event>) -> Option<Next> {
        events.recv().await.ok().map(Next::Event)
    }

    fn is_claiming(&self, _look: &str) -> bool {
        false
    }

    fn claim(&mut self, c: Claiming, _metrics: &Metrics) -> Result<(), Claiming> {
        Err(c)
    }

    fn claimed(&mut self, _look: &str) {}

    fn release(&self, _look: Box<str>) {}

    fn route(&mut self, _name: &str, _look: Option<&str>, _metrics: &Metrics) -> Routed {
        Routed::NotHere
    }

    fn end_message(&mut self, _from: &str, _line: &[u8]) {}

    fn end_batch(&mut self, _sender: Option<&Outbox>, _metrics: &Metrics) {}

    fn remote(&mut self) -> Option<&mut Remote> {
        None
    }
}

impl Elsewhere for Remote {
    const PRESENT: bool = true;

    fn next(&mut self, events: &Receiver<Event>) -> impl Future<Output = Option<Next>> + Send {
        Remote::next(self, events)
    }

    fn is_claiming(&self, look: &str) -> bool {
        Remote::is_claiming(self, look)
    }

    fn claim(&mut self, c: Claiming, metrics: &Metrics) -> Result<(), Claiming> {
        Remote::claim(self, c, metrics);
        Ok(())
    }

    fn claimed(&mut self, look: &str) {
        Remote::claimed(self, look)
    }

    fn release(&self, look: Box<str>) {
        Remote::release(self, look)
    }

    fn route(&mut self, name: &str, look: Option<&str>, metrics: &Metrics) -> Routed {
        Remote::route(self, name, look, metrics)
    }

    fn end_message(&mut self, from: &str, line: &[u8]) {
        Remote::end_message(self, from, line)
    }

    fn end_batch(&mut self, sender: Option<&Outbox>, metrics: &Metrics) {
        Remote::end_batch(self, sender, metrics)
    }

    fn remote(&mut self) -> Option<&mut Remote> {
        Some(self)
    }
}

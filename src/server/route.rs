//! Deliveries: the router puts each item of a reader's batch into its recipients'
//! queues, looking a recipient up by the name as written, then by its canonical form,
//! then (in a cluster) on the other nodes; an unknown name is answered once per batch.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::debug;

use crate::cluster::remote::Routed;
use crate::metrics::{LineRefusal, Metrics};
use crate::names;
use crate::protocol;
use crate::server::elsewhere::Elsewhere;
use crate::server::event::{Batch, Item};
use crate::server::online::Online;
use crate::server::outbox::{Out, Shared};

/// Recipient names longer than this are never looked up by their canonical form: no
/// login is longer than `max_login_bytes` (at most 1024), and its other spellings
/// (other cases, look-alikes) take at most a few times as many bytes. It bounds what a
/// line naming made-up recipients costs the router.
const MAX_LOOK_UP_BYTES: usize = 4096;

/// Routes the messages of one batch from `from`, in order.
pub(super) fn batch<E: Elsewhere>(
    from: &Arc<str>,
    batch: Batch,
    online: &mut Online,
    elsewhere: &mut E,
    metrics: &Metrics,
) {
    // Unknown recipients already answered in this batch: one answer per name
    // and read, however many lines of the read name it.
    let mut unknown = HashSet::new();
    for item in batch.items {
        match item {
            Item::Message {
                line,
                names,
                messages,
            } => {
                let listed = &batch.names[names];
                let mut to = Recipients {
                    from,
                    listed,
                    online: &mut *online,
                    elsewhere: &mut *elsewhere,
                    metrics,
                    unknown: &mut unknown,
                };
                if E::PRESENT {
                    // In a cluster, each message is a relay of its own.
                    let run = &batch.lines[line.clone()];
                    let mut start = line.start;
                    for nl in memchr::memchr_iter(b'\n', run) {
                        let end = line.start + nl + 1;
                        to.route(&Shared::new(batch.lines.clone(), start..end));
                        start = end;
                    }
                } else {
                    to.route(&Shared::lines(batch.lines.clone(), line, messages));
                }
            }
            Item::Reply(line) => {
                if let Some(sender) = online.peers.get(&**from) {
                    let _ = sender.outbox.send(Out::Server(line));
                }
            }
        }
    }
    if E::PRESENT {
        let sender = online.outbox(from);
        elsewhere.end_batch(sender.as_ref(), metrics);
    }
}

/// Where the messages of one batch item go: each of its distinct recipients.
struct Recipients<'n, 'a, E> {
    /// The sender: told of names no one holds, and named in a cluster's relays.
    from: &'a Arc<str>,
    /// Every distinct name of the item, each followed by `\n`.
    listed: &'n str,
    /// Who is online here: the queues the item goes into.
    online: &'a mut Online,
    /// The other nodes (`Alone` on a node by itself).
    elsewhere: &'a mut E,
    /// Where deliveries, drops and unknown names are counted, line by line.
    metrics: &'a Metrics,
    /// Unknown names already answered in this batch.
    unknown: &'a mut HashSet<&'n str>,
}

impl<E: Elsewhere> Recipients<'_, '_, E> {
    /// Queues `line` (one message, or a run of them) for every recipient.
    fn route(&mut self, line: &Shared) {
        // Logins reached by their look in this message: another spelling of the same
        // person gets the message once.
        let mut by_look = Vec::new();
        for name in self.listed.split_terminator('\n') {
            let to = Route {
                from: self.from,
                name,
                listed: self.listed,
                line,
            };
            to.route(
                self.online,
                self.elsewhere,
                self.metrics,
                self.unknown,
                &mut by_look,
            );
        }
        self.elsewhere.end_message(self.from, line.bytes());
    }
}

/// One delivery: one message line (or a run of them) to one recipient.
struct Route<'n, 'l> {
    from: &'l Arc<str>,
    /// Borrowed from the batch, which outlives the set of unknown names.
    name: &'n str,
    /// Every distinct name of the message, each followed by `\n`.
    listed: &'n str,
    line: &'l Shared,
}

impl<'n> Route<'n, '_> {
    /// Puts the delivery into the recipient's queue, or tells the sender why not.
    ///
    /// A name that is no login as written is looked up by its canonical form (`by_look`
    /// holds the logins found that way for this message, so that each gets it once).
    /// An unknown recipient is answered once per read batch (`unknown` holds the names
    /// answered): a sender still sending to someone who just left is told without one
    /// answer per line in flight, and a flood of lines to a made-up name costs one answer
    /// (and one canonical form) per read. It is not counted as a bad line: racing a
    /// logout is no fault.
    fn route<E: Elsewhere>(
        self,
        online: &mut Online,
        elsewhere: &mut E,
        metrics: &Metrics,
        unknown: &mut HashSet<&'n str>,
        by_look: &mut Vec<Arc<str>>,
    ) {
        // In a cluster, a login on another node by its exact name comes before any
        // canonical form is computed: routing to another node costs two map lookups.
        if E::PRESENT && !online.peers.contains_key(self.name) {
            let routed = elsewhere.route(self.name, None, metrics);
            if self.routed_elsewhere(routed, online, unknown) {
                return;
            }
        }
        let mut look = None;
        let (peer, found) = match online.peers.get(self.name) {
            Some(peer) => (peer, None),
            None => match self.look_up(online, unknown, &mut look) {
                Some(login) => {
                    let listed_as_is = self.listed.split_terminator('\n').any(|n| n == &*login);
                    if listed_as_is || by_look.contains(&login) {
                        return;
                    }
                    by_look.push(login.clone());
                    (&online.peers[&login], Some(login))
                }
                None => {
                    if let (true, Some(look)) = (E::PRESENT, look.as_deref()) {
                        let routed = elsewhere.route(self.name, Some(look), metrics);
                        if self.routed_elsewhere(routed, online, unknown) {
                            return;
                        }
                    }
                    metrics
                        .line_refused_times(LineRefusal::UnknownRecipient, self.line.deliveries());
                    if unknown.insert(self.name) {
                        if let Some(sender) = online.peers.get(&**self.from) {
                            let _ = sender
                                .outbox
                                .send(Out::Server(protocol::no_such_user(self.name)));
                        }
                    }
                    return;
                }
            },
        };
        let result = peer.outbox.send(Out::Delivery(self.line.clone()));
        metrics.deliveries_routed.inc_by(self.line.deliveries());
        if let Err(reason) = result {
            metrics.dropped(reason, self.line.deliveries());
            // The recipient is being disconnected; its reader's logout will find nothing.
            let login = found.unwrap_or_else(|| Arc::from(self.name));
            debug!(recipient = &*login, ?reason, "delivery dropped");
            online.remove(&login, elsewhere);
            metrics.logged_in.set(online.peers.len() as i64);
        }
    }

    /// Whether another node's login took the delivery; when Redis cannot be reached, the
    /// sender is told once per name and read, like an unknown recipient.
    fn routed_elsewhere(
        &self,
        routed: Routed,
        online: &Online,
        answered: &mut HashSet<&'n str>,
    ) -> bool {
        match routed {
            Routed::NotHere => false,
            Routed::Queued => true,
            Routed::LinkDown => {
                if answered.insert(self.name) {
                    if let Some(sender) = online.peers.get(&**self.from) {
                        let _ = sender
                            .outbox
                            .send(Out::Server(protocol::could_not_deliver(self.name)));
                    }
                }
                true
            }
        }
    }

    /// The login whose canonical form the name has, if one is online. Names already
    /// answered as unknown in this batch, and names too long to be a login, cost nothing.
    /// The canonical form computed is left in `look`, for the other nodes' logins.
    fn look_up(
        &self,
        online: &Online,
        unknown: &HashSet<&'n str>,
        look: &mut Option<String>,
    ) -> Option<Arc<str>> {
        if self.name.len() > MAX_LOOK_UP_BYTES || unknown.contains(self.name) {
            return None;
        }
        let canonical = look.insert(names::canonical(self.name));
        online.looks.get(&**canonical).cloned()
    }
}

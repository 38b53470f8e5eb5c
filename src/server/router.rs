//! The router: the one task that owns the login map. Readers hand it logins, batches
//! of parsed messages and logouts; it puts each delivery into the recipients' queues.
//! It never waits on a client: a full queue disconnects that client instead.
//!
//! Logins are keyed twice: by the name as its owner logged in (the exact map that every
//! delivery looks up first, as fast as before), and by their canonical form
//! (`names::canonical`, computed by the reader once per login), which allows one live
//! login per look and finds a recipient written another way (`Alice` for `alice`). The
//! canonical form of a recipient is computed only when the exact lookup misses, and
//! nothing is cached per message. A cluster registry (ARCHITECTURE §10) must key logins on
//! that same canonical form, so that a look is one person across the nodes too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_channel::Receiver;
use tracing::{debug, info};

use crate::auth::{Auth, Granted};
use crate::cluster::remote::{self, Claiming, Next, Remote, Routed};
use crate::cluster::{Claim, Inbound};
use crate::metrics::{CloseReason, LineRefusal, Metrics};
use crate::names::{self, LoginError};
use crate::protocol;
use crate::server::elsewhere::{Alone, Elsewhere};
use crate::server::outbox::{Out, Outbox, Shared};

pub use crate::server::event::{Batch, ConnId, Event, ForwardKick, Item};

/// A logged-in connection, as the router knows it.
///
/// Its look is not kept here: it is the login's canonical form, computed again on the
/// rare way out rather than stored twice in every connection's entry.
struct Peer {
    conn: ConnId,
    outbox: Outbox,
}

/// Recipient names longer than this are never looked up by their canonical form: no
/// login is longer than `max_login_bytes` (at most 1024), and its other spellings
/// (other cases, look-alikes) take at most a few times as many bytes. It bounds what a
/// line naming made-up recipients costs the router.
const MAX_LOOK_UP_BYTES: usize = 4096;

/// The router's view of who is online.
struct Online {
    /// Live logins by the name as sent: every delivery looks here first.
    peers: HashMap<Arc<str>, Peer>,
    /// Live logins by canonical form, to the name as sent.
    looks: HashMap<Box<str>, Arc<str>>,
    /// The operators' bans: a banned login is refused here, where logins are granted.
    bans: Arc<super::bans::Bans>,
}

impl Online {
    /// Forgets a login (logout, or its client is cut off); in a cluster, the registry
    /// is told too (`elsewhere`; [`Alone`] to tell nobody).
    fn remove(&mut self, login: &str, elsewhere: &impl Elsewhere) {
        if self.peers.remove(login).is_some() {
            self.forget_look(login, elsewhere);
        }
    }

    /// Forgets `login` if `conn` still holds it (another connection may have taken it
    /// over meanwhile); says whether it did.
    fn logout(&mut self, conn: ConnId, login: &str, elsewhere: &impl Elsewhere) -> bool {
        let held = self.peers.get(login).is_some_and(|peer| peer.conn == conn);
        if held {
            self.remove(login, elsewhere);
        }
        held
    }

    /// Removes the look of `login` (its canonical form, as `register` was given it),
    /// and frees it in the cluster.
    fn forget_look(&mut self, login: &str, elsewhere: &impl Elsewhere) {
        if let Some((look, _)) = self.looks.remove_entry(&*names::canonical(login)) {
            elsewhere.release(look);
        }
    }

    fn register(&mut self, conn: ConnId, login: Arc<str>, look: Box<str>, outbox: Outbox) {
        self.looks.insert(look, login.clone());
        self.peers.insert(login, Peer { conn, outbox });
    }

    /// Hands `login` from its live connection to `conn`, whose user proved the password:
    /// the older connection is told and closed, and the login (and, in a cluster, its
    /// claim in the registry, which stays this node's) goes on under the new one.
    fn take_over(&mut self, conn: ConnId, login: Arc<str>, look: Box<str>, outbox: Outbox) {
        if let Some(old) = self.peers.remove(&login) {
            // The same login has the same look, which `register` puts back.
            self.looks.remove(&look);
            let notice = protocol::format_notice("logged in from another connection");
            let _ = old.outbox.send(Out::Server(notice));
            old.outbox.info().ending(CloseReason::Replaced);
            old.outbox.stop_reading();
            info!(login = %login, old = old.conn, new = conn, "login taken over by a connection that proved the password: the older one is closed");
        }
        self.register(conn, login, look, outbox);
    }

    fn outbox(&self, login: &str) -> Option<Outbox> {
        self.peers.get(login).map(|p| p.outbox.clone())
    }

    /// The queue of `login` or of the login that looks the same.
    fn outbox_of_look(&self, login: &str) -> Option<&Outbox> {
        let peer = match self.peers.get(login) {
            Some(peer) => peer,
            None => &self.peers[self.looks.get(&*names::canonical(login))?],
        };
        Some(&peer.outbox)
    }
}

/// Runs until every reader (and the accept loop) has dropped its sender, then drops
/// every queue, which lets each writer flush and close. In a cluster (`link`), it also
/// hears from the cluster link, and dropping its command sender at the end makes the
/// link free this node's logins.
pub async fn run(
    events: Receiver<Event>,
    metrics: Arc<Metrics>,
    link: Option<crate::cluster::Router>,
    bans: Arc<super::bans::Bans>,
) {
    let mut online = Online {
        peers: HashMap::new(),
        looks: HashMap::new(),
        bans,
    };
    match link {
        None => route_all(&events, &metrics, &mut online, Alone).await,
        Some(link) => route_all(&events, &metrics, &mut online, Remote::new(link)).await,
    }
    info!(
        logged_in = online.peers.len(),
        "router finished: closing every queue"
    );
}

/// The router's loop, for one node alone or for a node of a cluster.
async fn route_all<E: Elsewhere>(
    events: &Receiver<Event>,
    metrics: &Metrics,
    online: &mut Online,
    mut elsewhere: E,
) {
    while let Some(next) = elsewhere.next(events).await {
        match next {
            Next::Event(event) => handle(event, online, &mut elsewhere, metrics),
            Next::Inbound(message) => {
                if let Some(remote) = elsewhere.remote() {
                    inbound(message, online, remote, metrics);
                }
            }
            Next::Claimed(c, answer) => {
                elsewhere.claimed(&c.look);
                match answer {
                    Claim::Granted if !still_holds(&c.checked, &c.login) => {
                        let _ = c.reply.send(Err(LoginError::UsersChanged));
                        elsewhere.release(c.look);
                    }
                    Claim::Granted => {
                        // The reader may have gone (drain, or its client left) meanwhile.
                        if c.reply.send(Ok(())).is_ok() {
                            online.register(c.conn, c.login, c.look, c.outbox);
                            metrics.logged_in.set(online.peers.len() as i64);
                        } else {
                            elsewhere.release(c.look);
                        }
                    }
                    Claim::Taken => {
                        let _ = c.reply.send(Err(LoginError::Taken(c.login.to_string())));
                    }
                    Claim::Unavailable => {
                        let _ = c.reply.send(Err(LoginError::ClusterUnavailable));
                    }
                }
            }
        }
    }
}

/// Whether a login checked against a users file still holds under the one in force (true
/// without `[auth]`): the reload that removed a user, or changed the password, wins over
/// a check that began before it.
fn still_holds(checked: &Option<Granted>, login: &str) -> bool {
    checked.as_ref().is_none_or(|granted| granted.holds(login))
}

/// One event from a reader.
fn handle<E: Elsewhere>(event: Event, online: &mut Online, elsewhere: &mut E, metrics: &Metrics) {
    match event {
        Event::Login {
            conn,
            login,
            look,
            outbox,
            checked,
            reply,
        } => {
            if !still_holds(&checked, &login) {
                let _ = reply.send(Err(LoginError::UsersChanged));
                return;
            }
            if let Some(ban) = online.bans.on_login(&look) {
                let refusal = ban.refusal(&format!("login {:?}", &*login));
                let _ = reply.send(Err(LoginError::Banned(refusal)));
                return;
            }
            // A user who proved the password takes their own login over from an older
            // connection of theirs (one that went stale: a dropped Wi-Fi, a laptop that
            // slept), as IRC's ghost command does.
            if checked.is_some() && online.peers.contains_key(&login) {
                if reply.send(Ok(())).is_ok() {
                    online.take_over(conn, login, look, outbox);
                }
                return;
            }
            // The same name has the same look: one lookup covers both.
            if online.looks.contains_key(&look) || elsewhere.is_claiming(&look) {
                let _ = reply.send(Err(LoginError::Taken(login.to_string())));
                return;
            }
            let c = Claiming {
                conn,
                login,
                look,
                outbox,
                checked,
                reply,
            };
            // In a cluster, granted once the registry says so (in `route_all`); alone, now.
            if let Err(c) = elsewhere.claim(c, metrics) {
                // The reader may have gone (drain) while waiting: then nothing is registered.
                if c.reply.send(Ok(())).is_ok() {
                    online.register(c.conn, c.login, c.look, c.outbox);
                    metrics.logged_in.set(online.peers.len() as i64);
                }
            }
        }
        Event::Messages { from, batch } => {
            // Unknown recipients already answered in this batch: one answer per name
            // and read, however many lines of the read name it.
            let mut unknown = HashSet::new();
            for item in batch.items {
                match item {
                    Item::Message { line, names } => {
                        let line = Shared::new(batch.lines.clone(), line);
                        let listed = &batch.names[names];
                        // Logins reached by their look in this message: another
                        // spelling of the same person gets the message once.
                        let mut by_look = Vec::new();
                        for name in listed.split_terminator('\n') {
                            let to = Route {
                                from: &from,
                                name,
                                listed,
                                line: &line,
                            };
                            to.route(online, elsewhere, metrics, &mut unknown, &mut by_look);
                        }
                        elsewhere.end_message(&from, line.bytes());
                    }
                    Item::Reply(line) => {
                        if let Some(sender) = online.peers.get(&*from) {
                            let _ = sender.outbox.send(Out::Server(line));
                        }
                    }
                }
            }
            if E::PRESENT {
                let sender = online.outbox(&from);
                elsewhere.end_batch(sender.as_ref(), metrics);
            }
        }
        Event::Revoke { users } => revoke(&users, online, elsewhere, metrics),
        Event::Kick(kick) => {
            let node = elsewhere.remote().and_then(|remote| {
                remote.forward_kick(&kick.login, &kick.by, kick.reason.as_deref())
            });
            let _ = kick.reply.send(node);
        }
        Event::Logout { conn, login } => {
            if online.logout(conn, &login, elsewhere) {
                metrics.logged_in.set(online.peers.len() as i64);
            }
        }
    }
}

/// The users file changed (SIGHUP): logins it no longer holds are told
/// `notice: account removed` and disconnected.
fn revoke(users: &Auth, online: &mut Online, elsewhere: &impl Elsewhere, metrics: &Metrics) {
    let removed: Vec<Arc<str>> = online
        .peers
        .keys()
        .filter(|login| !users.contains(login))
        .cloned()
        .collect();
    for login in removed {
        if let Some(peer) = online.peers.get(&login) {
            // Told, then closed: the reader sees the end of input and the
            // writer flushes what is queued, the notice last.
            let _ = peer
                .outbox
                .send(Out::Server(protocol::format_notice("account removed")));
            peer.outbox.info().ending(CloseReason::AccountRemoved);
            peer.outbox.stop_reading();
            info!(login = %login, "account removed from the users file: disconnected");
        }
        online.remove(&login, elsewhere);
    }
    metrics.logged_in.set(online.peers.len() as i64);
}

/// What the cluster link sends: relays for this node's logins, directory changes, and
/// what it could not do.
fn inbound(message: Inbound, online: &mut Online, remote: &mut Remote, metrics: &Metrics) {
    match message {
        Inbound::Relay(frame) => {
            let len = frame.len();
            let rules = remote.rules();
            let cut = remote::deliver_relay(frame, &remote.directory, &rules, metrics, |name| {
                online.outbox(name)
            });
            remote.relay_done(len);
            for login in cut {
                debug!(
                    recipient = &*login,
                    "relayed delivery dropped: recipient cut off"
                );
                online.remove(&login, &*remote);
            }
        }
        Inbound::Undelivered(frame, why) => {
            remote::tell_each(&frame, why, metrics, |sender| online.outbox(sender));
        }
        Inbound::Subscribed => remote.directory.subscribed(),
        Inbound::Snapshot(copy) => remote.snapshot(copy, metrics),
        Inbound::Event(event) => remote.apply(event, metrics),
        Inbound::Kick(order) => {
            super::kick::from_node(&order, online.outbox_of_look(&order.login), metrics)
        }
        Inbound::Evicted { look } => {
            if let Some(login) = online.looks.get(&look).cloned() {
                if let Some(peer) = online.peers.get(&login) {
                    let _ = peer.outbox.send(Out::Server(protocol::format_notice(
                        "another node took this login while the cluster was unavailable",
                    )));
                    peer.outbox.info().ending(CloseReason::LoginLost);
                    peer.outbox.stop_reading();
                }
                // Not released: the registry gave it to the other node.
                online.remove(&login, &Alone);
            }
        }
    }
    remote.update_gauge(metrics);
    metrics.logged_in.set(online.peers.len() as i64);
}

/// One delivery: one message line to one recipient.
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
                    metrics.line_refused(LineRefusal::UnknownRecipient);
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
        metrics.deliveries_routed.inc();
        if let Err(reason) = result {
            metrics.dropped(reason, 1);
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

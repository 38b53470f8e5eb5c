//! The router: the one task that owns the login map (`online`). Readers hand it logins,
//! batches of parsed messages and logouts; it puts each delivery into the recipients'
//! queues (`route`). It never waits on a client: a full queue disconnects that client
//! instead.
//!
//! Logins are keyed twice: by the name as its owner logged in (the exact map that every
//! delivery looks up first, as fast as before), and by their canonical form
//! (`names::canonical`, computed by the reader once per login), which allows one live
//! login per look and finds a recipient written another way (`Alice` for `alice`). The
//! canonical form of a recipient is computed only when the exact lookup misses, and
//! nothing is cached per message. A cluster registry (ARCHITECTURE §10) must key logins on
//! that same canonical form, so that a look is one person across the nodes too.

use std::collections::HashMap;
use std::sync::Arc;

use async_channel::Receiver;
use tracing::{debug, info};

use crate::auth::{Auth, Granted};
use crate::cluster::remote::{self, Claiming, Next, Remote};
use crate::cluster::{Claim, Inbound};
use crate::metrics::{CloseReason, Metrics};
use crate::names::LoginError;
use crate::protocol;
use crate::server::elsewhere::{Alone, Elsewhere};
use crate::server::online::Online;
use crate::server::outbox::Out;
use crate::server::route;

pub use crate::server::event::{ConnId, Event, ForwardKick};

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
        Event::Messages { from, batch } => route::batch(&from, batch, online, elsewhere, metrics),
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

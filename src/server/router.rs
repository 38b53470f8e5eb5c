//! The router: the one task that owns the login map. Readers hand it logins, batches
//! of parsed messages and logouts; it puts each delivery into the recipients' queues.
//! It never waits on a client: a full queue disconnects that client instead.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use async_channel::Receiver;
use futures::channel::oneshot;
use tracing::{debug, info};

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::protocol::{self, LoginError};
use crate::server::outbox::{Out, Outbox, Shared};

/// Connection ids are unique for the life of the daemon.
pub type ConnId = u64;

/// What a reader tells the router.
pub enum Event {
    /// A connection asks for a login; the reply says whether it got it.
    Login {
        conn: ConnId,
        login: Arc<str>,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(), LoginError>>,
    },
    /// Messages from one logged-in connection, in the order they were read.
    Messages { from: Arc<str>, batch: Batch },
    /// The connection's reader ended; its login is free again.
    Logout { conn: ConnId },
    /// The users file changed (SIGHUP): logins it no longer holds are told
    /// `notice: account removed` and disconnected.
    Revoke { users: Arc<Auth> },
}

/// The lines of one read from one client, in the order it sent them. The delivery
/// lines of all its messages share one buffer, so a read costs a few allocations
/// however many messages and recipients it holds.
pub struct Batch {
    /// Every delivery line of the batch, `from <sender>: <text>\n`, back to back.
    pub lines: Arc<[u8]>,
    /// Every recipient name of the batch, each followed by `\n`.
    pub names: String,
    pub items: Vec<Item>,
}

/// One line of a batch.
pub enum Item {
    /// A message: its delivery line in `Batch::lines` and its distinct recipients in
    /// `Batch::names`.
    Message {
        line: Range<usize>,
        names: Range<usize>,
    },
    /// An `error:` answer for the sender, queued in order with the sender's own messages.
    Reply(Vec<u8>),
}

/// A logged-in connection, as the router knows it.
struct Peer {
    conn: ConnId,
    outbox: Outbox,
}

/// Runs until every reader (and the accept loop) has dropped its sender, then drops
/// every queue, which lets each writer flush and close.
pub async fn run(events: Receiver<Event>, metrics: Arc<Metrics>) {
    let mut peers: HashMap<Arc<str>, Peer> = HashMap::new();
    let mut logins: HashMap<ConnId, Arc<str>> = HashMap::new();
    while let Ok(event) = events.recv().await {
        match event {
            Event::Login {
                conn,
                login,
                outbox,
                reply,
            } => {
                if peers.contains_key(&login) {
                    let _ = reply.send(Err(LoginError::Taken(login.to_string())));
                    continue;
                }
                // The reader may have gone (drain) while waiting: then nothing is registered.
                if reply.send(Ok(())).is_ok() {
                    logins.insert(conn, login.clone());
                    peers.insert(login, Peer { conn, outbox });
                    metrics.logged_in.set(peers.len() as i64);
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
                            for name in batch.names[names].split_terminator('\n') {
                                let to = Route {
                                    from: &from,
                                    name,
                                    line: &line,
                                };
                                to.route(&mut peers, &mut logins, &metrics, &mut unknown);
                            }
                        }
                        Item::Reply(line) => {
                            if let Some(sender) = peers.get(&*from) {
                                let _ = sender.outbox.send(Out::Server(line));
                            }
                        }
                    }
                }
            }
            Event::Revoke { users } => {
                let removed: Vec<Arc<str>> = peers
                    .keys()
                    .filter(|login| !users.contains(login))
                    .cloned()
                    .collect();
                for login in removed {
                    if let Some(peer) = peers.remove(&login) {
                        logins.remove(&peer.conn);
                        // Told, then closed: the reader sees the end of input and the
                        // writer flushes what is queued, the notice last.
                        let _ = peer
                            .outbox
                            .send(Out::Server(protocol::format_notice("account removed")));
                        peer.outbox.stop_reading();
                        info!(login = %login, "account removed from the users file: disconnected");
                    }
                }
                metrics.logged_in.set(peers.len() as i64);
            }
            Event::Logout { conn } => {
                if let Some(login) = logins.remove(&conn) {
                    peers.remove(&login);
                    metrics.logged_in.set(peers.len() as i64);
                }
            }
        }
    }
    info!(
        logged_in = peers.len(),
        "router finished: closing every queue"
    );
}

/// One delivery: one message line to one recipient.
struct Route<'n, 'l> {
    from: &'l Arc<str>,
    /// Borrowed from the batch, which outlives the set of unknown names.
    name: &'n str,
    line: &'l Shared,
}

impl<'n> Route<'n, '_> {
    /// Puts the delivery into the recipient's queue, or tells the sender why not.
    ///
    /// An unknown recipient is answered once per read batch (`unknown` holds the names
    /// answered): a sender still sending to someone who just left is told without one
    /// answer per line in flight, and a flood of lines to a made-up name costs one answer
    /// per read. It is not counted as a bad line: racing a logout is no fault.
    fn route(
        self,
        peers: &mut HashMap<Arc<str>, Peer>,
        logins: &mut HashMap<ConnId, Arc<str>>,
        metrics: &Metrics,
        unknown: &mut HashSet<&'n str>,
    ) {
        let result = match peers.get(self.name) {
            Some(peer) => peer.outbox.send(Out::Delivery(self.line.clone())),
            None => {
                metrics.lines_rejected.inc();
                if unknown.insert(self.name) {
                    if let Some(sender) = peers.get(&**self.from) {
                        let _ = sender
                            .outbox
                            .send(Out::Server(protocol::no_such_user(self.name)));
                    }
                }
                return;
            }
        };
        metrics.deliveries_routed.inc();
        if let Err(reason) = result {
            metrics.dropped(reason, 1);
            // The recipient is being disconnected; its reader's logout will find nothing.
            if let Some(peer) = peers.remove(self.name) {
                logins.remove(&peer.conn);
                metrics.logged_in.set(peers.len() as i64);
                debug!(recipient = self.name, ?reason, "delivery dropped");
            }
        }
    }
}

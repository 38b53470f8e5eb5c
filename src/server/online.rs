//! Who is online, as the router keeps it: live logins by the name as sent and by their
//! canonical form, and the queue of each. Only the router task holds it.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::info;

use crate::metrics::CloseReason;
use crate::names;
use crate::protocol;
use crate::server::elsewhere::Elsewhere;
use crate::server::event::ConnId;
use crate::server::outbox::{Out, Outbox};

/// A logged-in connection, as the router knows it.
///
/// Its look is not kept here: it is the login's canonical form, computed again on the
/// rare way out rather than stored twice in every connection's entry.
pub(super) struct Peer {
    /// The connection holding the login: a logout from an older connection of the same
    /// login (taken over since) must not remove it.
    pub(super) conn: ConnId,
    /// Its queue, where deliveries go.
    pub(super) outbox: Outbox,
}

/// The router's view of who is online.
pub(super) struct Online {
    /// Live logins by the name as sent: every delivery looks here first.
    pub(super) peers: HashMap<Arc<str>, Peer>,
    /// Live logins by canonical form, to the name as sent.
    pub(super) looks: HashMap<Box<str>, Arc<str>>,
    /// The operators' bans: a banned login is refused here, where logins are granted.
    pub(super) bans: Arc<super::bans::Bans>,
}

impl Online {
    /// Forgets a login (logout, or its client is cut off); in a cluster, the registry
    /// is told too (`elsewhere`; `Alone` to tell nobody).
    pub(super) fn remove(&mut self, login: &str, elsewhere: &impl Elsewhere) {
        if self.peers.remove(login).is_some() {
            self.forget_look(login, elsewhere);
        }
    }

    /// Forgets `login` if `conn` still holds it (another connection may have taken it
    /// over meanwhile); says whether it did.
    pub(super) fn logout(&mut self, conn: ConnId, login: &str, elsewhere: &impl Elsewhere) -> bool {
        let held = self.peers.get(login).is_some_and(|peer| peer.conn == conn);
        if held {
            self.remove(login, elsewhere);
        }
        held
    }

    /// Removes the look of `login` (its canonical form, as `register` was given it),
    /// and frees it in the cluster.
    pub(super) fn forget_look(&mut self, login: &str, elsewhere: &impl Elsewhere) {
        if let Some((look, _)) = self.looks.remove_entry(&*names::canonical(login)) {
            elsewhere.release(look);
        }
    }

    pub(super) fn register(
        &mut self,
        conn: ConnId,
        login: Arc<str>,
        look: Box<str>,
        outbox: Outbox,
    ) {
        self.looks.insert(look, login.clone());
        self.peers.insert(login, Peer { conn, outbox });
    }

    /// Hands `login` from its live connection to `conn`, whose user proved the password:
    /// the older connection is told and closed, and the login (and, in a cluster, its
    /// claim in the registry, which stays this node's) goes on under the new one.
    pub(super) fn take_over(
        &mut self,
        conn: ConnId,
        login: Arc<str>,
        look: Box<str>,
        outbox: Outbox,
    ) {
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

    pub(super) fn outbox(&self, login: &str) -> Option<Outbox> {
        self.peers.get(login).map(|p| p.outbox.clone())
    }

    /// The queue of `login` or of the login that looks the same.
    pub(super) fn outbox_of_look(&self, login: &str) -> Option<&Outbox> {
        let peer = match self.peers.get(login) {
            Some(peer) => peer,
            None => &self.peers[self.looks.get(&*names::canonical(login))?],
        };
        Some(&peer.outbox)
    }
}

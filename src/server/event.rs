//! What readers tell the router: the events on the one channel into it, and the batches
//! of messages they carry. Both the router and the cluster's side of it speak these.

use std::ops::Range;
use std::sync::Arc;

use futures::channel::oneshot;

use crate::auth::{Auth, Granted};
use crate::names::LoginError;
use crate::server::outbox::Outbox;

/// Connection ids are unique for the life of the daemon.
pub type ConnId = u64;

/// What a reader tells the router.
pub enum Event {
    /// A connection asks for a login; the reply says whether it got it.
    Login {
        conn: ConnId,
        /// The name as sent, which is how others see it.
        login: Arc<str>,
        /// Its canonical form (`names::canonical`), taken by no other live login.
        look: Box<str>,
        outbox: Outbox,
        /// With `[auth]`: the password check that allowed it, asked again here, where the
        /// login takes effect (a reload may have removed the user meanwhile).
        checked: Option<Granted>,
        reply: oneshot::Sender<Result<(), LoginError>>,
    },
    /// Messages from one logged-in connection, in the order they were read.
    Messages { from: Arc<str>, batch: Batch },
    /// The connection that held `login` ended; the login is free again unless another
    /// connection took it over meanwhile (then `conn` no longer holds it).
    Logout { conn: ConnId, login: Arc<str> },
    /// The users file changed (SIGHUP): logins it no longer holds are told
    /// `notice: account removed` and disconnected.
    Revoke { users: Arc<Auth> },
    /// An operator kicks a login that no connection here holds: in a cluster, the
    /// router sends the kick to the node that holds it.
    Kick(ForwardKick),
}

/// A kick for the node that holds `login`, and where to say which node that was.
pub struct ForwardKick {
    pub login: Box<str>,
    /// The admin token that asked.
    pub by: Box<str>,
    pub reason: Option<Box<str>>,
    /// The node the kick went to; `None` when no node holds the login (or on a single
    /// node).
    pub reply: oneshot::Sender<Option<Arc<str>>>,
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
    /// Messages to the same recipients: their delivery lines, back to back in
    /// `Batch::lines`, and their distinct recipients in `Batch::names`. Consecutive
    /// messages of a read that name their recipients alike (a conversation, a pasted
    /// paragraph) are one item, routed and queued once.
    Message {
        line: Range<usize>,
        names: Range<usize>,
        /// How many messages (lines) the range holds, at least 1.
        messages: u32,
    },
    /// An `error:` answer for the sender, queued in order with the sender's own messages.
    Reply(Vec<u8>),
}

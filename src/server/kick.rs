//! A kick that another node of the cluster carried here: the operator asked that node to
//! close a login this node holds (`cluster/kick.rs` has the frame and its checks). It
//! closes the connection as a kick asked for here does: the client's last line is the
//! operator's notice, its close line says `kicked`, and the kicks counter counts it.

use tracing::{debug, info};

use crate::cluster::kick::Order;
use crate::metrics::{CloseReason, Metrics};
use crate::protocol;
use crate::server::outbox::{Closing, Outbox};

/// Closes the connection of the login `order` names (its queue is `holder`, when this
/// node holds the login), and writes the audit line.
pub fn from_node(order: &Order, holder: Option<&Outbox>, metrics: &Metrics) {
    let Some(outbox) = holder else {
        // It logged out meanwhile, or the other node's copy was behind: nothing to do.
        debug!(
            login = &*order.login,
            node = &*order.node,
            by = &*order.by,
            "a kick from another node names no login here"
        );
        return;
    };
    let reason = order.reason.as_deref();
    match outbox.close_for(CloseReason::Kicked, &protocol::kick_notice(reason)) {
        Closing::Now { conn, login } => {
            metrics.operator.kicks.inc();
            info!(
                conn,
                login = login.as_deref().unwrap_or("-"),
                by = &*order.by,
                node = &*order.node,
                reason = reason.unwrap_or("-"),
                "connection kicked by the operator, through another node"
            );
        }
        Closing::Already { conn, reason: was } => debug!(
            conn,
            node = &*order.node,
            closing_for = was.label(),
            "a kick from another node found the connection closing already"
        ),
    }
}

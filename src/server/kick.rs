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
    let closing = outbox.close_for(CloseReason::Kicked, &protocol::kick_notice(reason));
    audit(&closing, &order.by, Some(&order.node), reason, metrics);
}

/// The one audit line of a kick, and the count of kicks: `by` names the admin token,
/// `via` the node the operator asked when it was not this one. A kick of a connection
/// already closing did nothing more, and is logged at debug only (a loop of them floods
/// no log).
pub fn audit(
    closing: &Closing,
    by: &str,
    via: Option<&str>,
    reason: Option<&str>,
    metrics: &Metrics,
) {
    match closing {
        Closing::Now { conn, login } => {
            metrics.operator.kicks.inc();
            let login = login.as_deref().unwrap_or("-");
            let reason = reason.unwrap_or("-");
            match via {
                None => info!(conn, login, by, reason, "connection kicked by the operator"),
                Some(node) => info!(
                    conn,
                    login,
                    by,
                    node,
                    reason,
                    "connection kicked by the operator, through another node"
                ),
            }
        }
        Closing::Already { conn, reason: was } => debug!(
            conn,
            by,
            via,
            closing_for = was.label(),
            "kick asked for a connection already closing: nothing more done"
        ),
    }
}

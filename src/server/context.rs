//! What every connection accepted under one configuration shares: the limits, the users,
//! the metrics, the drain signal and the queue budget, behind one `Arc` that each
//! connection holds once (its reader and its writer reach them through it) instead of a
//! handle to each in both halves: about 80 bytes less of every connection.
//!
//! The router's queue is not in it: only readers hold a sender to the router, so that the
//! router ends once the last reader has (writers keep their context until they close,
//! and they close once the router lets go of their queues).

use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::server::outbox::Budget;
use crate::server::shutdown::Shutdown;

/// Shared by the connections accepted while these limits were in force; a reload that
/// changes them makes a new one for the connections accepted from then on.
pub struct Context {
    /// The limits in force when the connection was accepted.
    pub limits: Arc<Limits>,
    /// The bounds on what is queued for clients, shared by every connection.
    pub budget: Arc<Budget>,
    /// With `[auth] users_file`: the users a login's password is checked against.
    pub auth: Option<Arc<Auth>>,
    pub metrics: Arc<Metrics>,
    /// Closed once the drain begins.
    pub shutdown: Shutdown,
}

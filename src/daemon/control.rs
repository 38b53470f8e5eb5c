//! The daemon's control surface: what an operator can ask of a running daemon, whoever
//! carries the request (the admin endpoint's HTTP, a signal). Each door is a thin adapter
//! over these calls.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::admin::{self, Reloaded};
use crate::reload::{NotTried, Reloads};
use crate::server::Live;

/// The calls the admin endpoint makes, answered by the running daemon's parts.
pub struct Control {
    /// The open connections, for `GET /connections`.
    pub live: Arc<Live>,
    /// The reloader, for `POST /reload` (SIGHUP asks the same one).
    pub reloads: Reloads,
}

impl admin::Control for Control {
    fn connections(&self, query: &str) -> Result<String, String> {
        self.live.connections_json(query)
    }

    fn reload(&self) -> BoxFuture<'static, Reloaded> {
        let reloads = self.reloads.clone();
        Box::pin(async move {
            match reloads.reload().await {
                Ok(Ok(applied)) => Reloaded::Applied(applied),
                Ok(Err(why)) => Reloaded::Failed(why.to_string()),
                Err(why @ (NotTried::Busy | NotTried::Gone)) => Reloaded::NotTried(why.to_string()),
            }
        })
    }
}

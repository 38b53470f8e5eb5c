//! The daemon's control surface: what an operator can ask of a running daemon, whoever
//! carries the request (the admin endpoint's HTTP, a signal). Each door is a thin adapter
//! over these calls; each act that does something is logged here once, at info, naming
//! who asked (one that finds nothing to do, at debug: a loop of them floods no log).

use std::sync::Arc;

use futures::future::BoxFuture;
use tracing::{debug, info};

use super::stop::Stop;
use crate::admin::{self, Reloaded};
use crate::metrics::{CloseReason, Metrics};
use crate::protocol;
use crate::reload::{NotTried, Reloads};
use crate::server::bans::{self, BanError, Target};
use crate::server::{kick, Closing, Live};

/// The calls the admin endpoint makes, answered by the running daemon's parts.
pub struct Control {
    /// The open connections: `GET /connections` and the closes.
    pub live: Arc<Live>,
    /// The reloader, for `POST /reload` (SIGHUP asks the same one).
    pub reloads: Reloads,
    /// The drain and lame duck mode (the stop signals ask the same one).
    pub stop: Arc<Stop>,
    /// Counts the kicks.
    pub metrics: Arc<Metrics>,
}

impl admin::Control for Control {
    fn connections(&self, query: &str) -> Result<String, crate::server::QueryError> {
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

    fn close(&self, conn: u64, reason: Option<&str>, by: &str) -> Option<Closing> {
        let closing = self
            .live
            .close(conn, CloseReason::Kicked, &protocol::kick_notice(reason));
        match &closing {
            Some(closing) => kick::audit(closing, by, None, reason, &self.metrics),
            None => debug!(conn, by, "kick asked for an unknown connection"),
        }
        closing
    }

    fn close_login(&self, login: &str, reason: Option<&str>, by: &str) -> Vec<Closing> {
        let closed =
            self.live
                .close_login(login, CloseReason::Kicked, &protocol::kick_notice(reason));
        if closed.is_empty() {
            debug!(login, by, "kick asked for a login with no open connection");
        }
        for closing in &closed {
            kick::audit(closing, by, None, reason, &self.metrics);
        }
        closed
    }

    fn forward_kick(
        &self,
        login: &str,
        reason: Option<&str>,
        by: &str,
    ) -> BoxFuture<'static, Option<String>> {
        let live = self.live.clone();
        let (login, reason, by) = (login.to_owned(), reason.map(str::to_owned), by.to_owned());
        Box::pin(async move {
            let node = live.forward_kick(&login, &by, reason.as_deref()).await?;
            info!(
                login,
                by,
                node = &*node,
                reason = reason.as_deref().unwrap_or("-"),
                "kick sent to the node that holds the login"
            );
            Some(node.to_string())
        })
    }

    fn lame_duck(&self, by: &str) -> bool {
        self.stop.lame_duck(&format!("admin token {by}"))
    }

    fn drain(&self, by: &str) -> bool {
        self.stop.drain(&format!("admin token {by}"))
    }

    fn bans(&self) -> String {
        self.live.bans.json()
    }

    fn ban(&self, order: admin::BanOrder, by: &str) -> Result<String, BanError> {
        let admin::BanOrder {
            target,
            lasting,
            reason,
        } = order;
        let (ban, closed) = match target {
            admin::Banning::Login(login) => {
                let look = crate::names::canonical(&login);
                let ban =
                    self.live
                        .bans
                        .add(Target::Login(look), &login, lasting, reason, by.into())?;
                let notice = ban.refusal(&format!("login {login:?}"));
                let closed = self.live.close_login(&login, CloseReason::Banned, &notice);
                (ban, closed)
            }
            admin::Banning::Address(text) => {
                let net = bans::net(&text)?;
                let ban =
                    self.live
                        .bans
                        .add(Target::Net(net), &text, lasting, reason, by.into())?;
                let notice = ban.refusal("your address");
                let closed = self.live.close_address(&net, CloseReason::Banned, &notice);
                (ban, closed)
            }
        };
        let closed = closed
            .iter()
            .filter(|c| matches!(c, Closing::Now { .. }))
            .count();
        info!(
            id = ban.id,
            target = %ban.shown,
            until = ban.until_unix,
            by,
            reason = ban.reason.as_deref().unwrap_or("-"),
            closed,
            "ban set"
        );
        Ok(format!("{{\"ban\":{},\"closed\":{closed}}}\n", ban.json()))
    }

    fn lift(&self, id: u64, by: &str) -> bool {
        let lifted = self.live.bans.lift(id);
        if lifted {
            info!(id, by, "ban lifted");
        }
        lifted
    }
}

//! The registry of open connections and the settings a reload changes while they run
//! ([`Live`]): what `GET /connections` lists, and the one place that closes a connection
//! on an operator's request (by id, by login, or all of them for lame duck mode).

use std::sync::{Arc, Mutex, RwLock};

use async_channel::Sender;
use tracing::info;

use super::outbox::Closing;
use super::shutdown::Void;
use super::{conninfo, outbox, router};
use crate::auth::Auth;
use crate::config::Limits;
use crate::metrics::{CloseReason, Metrics};
use crate::runtime;

/// The settings a reload (SIGHUP) changes while connections run: the limits new
/// connections get, and the queue bounds every connection is measured against.
pub struct Live {
    /// What each new connection takes at accept; connections keep the limits they got.
    limits: RwLock<Arc<Limits>>,
    /// The queue bounds and their running total, shared by every connection.
    pub(super) budget: Arc<outbox::Budget>,
    /// The router's inbox, to tell it about a reload; weak, so that it never keeps the
    /// router (and the drain) alive.
    pub(super) router: Mutex<Option<async_channel::WeakSender<router::Event>>>,
    /// In a cluster: the limits input relayed through Redis is checked against, changed
    /// with `[limits]`.
    pub(super) relay_rules: Mutex<Option<Arc<crate::cluster::checks::LiveRules>>>,
    /// The accept loop's stop signal: dropped when the drain begins, or earlier when lame
    /// duck mode stops accepting while logged-in clients are still served.
    pub(super) accepting: Mutex<Option<Sender<Void>>>,
    /// The operators' bans, consulted at accept and at login; kept across reloads.
    pub bans: Arc<super::bans::Bans>,
}

impl Live {
    pub fn new(limits: &Limits, metrics: &Metrics) -> Arc<Live> {
        Arc::new(Live {
            limits: RwLock::new(Arc::new(limits.clone())),
            budget: outbox::Budget::new(limits, metrics),
            router: Mutex::new(None),
            relay_rules: Mutex::new(None),
            accepting: Mutex::new(None),
            bans: Arc::default(),
        })
    }

    /// `GET /connections?sort=queued|bytes_out|since&limit=N&login=NAME`: one JSON object
    /// per open connection, the most first (oldest first for `since`), at most `limit`
    /// (100 by default, 1000 at most), in `{"total": N, "connections": [...]}`.
    pub fn connections_json(&self, query: &str) -> Result<String, QueryError> {
        let (mut sort, mut limit, mut login) = ("queued", 100usize, None::<String>);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sort" if matches!(value, "queued" | "bytes_out" | "since") => sort = value,
                "sort" => return Err(QueryError::Sort(value.to_owned())),
                "limit" => match value.parse() {
                    Ok(n) if n <= 1000 => limit = n,
                    _ => return Err(QueryError::Limit(value.to_owned())),
                },
                "login" => login = Some(percent_decoded(value)),
                _ => return Err(QueryError::Unknown(key.to_owned())),
            }
        }
        // A login is found by its look, as the chat finds recipients: `Alice` finds
        // `alice`.
        let look = login.as_deref().map(crate::names::canonical);
        use conninfo::ConnInfo as C;
        // Each row's sort key is read once; only the `limit` first rows are put in order
        // (a selection, then a sort of those), so a large daemon costs one pass over its
        // connections, not a sort of all of them.
        let mut rows: Vec<(u64, u64, Arc<outbox::Queue>)> = self
            .budget
            .queues()
            .into_iter()
            .filter(|q| match (&login, &look) {
                (Some(name), Some(look)) => q
                    .info
                    .login
                    .get()
                    .is_some_and(|l| **l == **name || crate::names::canonical(l) == *look),
                _ => true,
            })
            .map(|q| {
                let key = match sort {
                    "bytes_out" => u64::MAX - C::get(&q.info.bytes_out),
                    // Ties (the same millisecond) in accept order.
                    "since" => q.info.since_ms,
                    _ => u64::MAX - q.queued() as u64,
                };
                (key, q.info.conn, q)
            })
            .collect();
        let total = rows.len();
        if limit < rows.len() {
            if limit == 0 {
                rows.clear();
            } else {
                rows.select_nth_unstable_by_key(limit - 1, |(key, conn, _)| (*key, *conn));
                rows.truncate(limit);
            }
        }
        rows.sort_unstable_by_key(|(key, conn, _)| (*key, *conn));
        let objects: Vec<String> = rows
            .iter()
            .map(|(_, _, q)| q.info.json(q.queued()))
            .collect();
        Ok(format!(
            "{{\"total\":{total},\"connections\":[{}]}}\n",
            objects.join(",")
        ))
    }

    /// Disconnects the logged-in users that `users` no longer holds (after a reload of
    /// the users file), with `notice: account removed`.
    pub fn revoke_removed(&self, users: Arc<Auth>) {
        let router = self
            .router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(events) = router.and_then(|weak| weak.upgrade()) {
            runtime::spawn(async move {
                let _ = events.send(router::Event::Revoke { users }).await;
            });
        }
    }

    /// The limits for a connection accepted now.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New limits: for connections accepted from now on, and the queue bounds for all.
    pub fn set_limits(&self, limits: &Limits) {
        if let Some(rules) = &*self.relay_rules.lock().unwrap_or_else(|e| e.into_inner()) {
            rules.set(crate::cluster::checks::Rules::of(limits));
        }
        self.budget.set(limits);
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(limits.clone());
    }
}

/// Why a `GET /connections` query cannot be answered (a 400, with this line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `sort=` names no column.
    #[error("sort={0:?}: sort by queued (the default), bytes_out or since")]
    Sort(String),
    /// `limit=` is not a number from 0 to 1000.
    #[error("limit={0:?}: a number from 0 to 1000")]
    Limit(String),
    /// A parameter `/connections` does not take.
    #[error("{0:?} is not a parameter of /connections: sort, limit or login")]
    Unknown(String),
}

impl Live {
    /// Closes connection `conn` for `why`: the client is told `notice: <notice>` as its
    /// last line, its reader stops, and its writer sends what is queued and closes.
    /// `None` when no open connection has that id.
    pub fn close(&self, conn: u64, why: CloseReason, notice: &str) -> Option<Closing> {
        let queue = self.budget.find(conn)?;
        Some(queue.close_for(why, notice))
    }

    /// Closes every connection logged in as `login` (found by its look, as the chat
    /// finds recipients), as [`Live::close`] does; empty when none is.
    pub fn close_login(&self, login: &str, why: CloseReason, notice: &str) -> Vec<Closing> {
        let look = crate::names::canonical(login);
        self.budget
            .queues()
            .into_iter()
            .filter(|q| {
                q.info
                    .login
                    .get()
                    .is_some_and(|l| **l == *login || crate::names::canonical(l) == look)
            })
            .map(|q| q.close_for(why, notice))
            .collect()
    }

    /// Closes every connection from `net`, as [`Live::close`] does (a ban on an address).
    pub fn close_address(
        &self,
        net: &crate::proxy::Source,
        why: CloseReason,
        notice: &str,
    ) -> Vec<Closing> {
        self.budget
            .queues()
            .into_iter()
            .filter(|q| net.contains(q.info.peer.ip()))
            .map(|q| q.close_for(why, notice))
            .collect()
    }

    /// The ids of the logged-in connections, oldest first: the order lame duck mode
    /// closes them in.
    pub fn logged_in(&self) -> Vec<u64> {
        let mut rows: Vec<(u64, u64)> = self
            .budget
            .queues()
            .iter()
            .filter(|q| q.info.login.get().is_some())
            .map(|q| (q.info.since_ms, q.info.conn))
            .collect();
        rows.sort_unstable();
        rows.into_iter().map(|(_, conn)| conn).collect()
    }

    /// Asks the router to send a kick of `login` to the node of the cluster that holds
    /// it; that node's name, or `None` when no node does (always, on a single node).
    pub async fn forward_kick(
        &self,
        login: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Option<Arc<str>> {
        let router = self
            .router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()?
            .upgrade()?;
        let (reply, answer) = futures::channel::oneshot::channel();
        let kick = router::ForwardKick {
            login: login.into(),
            by: by.into(),
            reason: reason.map(Into::into),
            reply,
        };
        router.send(router::Event::Kick(kick)).await.ok()?;
        drop(router);
        answer.await.ok().flatten()
    }

    /// Stops the accept loop (lame duck mode, then the drain); connections go on.
    pub fn stop_accepting(&self) {
        let stop = self
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if stop.is_some() {
            info!("accepting stopped");
        }
    }
}

/// `%XX` escapes of a query value decoded (`+` is a space); invalid escapes stay as they are.
pub fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decoded;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decoded("al%69ce"), "alice");
        assert_eq!(percent_decoded("%D0%B0lice"), "аlice");
        assert_eq!(percent_decoded("a+b%zz%"), "a b%zz%");
        assert_eq!(percent_decoded("%é"), "%é");
    }
}

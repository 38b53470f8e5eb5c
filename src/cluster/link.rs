//! The link: the one task that talks to the cluster's Redis. It connects (with backoff
//! while Redis is away), joins the registry, subscribes to the directory and to this
//! node's relay channel, then runs the router's commands in order, as many to a round
//! trip as have queued up, and renews the node's lease every third of it.
//! The connections themselves are in `connection.rs`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures::stream::{FuturesOrdered, StreamExt as _};
use futures_lite::future::FutureExt as _;
use redis::Value;
use std::task::Poll;
use tracing::{debug, info, warn};

use super::batch::Batch;
use super::connection::{connect, relay_channel, Session, DIRECTORY};
use super::snapshot::read_registry;
use super::{Claim, Command, Inbound, LinkError, Settings, Shared};
use crate::health::Health;
use crate::metrics::cluster::CrossDrop;
use crate::runtime;

/// The first wait before reconnecting, doubled after each failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The least time between two warnings that the connection was lost.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Commands taken from the router's queue for one round trip at most.
const BATCH: usize = 4096;
/// Logins claimed again per script call after an outage.
const CLAIM_CHUNK: usize = super::batch::CLAIM_CHUNK;
/// Batches sent to Redis and not yet answered, at most: a batch is sent while the one
/// before waits for its answer, so the wait adds no latency under load.
const IN_FLIGHT: usize = 4;

/// A batch on its way to Redis, with its answers when they come.
type Sending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Batch, redis::RedisResult<Vec<Value>>)> + Send>,
>;

/// A cheap random number (jitter, node names): not for secrets.
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Why the link left its connected loop.
enum Ended {
    /// The router is gone (the drain ended): this node has left the cluster.
    Left,
    /// The connection failed.
    Lost(LinkError),
}

pub struct Link {
    settings: Settings,
    shared: Arc<Shared>,
    /// The router's commands, in the order it sent them.
    commands: Receiver<Command>,
    /// Requests to read the directory copy from the registry again (events were lost).
    resync: Receiver<()>,
    /// To the router: relays, directory changes, what could not be done.
    inbound: Sender<Inbound>,
    /// `/readyz`: not ready while Redis cannot be reached.
    health: Arc<Health>,
    /// The logins this node holds, by look: claimed again after an outage.
    held: HashMap<Box<str>, Arc<str>>,
    /// Lease length as the registry keeps it (two thirds of `lease`), in ms: renewed
    /// every third of `lease`, a dead node's logins are free within `lease`.
    expiry_ms: u64,
    /// Whether this process has joined once: later joins keep the node's logins.
    joined: bool,
}

impl Link {
    pub fn new(
        settings: Settings,
        shared: Arc<Shared>,
        (commands, resync): (Receiver<Command>, Receiver<()>),
        inbound: Sender<Inbound>,
        health: Arc<Health>,
    ) -> Link {
        let expiry_ms = (settings.lease.as_millis() as u64 * 2 / 3).max(1);
        Link {
            settings,
            shared,
            commands,
            resync,
            inbound,
            health,
            held: HashMap::new(),
            expiry_ms,
            joined: false,
        }
    }

    fn renew_every(&self) -> Duration {
        self.settings.lease / 3
    }

    /// Runs until the router's commands end (after the drain), then frees this node's
    /// logins in Redis.
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        let mut lost_warned = None;
        // Set while losses are logged at debug only: the rejoins that follow are too.
        let mut quiet = false;
        loop {
            let connecting = connect(&self.settings, &self.shared, &self.inbound);
            let down = serve_down(&self.commands, &mut self.held, &self.shared, &self.inbound);
            let attempt = async { Some(connecting.await) }.or(async {
                down.await;
                None
            });
            let mut session = match attempt.await {
                None => return,
                Some(Ok(session)) => session,
                Some(Err(e)) => {
                    failures += 1;
                    self.shared.metrics.cluster.connect_failures.inc();
                    if failures == 1 || failures.is_multiple_of(20) {
                        warn!(error = %e, failures, retry_in = ?backoff, "cannot reach the cluster's Redis: new logins are refused, other nodes are out of reach");
                    } else {
                        debug!(error = %e, failures, "cannot reach the cluster's Redis");
                    }
                    if !self.back_off(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            if let Err(e) = self.register(&mut session, true).await {
                // Redis answered but refused a step (a missing ACL permission, a full
                // Redis): wait as after a failed connection, or the node would retry at
                // once and for ever.
                failures += 1;
                if !quiet && (failures == 1 || failures.is_multiple_of(20)) {
                    warn!(error = %e, failures, retry_in = ?backoff, "joining the cluster failed");
                } else {
                    debug!(error = %e, failures, "joining the cluster failed");
                }
                if !self.back_off(&mut backoff).await {
                    return;
                }
                continue;
            }
            backoff = BACKOFF_MIN;
            failures = 0;
            self.set_up(true);
            if quiet {
                debug!(logins = self.held.len(), "joined the cluster again");
            } else {
                info!(logins = self.held.len(), "joined the cluster");
            }
            match self.serve(&mut session).await {
                Ended::Left => {
                    self.set_up(false);
                    match self.call(&mut session, &["leave"]).await {
                        Ok(_) => info!("left the cluster: this node's logins are free"),
                        Err(e) => {
                            warn!(error = %e, "could not leave the cluster: this node's logins are free when its lease ends")
                        }
                    }
                    return;
                }
                Ended::Lost(e) => {
                    self.set_up(false);
                    // Redis cutting a node that cannot keep up does it again and again:
                    // one warning a minute, the rest at debug.
                    quiet = lost_warned.is_some_and(|at: Instant| at.elapsed() < WARN_EVERY);
                    if quiet {
                        debug!(error = %e, "lost the cluster's Redis again: reconnecting");
                    } else {
                        lost_warned = Some(Instant::now());
                        warn!(error = %e, "lost the cluster's Redis: reconnecting");
                    }
                }
            }
        }
    }

    fn set_up(&self, up: bool) {
        self.shared.up.store(up, Ordering::Release);
        self.health.set_cluster_up(up);
        self.shared.metrics.cluster.link_up.set(up as i64);
    }

    /// Waits `backoff` (with jitter) before the next attempt, answering the router as
    /// with Redis away, and doubles it up to [`BACKOFF_MAX`]; `false` when the router's
    /// commands ended meanwhile.
    async fn back_off(&mut self, backoff: &mut Duration) -> bool {
        let jitter = backoff.mul_f64(0.8 + (random() % 400) as f64 / 1000.0);
        let wait = async {
            runtime::sleep(jitter).await;
            true
        };
        let down = serve_down(&self.commands, &mut self.held, &self.shared, &self.inbound);
        let go_on = wait
            .or(async {
                down.await;
                false
            })
            .await;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        go_on
    }

    /// Joins the registry (the first time, freeing what an earlier life of this node
    /// held), claims this node's logins again (the ones another node took meanwhile are evicted), and, on a
    /// new connection, subscribes and sends the router a snapshot of the directory.
    async fn register(&mut self, session: &mut Session, fresh: bool) -> Result<(), LinkError> {
        if fresh {
            // The snapshot below answers any request to read the registry again.
            while self.resync.try_recv().is_ok() {}
            // Before subscribing: every event from here on is kept for the snapshot.
            let _ = self.inbound.send(Inbound::Subscribed).await;
            let own = relay_channel(&self.settings.node_id);
            session
                .subscriber
                .subscribe(&[DIRECTORY, own.as_str()])
                .await?;
        }
        let expiry = self.expiry_ms.to_string();
        if !self.joined {
            // This process's first join frees what an earlier life of the node held.
            self.call(session, &["join", &expiry]).await?;
            self.joined = true;
        } else {
            // After an outage: the lease is extended (or taken anew if it ran out), and
            // logins this node released meanwhile are released in Redis too; the rest
            // stay held throughout, so a short outage frees nobody's login.
            self.call(session, &["renew", &expiry]).await?;
            let key = format!("achat:looks:{}", self.settings.node_id);
            let listed: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut session.conn)
                .await?;
            let stale: Vec<&str> = listed
                .iter()
                .map(String::as_str)
                .filter(|look| !self.held.contains_key(*look))
                .collect();
            for chunk in stale.chunks(CLAIM_CHUNK) {
                let mut args = vec!["release"];
                args.extend_from_slice(chunk);
                self.call(session, &args).await?;
            }
        }
        let held: Vec<(Box<str>, Arc<str>)> = self
            .held
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for chunk in held.chunks(CLAIM_CHUNK) {
            let mut args = vec!["claim"];
            for (look, login) in chunk {
                args.push(look);
                args.push(login);
            }
            let granted = super::batch::claim_answers(self.call(session, &args).await?);
            for (i, (look, login)) in chunk.iter().enumerate() {
                if granted.get(i) != Some(&true) {
                    self.held.remove(look);
                    info!(login = &**login, "another node took this login while the cluster was unavailable: its client is disconnected");
                    let _ = self
                        .inbound
                        .send(Inbound::Evicted { look: look.clone() })
                        .await;
                }
            }
        }
        if fresh {
            self.snapshot(session).await?;
        }
        Ok(())
    }

    /// Reads the registry into a new directory copy (`snapshot.rs`) and hands it to the
    /// router.
    async fn snapshot(&mut self, session: &mut Session) -> Result<(), LinkError> {
        let copy = read_registry(&mut session.conn, &self.settings.node_id, &self.shared).await?;
        let _ = self.inbound.send(Inbound::Snapshot(copy)).await;
        Ok(())
    }

    /// Directory events were lost (their queue was full): the router keeps the events
    /// from here on, and gets a new copy of the registry to replay them over.
    async fn read_again(&mut self, session: &mut Session) -> Result<(), LinkError> {
        self.shared.metrics.cluster.resyncs.inc();
        debug!("directory events were lost: reading the registry again");
        let _ = self.inbound.send(Inbound::Subscribed).await;
        self.snapshot(session).await
    }

    /// Runs the registry script with `args` after the operation's caller.
    async fn call(&self, session: &mut Session, args: &[&str]) -> Result<Value, LinkError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&session.sha)
            .arg(0)
            .arg(args[0])
            .arg(&*self.settings.node_id);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        Ok(cmd.query_async(&mut session.conn).await?)
    }

    /// Connected: the router's commands, the lease, until the router or the connection
    /// ends. Up to [`IN_FLIGHT`] batches wait for Redis's answers at once; they are sent
    /// and answered in order on the one connection.
    async fn serve(&mut self, session: &mut Session) -> Ended {
        let mut next_renewal = Instant::now() + self.renew_every();
        let mut in_flight: FuturesOrdered<Sending> = FuturesOrdered::new();
        let ended = loop {
            if Instant::now() >= next_renewal {
                if let Err(e) = self.renew(session).await {
                    break Ended::Lost(e);
                }
                next_renewal = Instant::now() + self.renew_every();
                continue;
            }
            enum Wake {
                Command(Option<Command>),
                Answered(Option<(Batch, redis::RedisResult<Vec<Value>>)>),
                Renew,
                Closed,
                Resync,
            }
            let left = next_renewal.saturating_duration_since(Instant::now());
            let room = in_flight.len() < IN_FLIGHT;
            let command = async {
                if room {
                    Wake::Command(self.commands.recv().await.ok())
                } else {
                    std::future::pending().await
                }
            };
            let answered = async {
                if in_flight.is_empty() {
                    std::future::pending().await
                } else {
                    Wake::Answered(in_flight.next().await)
                }
            };
            let renew = async {
                runtime::sleep(left).await;
                Wake::Renew
            };
            let closed = async {
                let _ = session.closed.recv().await;
                Wake::Closed
            };
            let resync = async {
                let _ = self.resync.recv().await;
                Wake::Resync
            };
            match answered.or(command).or(closed).or(resync).or(renew).await {
                Wake::Command(None) => break Ended::Left,
                Wake::Command(Some(first)) => {
                    let mut commands = vec![first];
                    while commands.len() < BATCH {
                        match self.commands.try_recv() {
                            Ok(c) => commands.push(c),
                            Err(_) => break,
                        }
                    }
                    let (pipe, batch) =
                        Batch::prepare(commands, &mut self.held, &self.shared, &session.sha);
                    let mut conn = session.conn.clone();
                    let mut sending: Sending = Box::pin(async move {
                        let answers = pipe.query_async(&mut conn).await;
                        (batch, answers)
                    });
                    // Polled once here, so that it joins the connection's queue now, in
                    // the order the batches were made.
                    match futures::poll!(sending.as_mut()) {
                        Poll::Ready(done) => in_flight.push_back(Box::pin(async { done })),
                        Poll::Pending => in_flight.push_back(sending),
                    }
                }
                Wake::Answered(None) => {}
                Wake::Answered(Some((batch, answers))) => {
                    match batch.finish(answers, &mut self.held, &self.shared, &self.inbound) {
                        Ok(false) => {}
                        Ok(true) => {
                            warn!("this node's lease had run out: claiming its logins again");
                            if let Err(e) = self.register(session, false).await {
                                break Ended::Lost(e);
                            }
                        }
                        Err(e) => break Ended::Lost(e),
                    }
                }
                Wake::Renew => {}
                Wake::Resync => {
                    if let Err(e) = self.read_again(session).await {
                        break Ended::Lost(e);
                    }
                }
                Wake::Closed => break Ended::Lost(LinkError::Closed),
            }
        };
        // What was sent is answered, or fails with the connection: either way its claims
        // and relays get their answer.
        while let Some((batch, answers)) = in_flight.next().await {
            let _ = batch.finish(answers, &mut self.held, &self.shared, &self.inbound);
        }
        ended
    }

    async fn renew(&mut self, session: &mut Session) -> Result<(), LinkError> {
        let expiry = self.expiry_ms.to_string();
        let m = &self.shared.metrics.cluster;
        let asked = Instant::now();
        let answer = self.call(session, &["renew", &expiry]).await;
        m.redis_round_trip.set(asked.elapsed().as_secs_f64());
        match answer {
            Ok(Value::Int(live)) if live >= 1 => {
                m.renewals_ok.inc();
                m.live_nodes.set(live);
                Ok(())
            }
            Ok(_) => {
                m.renewals_expired.inc();
                warn!("this node's lease had run out (Redis was too slow or away): claiming its logins again");
                self.register(session, false).await
            }
            Err(e) => {
                m.renewals_failed.inc();
                Err(e)
            }
        }
    }
}

/// While Redis cannot be reached: claims are answered `Unavailable`, releases are
/// remembered (so that the logins are not claimed again), relays go back undelivered.
/// Returns when the router's commands end.
async fn serve_down(
    commands: &Receiver<Command>,
    held: &mut HashMap<Box<str>, Arc<str>>,
    shared: &Shared,
    inbound: &Sender<Inbound>,
) {
    while let Ok(command) = commands.recv().await {
        match command {
            Command::Claim { reply, .. } => {
                shared.metrics.cluster.claims_unavailable.inc();
                let _ = reply.send(Claim::Unavailable);
            }
            Command::Release { look } => {
                held.remove(&look);
            }
            Command::Publish { frame, .. } => {
                shared.outgoing.fetch_sub(frame.len(), Ordering::AcqRel);
                shared.give_back(inbound, frame, CrossDrop::LinkDown);
            }
            Command::Kick { node, .. } => {
                warn!(
                    node = &*node,
                    "a kick for another node was lost: Redis cannot be reached"
                );
            }
        }
    }
}

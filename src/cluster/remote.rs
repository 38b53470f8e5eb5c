//! The router's half of the cluster (ARCHITECTURE §10): claims of logins waiting for the
//! registry, the copy of who is logged in on the other nodes, this batch's deliveries
//! for them (one relay frame per node, published when the batch ends), and what the link
//! sends back. The router calls it only when `[cluster]` is on; a single node has none.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use futures::channel::oneshot;
use futures::stream::{FuturesUnordered, StreamExt};
use tracing::debug;

use crate::cluster::checks::{self, Refusal};
use crate::cluster::frame::{self, FrameWriter};
use crate::cluster::{self, Claim, Command, CrossDrop, Directory, Entry, Inbound, Logins};
use crate::metrics::Metrics;
use crate::names::LoginError;
use crate::protocol;
use crate::runtime;
use crate::server::event::{ConnId, Event};
use crate::server::outbox::{Out, Outbox, Shared};

/// A login waiting for the registry's answer.
pub struct Claiming {
    pub conn: ConnId,
    pub login: Arc<str>,
    pub look: Box<str>,
    pub outbox: Outbox,
    /// The password check that allowed it, asked again when the registry grants it.
    pub checked: Option<crate::auth::Granted>,
    pub reply: oneshot::Sender<Result<(), LoginError>>,
}

type Answer = Pin<Box<dyn Future<Output = (Claiming, Claim)> + Send>>;

/// Where [`Remote::route`] sent a recipient.
pub enum Routed {
    /// No other node holds that login.
    NotHere,
    /// In this batch's frame for its node.
    Queued,
    /// Another node holds it, and Redis cannot be reached: the sender is to be told.
    LinkDown,
}

/// What the router handles next.
pub enum Next {
    Event(Event),
    Inbound(Inbound),
    Claimed(Claiming, Claim),
}

/// The router's cluster state.
pub struct Remote {
    link: cluster::Router,
    /// Who is logged in on the other nodes.
    pub directory: Directory,
    /// Claims sent to the registry, resolved in whatever order the answers come.
    answers: FuturesUnordered<Answer>,
    /// Looks being claimed: a second login with one of them here is refused at once.
    claiming: HashSet<Box<str>>,
    /// Set once the link has ended (it ends after the router, so only on a bug).
    link_gone: bool,
    /// The current message's recipients on other nodes.
    message: Vec<Entry>,
    /// The current batch's relay frame for each node it reaches.
    outgoing: Vec<(Arc<str>, FrameWriter)>,
    /// Which source is polled first next time, so that none starves the others.
    turn: u8,
}

impl Remote {
    pub fn new(link: cluster::Router) -> Remote {
        let directory = Directory::new(link.shared.id.clone(), link.shared.caps);
        Remote {
            link,
            directory,
            answers: FuturesUnordered::new(),
            claiming: HashSet::new(),
            link_gone: false,
            message: Vec::new(),
            outgoing: Vec::new(),
            turn: 0,
        }
    }

    /// The next event, link message or registry answer; `None` when every reader is gone.
    pub async fn next(&mut self, events: &async_channel::Receiver<Event>) -> Option<Next> {
        self.turn = self.turn.wrapping_add(1);
        let first = self.turn % 3;
        let Remote {
            link,
            answers,
            link_gone,
            ..
        } = self;
        // Receiving is cancel-safe: a future not polled to its end takes nothing.
        let mut event = std::pin::pin!(events.recv());
        let mut message = std::pin::pin!(link.inbound.recv());
        std::future::poll_fn(|cx| {
            for i in 0..3 {
                match (first + i) % 3 {
                    0 => match event.as_mut().poll(cx) {
                        Poll::Ready(Ok(e)) => return Poll::Ready(Some(Next::Event(e))),
                        Poll::Ready(Err(_)) => return Poll::Ready(None),
                        Poll::Pending => {}
                    },
                    1 if !*link_gone => match message.as_mut().poll(cx) {
                        Poll::Ready(Ok(m)) => return Poll::Ready(Some(Next::Inbound(m))),
                        Poll::Ready(Err(_)) => *link_gone = true,
                        Poll::Pending => {}
                    },
                    2 if !answers.is_empty() => {
                        if let Poll::Ready(Some((c, a))) = answers.poll_next_unpin(cx) {
                            return Poll::Ready(Some(Next::Claimed(c, a)));
                        }
                    }
                    _ => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Whether `look` is being claimed here.
    pub fn is_claiming(&self, look: &str) -> bool {
        self.claiming.contains(look)
    }

    /// Asks the registry for a login; the answer comes back through [`Remote::next`].
    pub fn claim(&mut self, c: Claiming, metrics: &Metrics) {
        if !self.link.shared.is_up() {
            metrics.cluster.claims_unavailable.inc();
            let _ = c.reply.send(Err(LoginError::ClusterUnavailable));
            return;
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Claim {
            look: c.look.clone(),
            login: c.login.clone(),
            reply,
        };
        if self.link.commands.try_send(command).is_err() {
            let _ = c.reply.send(Err(LoginError::ClusterUnavailable));
            return;
        }
        self.claiming.insert(c.look.clone());
        self.answers.push(Box::pin(async move {
            let answer = answer.await.unwrap_or(Claim::Unavailable);
            (c, answer)
        }));
    }

    /// The link's copy of the directory replaces the router's. The old one is freed on a
    /// blocking thread: freeing a million entries would hold the router up for tens of
    /// milliseconds.
    pub fn snapshot(&mut self, copy: Logins, metrics: &Metrics) {
        let (old, refused) = self.directory.snapshot(copy);
        for why in refused {
            metrics.cluster.refused(why, 1);
        }
        if !old.is_empty() {
            drop(runtime::spawn(runtime::spawn_blocking(move || drop(old))));
        }
    }

    /// A directory event (already checked by the link against the rules for names).
    pub fn apply(&mut self, event: frame::DirEvent, metrics: &Metrics) {
        match self.directory.apply(event) {
            Ok(()) => {}
            Err(Refusal::QueueFull) => {
                debug!(
                    "too many directory events waited for a snapshot: reading the registry again"
                );
                metrics.cluster.refused(Refusal::QueueFull, 1);
                self.link.shared.ask_resync();
            }
            Err(why) => {
                debug!(
                    reason = why.label(),
                    "a directory login beyond the copy's caps was refused"
                );
                metrics.cluster.refused(why, 1);
            }
        }
    }

    /// The registry answered: the claim is no longer pending.
    pub fn claimed(&mut self, look: &str) {
        self.claiming.remove(look);
    }

    /// This node no longer holds `look`.
    pub fn release(&self, look: Box<str>) {
        let _ = self.link.commands.try_send(Command::Release { look });
    }

    /// Finds `name` among the other nodes' logins (as written, or with `look`, by its
    /// canonical form) and adds it to the current message. A login already in this
    /// message (another spelling of the same person) is not added twice.
    pub fn route(&mut self, name: &str, look: Option<&str>, metrics: &Metrics) -> Routed {
        let found = match look {
            None => self.directory.exact(name),
            Some(look) => self.directory.by_look(look),
        };
        let Some(entry) = found else {
            return Routed::NotHere;
        };
        if self.message.iter().any(|e| e.login() == entry.login()) {
            return Routed::Queued;
        }
        if !self.link.shared.is_up() {
            metrics.cluster.dropped(CrossDrop::LinkDown, 1);
            return Routed::LinkDown;
        }
        self.message.push(entry.clone());
        Routed::Queued
    }

    /// The current message is complete: its line goes into each node's frame once, with
    /// that node's recipients.
    pub fn end_message(&mut self, from: &str, line: &[u8]) {
        if self.message.is_empty() {
            return;
        }
        if self.message.len() == 1 {
            // The common case: one recipient on another node.
            let to = self.message.pop().expect("one recipient");
            let at = self.frame_for(&to.node);
            self.outgoing[at].1.push(from, &[to.login()], line);
            return;
        }
        let mut message = std::mem::take(&mut self.message);
        message.sort_by(|a, b| a.node.cmp(&b.node));
        for group in message.chunk_by(|a, b| a.node == b.node) {
            let node = &group[0].node;
            let logins: Vec<&str> = group.iter().map(Entry::login).collect();
            let at = self.frame_for(node);
            self.outgoing[at].1.push(from, &logins, line);
        }
        message.clear();
        self.message = message;
    }

    /// Where this batch's frame for `node` is in `outgoing` (made when missing).
    fn frame_for(&mut self, node: &Arc<str>) -> usize {
        match self.outgoing.iter().position(|(n, _)| n == node) {
            Some(at) => at,
            None => {
                let me = &self.link.shared.id;
                self.outgoing.push((node.clone(), FrameWriter::new(me)));
                self.outgoing.len() - 1
            }
        }
    }

    /// The batch is complete: one publish per node it reaches. Past the outgoing budget
    /// (Redis slower than the chat), the frame is not sent and its sender is told.
    pub fn end_batch(&mut self, sender: Option<&Outbox>, metrics: &Metrics) {
        for (node, writer) in self.outgoing.drain(..) {
            if writer.is_empty() {
                continue;
            }
            let deliveries = writer.deliveries();
            let frame = writer.finish();
            let queued = self
                .link
                .shared
                .outgoing
                .fetch_add(frame.len(), Ordering::AcqRel);
            if queued + frame.len() > cluster::OUTGOING_LIMIT || !self.link.shared.is_up() {
                self.link
                    .shared
                    .outgoing
                    .fetch_sub(frame.len(), Ordering::AcqRel);
                let why = if self.link.shared.is_up() {
                    CrossDrop::OutgoingFull
                } else {
                    CrossDrop::LinkDown
                };
                tell_undelivered(&frame, sender, why, metrics);
                continue;
            }
            let len = frame.len();
            if self
                .link
                .commands
                .try_send(Command::Publish { node, frame })
                .is_err()
            {
                self.link.shared.outgoing.fetch_sub(len, Ordering::AcqRel);
                metrics.cluster.dropped(CrossDrop::LinkDown, deliveries);
                continue;
            }
            metrics.cluster.deliveries_out.inc_by(deliveries);
        }
    }

    /// Sends an operator's kick of `login` to the node that holds it (or a login that
    /// looks the same); that node's name, or `None` when no other node holds it or the
    /// link cannot take the kick.
    pub fn forward_kick(&self, login: &str, by: &str, reason: Option<&str>) -> Option<Arc<str>> {
        let entry = self.directory.by_look(&crate::names::canonical(login))?;
        let frame = cluster::kick::encode(&cluster::kick::Kick {
            node: &self.link.shared.id,
            login: entry.login(),
            by,
            reason,
        })?;
        let node = entry.node.clone();
        let kick = Command::Kick {
            node: node.clone(),
            frame,
        };
        self.link.commands.try_send(kick).ok()?;
        Some(node)
    }

    /// A relay frame arrived: its bytes leave the inbound budget.
    pub fn relay_done(&self, len: usize) {
        self.link.shared.inbound.fetch_sub(len, Ordering::AcqRel);
    }

    /// The limits relayed lines are checked against now.
    pub fn rules(&self) -> checks::Rules {
        self.link.shared.rules.get()
    }

    pub fn update_gauge(&self, metrics: &Metrics) {
        metrics
            .cluster
            .remote_logins
            .set(self.directory.len() as i64);
    }
}

/// Tells the sender of each record of an undelivered frame which recipients it missed.
/// `sender` is the one sender of a batch the router is building; for a frame the link
/// gave back, the router looks each sender up (`find`).
pub fn tell_undelivered(frame: &[u8], sender: Option<&Outbox>, why: CrossDrop, metrics: &Metrics) {
    tell_each(frame, why, metrics, |_| sender.cloned());
}

/// As [`tell_undelivered`], with each record's sender found by `find`.
pub fn tell_each(
    frame: &[u8],
    why: CrossDrop,
    metrics: &Metrics,
    mut find: impl FnMut(&str) -> Option<Outbox>,
) {
    let Ok(records) = frame::records(frame) else {
        return;
    };
    for record in records.filter_map(Result::ok) {
        metrics.cluster.dropped(why, record.recipients.len() as u64);
        debug!(
            sender = record.sender,
            recipients = record.recipients.len(),
            ?why,
            "cross-node delivery lost"
        );
        if let Some(outbox) = find(record.sender) {
            for name in &record.recipients {
                let _ = outbox.send(Out::Server(protocol::could_not_deliver(name)));
            }
        }
    }
}

/// Delivers a relay frame to this node's logins; `find` gives a login's queue. Each
/// record must pass the client rules (`checks.rs`) and come from a sender that the node
/// named by the frame holds in `directory`; a record that does not is refused, counted
/// and logged at debug. Returns the logins whose queue refused (they are being cut
/// off), for the router to forget.
pub fn deliver_relay(
    frame: Arc<[u8]>,
    directory: &Directory,
    rules: &checks::Rules,
    metrics: &Metrics,
    mut find: impl FnMut(&str) -> Option<Outbox>,
) -> Vec<Arc<str>> {
    let mut cut = Vec::new();
    let records = match frame::records(&frame) {
        Ok(records) => records,
        Err(e) => {
            // Anyone who can publish to Redis can send this: counted, not logged per frame.
            metrics.cluster.dropped(CrossDrop::Malformed, 1);
            debug!(error = ?e, bytes = frame.len(), "a relay frame that is not a-chat's was ignored");
            return cut;
        }
    };
    let source = records.source();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(_) => {
                metrics.cluster.dropped(CrossDrop::Malformed, 1);
                break;
            }
        };
        if record.recipients.is_empty() {
            // Delivers nothing: the record that names the node, or an empty one.
            continue;
        }
        let checked = match directory.holds(source, record.sender) {
            true => checks::check_line(record.sender, &frame[record.line.clone()], rules),
            false => Err(Refusal::Sender),
        };
        if let Err(why) = checked {
            metrics.cluster.refused(why, 1);
            debug!(
                reason = why.label(),
                node = source,
                sender_bytes = record.sender.len(),
                line_bytes = record.line.len(),
                "a relayed record that breaks the rules was refused"
            );
            continue;
        }
        let line = Shared::new(frame.clone(), record.line.clone());
        for name in record.recipients {
            match find(name) {
                Some(outbox) => {
                    metrics.cluster.deliveries_in.inc();
                    metrics.deliveries_routed.inc();
                    if let Err(reason) = outbox.send(Out::Delivery(line.clone())) {
                        metrics.dropped(reason, 1);
                        cut.push(Arc::from(name));
                    }
                }
                // Every login here passed the rules: a name that does not was forged.
                None if !checks::login_ok(name, rules) => {
                    metrics.cluster.refused(Refusal::Recipient, 1);
                }
                None => metrics.cluster.dropped(CrossDrop::RecipientGone, 1),
            }
        }
    }
    cut
}

//! A batch of the router's commands, as the link sends it to Redis in one pipeline and
//! reads its answers: claims and releases in the order they came (consecutive ones of a
//! kind in one call of the registry script), then one PUBLISH per node with every relay
//! frame for it merged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_channel::Sender;
use futures::channel::oneshot;
use redis::Value;

use super::connection::relay_channel;
use super::frame;
use super::{Claim, Command, Inbound, LinkError, Shared};
use crate::metrics::cluster::CrossDrop;

/// Logins in one call of the registry script at most.
pub const CLAIM_CHUNK: usize = 500;

/// One registry call of a batch.
enum Step {
    Claims(Vec<(Box<str>, Arc<str>, oneshot::Sender<Claim>)>),
    Releases(Vec<Box<str>>),
}

/// What a sent batch waits for: the claims to answer and the frames to account for.
pub struct Batch {
    steps: Vec<Step>,
    frames: Vec<(Arc<str>, Vec<u8>)>,
    /// Kicks published after the frames; nothing waits for their answers.
    kicks: Vec<(Arc<str>, Vec<u8>)>,
}

impl Batch {
    /// Groups `commands` into registry calls and publishes, and makes the pipeline.
    /// Releases leave `held` at once: a login released is never claimed again.
    pub fn prepare(
        commands: Vec<Command>,
        held: &mut HashMap<Box<str>, Arc<str>>,
        shared: &Shared,
        sha: &str,
    ) -> (redis::Pipeline, Batch) {
        let mut steps: Vec<Step> = Vec::new();
        let mut frames: Vec<(Arc<str>, Vec<u8>)> = Vec::new();
        let mut kicks: Vec<(Arc<str>, Vec<u8>)> = Vec::new();
        for command in commands {
            match command {
                Command::Claim { look, login, reply } => match steps.last_mut() {
                    Some(Step::Claims(claims)) if claims.len() < CLAIM_CHUNK => {
                        claims.push((look, login, reply))
                    }
                    _ => steps.push(Step::Claims(vec![(look, login, reply)])),
                },
                Command::Release { look } => {
                    held.remove(&look);
                    match steps.last_mut() {
                        Some(Step::Releases(looks)) => looks.push(look),
                        _ => steps.push(Step::Releases(vec![look])),
                    }
                }
                Command::Publish { node, frame } => {
                    shared.outgoing.fetch_sub(frame.len(), Ordering::AcqRel);
                    match frames.iter_mut().find(|(n, _)| *n == node) {
                        Some((_, into)) => frame::merge(into, &frame),
                        None => frames.push((node, frame)),
                    }
                }
                Command::Kick { node, frame } => kicks.push((node, frame)),
            }
        }
        let mut pipe = redis::pipe();
        let me = &*shared.id;
        for step in &steps {
            let cmd = pipe.cmd("EVALSHA").arg(sha).arg(0);
            match step {
                Step::Claims(claims) => {
                    cmd.arg("claim").arg(me);
                    for (look, login, _) in claims {
                        cmd.arg(&**look).arg(&**login);
                    }
                }
                Step::Releases(looks) => {
                    cmd.arg("release").arg(me);
                    for look in looks {
                        cmd.arg(&**look);
                    }
                }
            }
        }
        for (node, frame) in frames.iter().chain(&kicks) {
            pipe.cmd("PUBLISH").arg(relay_channel(node)).arg(&frame[..]);
        }
        (
            pipe,
            Batch {
                steps,
                frames,
                kicks,
            },
        )
    }

    /// Answers the claims and accounts for the frames. `Ok(true)` when the registry said
    /// this node's lease had run out (it must join again); `Err` when the connection
    /// failed (every claim is answered `Unavailable`, every frame given back undelivered).
    pub fn finish(
        self,
        answers: redis::RedisResult<Vec<Value>>,
        held: &mut HashMap<Box<str>, Arc<str>>,
        shared: &Shared,
        inbound: &Sender<Inbound>,
    ) -> Result<bool, LinkError> {
        let m = &shared.metrics.cluster;
        let answers = match answers {
            Ok(answers) => answers,
            Err(e) => {
                for step in self.steps {
                    if let Step::Claims(claims) = step {
                        for (_, _, reply) in claims {
                            m.claims_unavailable.inc();
                            let _ = reply.send(Claim::Unavailable);
                        }
                    }
                }
                for (_, frame) in self.frames {
                    shared.give_back(inbound, frame, CrossDrop::LinkDown);
                }
                for (node, _) in self.kicks {
                    tracing::warn!(
                        node = &*node,
                        "a kick for another node may be lost: the connection to Redis failed"
                    );
                }
                return Err(LinkError::Redis(e));
            }
        };
        let mut answers = answers.into_iter();
        let mut rejoin = false;
        for step in self.steps {
            let answer = answers.next();
            let Step::Claims(claims) = step else {
                continue;
            };
            let alive =
                matches!(&answer, Some(Value::Array(a)) if a.first() == Some(&Value::Int(1)));
            let granted = answer.map(claim_answers).unwrap_or_default();
            rejoin |= !alive;
            for (i, (look, login, reply)) in claims.into_iter().enumerate() {
                let answer = match granted.get(i) {
                    _ if !alive => Claim::Unavailable,
                    Some(true) => Claim::Granted,
                    _ => Claim::Taken,
                };
                match answer {
                    Claim::Granted => {
                        m.claims_granted.inc();
                        held.insert(look, login);
                    }
                    Claim::Taken => {
                        m.claims_taken.inc();
                    }
                    Claim::Unavailable => {
                        m.claims_unavailable.inc();
                    }
                }
                // A reader gone meanwhile: the router releases the login.
                let _ = reply.send(answer);
            }
        }
        for ((_, frame), answer) in self.frames.into_iter().zip(answers.by_ref()) {
            m.publishes.inc();
            if answer == Value::Int(0) {
                shared.give_back(inbound, frame, CrossDrop::NoReceiver);
            }
        }
        for ((node, _), answer) in self.kicks.into_iter().zip(answers) {
            if answer == Value::Int(0) {
                tracing::info!(
                    node = &*node,
                    "a kick found no receiver: its node is gone, and its logins with it"
                );
            }
        }
        Ok(rejoin)
    }
}

/// The per-pair answers of a `claim` call (`{alive, granted...}`).
pub fn claim_answers(value: Value) -> Vec<bool> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .skip(1)
            .map(|v| v == Value::Int(1))
            .collect(),
        _ => Vec::new(),
    }
}

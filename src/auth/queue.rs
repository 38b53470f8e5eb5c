//! The waiting room in front of the hash checks: a bounded number of checks run at once,
//! and the logins waiting for one are served in two classes, so that one attacker with
//! many addresses can neither make the wait grow without bound nor push real users back.
//!
//! - Logins from addresses without recent failures ([`Class::Clean`]) are served before
//!   those from addresses with failures in their window ([`Class::Suspect`]); within a
//!   class, first come first served.
//! - At most [`MAX_WAITING`] logins wait. A newcomer that finds the room full is refused
//!   at once (`error: server busy, try again`), unless it is clean and a suspect waits:
//!   then the suspect that came last is refused instead and the newcomer takes its place.
//! - A login that leaves while it waits (its client timed out or went away, the drain
//!   began) gives its place back; one that was handed a slot it never used gives the slot
//!   to the next.
//!
//! The bookkeeping ([`Room`]) is pure; [`Queue`] puts it behind a lock with wake-ups.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::channel::oneshot;

/// Logins waiting for a hash check, at most (about 100 bytes each). With the default
/// hash settings a check takes 20-40 ms of one core, so a full room is several seconds
/// of work for one checker: a login that would wait longer is better told to retry.
pub const MAX_WAITING: usize = 256;

/// Which line a login waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Its address had no failed login within the limiter's window.
    Clean,
    /// Its address had failures (or attempts being checked) within the window.
    Suspect,
}

/// What a newcomer gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// A slot was free: the check may run now.
    Run,
    /// It waits under this id.
    Wait(u64),
    /// The room is full: refused.
    Busy,
}

/// The pure bookkeeping: slots in use, and the waiting lines, each waiter carrying a `T`
/// (the way to wake it).
#[derive(Debug)]
pub struct Room<T> {
    /// Checks running now (slots handed out).
    running: usize,
    /// Checks allowed at once.
    slots: usize,
    /// Logins allowed to wait, both classes together.
    cap: usize,
    /// The clean line, then the suspect line, oldest first.
    lines: [VecDeque<(u64, T)>; 2],
    /// The id the next waiter gets.
    next_id: u64,
}

impl<T> Room<T> {
    pub fn new(slots: usize, cap: usize) -> Room<T> {
        Room {
            running: 0,
            slots: slots.max(1),
            cap,
            lines: [VecDeque::new(), VecDeque::new()],
            next_id: 0,
        }
    }

    /// Logins waiting now.
    pub fn waiting(&self) -> usize {
        self.lines[0].len() + self.lines[1].len()
    }

    /// A newcomer of `class`, woken through `wake` if it must wait. The second value is a
    /// suspect pushed out to make room for a clean newcomer: tell it it was refused.
    pub fn enter(&mut self, class: Class, wake: T) -> (Admit, Option<T>) {
        if self.running < self.slots && self.waiting() == 0 {
            self.running += 1;
            return (Admit::Run, None);
        }
        let mut pushed_out = None;
        if self.waiting() >= self.cap {
            if class == Class::Suspect || self.lines[1].is_empty() {
                return (Admit::Busy, None);
            }
            pushed_out = self.lines[1].pop_back().map(|(_, suspect)| suspect);
        }
        let id = self.next_id;
        self.next_id += 1;
        let line = match class {
            Class::Clean => 0,
            Class::Suspect => 1,
        };
        self.lines[line].push_back((id, wake));
        (Admit::Wait(id), pushed_out)
    }

    /// A slot was given back: the waiter it passes to (clean ones first), if any.
    pub fn leave(&mut self) -> Option<T> {
        for line in &mut self.lines {
            if let Some((_, next)) = line.pop_front() {
                return Some(next);
            }
        }
        self.running = self.running.saturating_sub(1);
        None
    }

    /// The waiter `id` gave up: true if it was still waiting (now removed), false if it
    /// had been handed a slot or refused already.
    pub fn cancel(&mut self, id: u64) -> bool {
        for line in &mut self.lines {
            if let Some(at) = line.iter().position(|(i, _)| *i == id) {
                line.remove(at);
                return true;
            }
        }
        false
    }
}

/// What a waiter is told.
enum Turn {
    Run,
    Busy,
}

/// The room behind a lock: what the hash checks share.
pub struct Queue {
    room: Mutex<Room<oneshot::Sender<Turn>>>,
}

/// The room was full: the login is refused without a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A running check's slot; given back (to the next waiter) when dropped.
pub struct Slot {
    queue: Arc<Queue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.release();
    }
}

impl Queue {
    pub fn new(slots: usize, cap: usize) -> Arc<Queue> {
        Arc::new(Queue {
            room: Mutex::new(Room::new(slots, cap)),
        })
    }

    fn room(&self) -> std::sync::MutexGuard<'_, Room<oneshot::Sender<Turn>>> {
        self.room.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logins waiting for a check now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.room().waiting()
    }

    /// Waits for a slot in `class`'s line; `Err(Busy)` at once, or later if a clean
    /// newcomer pushes this one out. Dropping the future gives its place back.
    pub fn enter(self: &Arc<Self>, class: Class) -> impl Future<Output = Result<Slot, Busy>> {
        let (tx, rx) = oneshot::channel();
        let (admit, pushed_out) = self.room().enter(class, tx);
        if let Some(suspect) = pushed_out {
            let _ = suspect.send(Turn::Busy);
        }
        let state = match admit {
            Admit::Run => State::Ready(Ok(())),
            Admit::Busy => State::Ready(Err(Busy)),
            Admit::Wait(id) => State::Waiting(id, rx),
        };
        Enter {
            queue: self.clone(),
            state,
        }
    }

    /// A slot given back: handed to the next waiter still there.
    fn release(&self) {
        loop {
            let next = self.room().leave();
            match next {
                None => return,
                // Sent under no lock; a waiter that is gone gives it back in its drop.
                Some(tx) => {
                    if tx.send(Turn::Run).is_ok() {
                        return;
                    }
                }
            }
        }
    }
}

/// Where an [`Enter`] future stands.
enum State {
    Ready(Result<(), Busy>),
    Waiting(u64, oneshot::Receiver<Turn>),
    Done,
}

/// The future of [`Queue::enter`].
struct Enter {
    queue: Arc<Queue>,
    state: State,
}

impl Future for Enter {
    type Output = Result<Slot, Busy>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let got = match &mut this.state {
            State::Ready(result) => *result,
            State::Waiting(_, rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Turn::Run)) => Ok(()),
                Poll::Ready(Ok(Turn::Busy)) | Poll::Ready(Err(_)) => Err(Busy),
            },
            State::Done => return Poll::Pending,
        };
        this.state = State::Done;
        Poll::Ready(got.map(|()| Slot {
            queue: this.queue.clone(),
        }))
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            // A slot taken at entry and never used.
            State::Ready(Ok(())) => self.queue.release(),
            State::Waiting(id, mut rx) => {
                if self.queue.room().cancel(id) {
                    return;
                }
                // Handed a slot (or refused) before it could look: a slot goes on.
                if let Ok(Some(Turn::Run)) = rx.try_recv() {
                    self.queue.release();
                }
            }
            State::Ready(Err(Busy)) | State::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slots_run_at_once_and_then_logins_wait_clean_first() {
        let mut room = Room::new(1, 10);
        assert_eq!(room.enter(Class::Suspect, "a"), (Admit::Run, None));
        assert_eq!(room.enter(Class::Suspect, "s1"), (Admit::Wait(0), None));
        assert_eq!(room.enter(Class::Clean, "c1"), (Admit::Wait(1), None));
        assert_eq!(room.enter(Class::Suspect, "s2"), (Admit::Wait(2), None));
        assert_eq!(room.enter(Class::Clean, "c2"), (Admit::Wait(3), None));
        let order: Vec<_> = std::iter::from_fn(|| room.leave()).collect();
        assert_eq!(order, ["c1", "c2", "s1", "s2"]);
        assert_eq!(room.running, 0, "the last slot came back");
        assert_eq!(room.enter(Class::Clean, "b"), (Admit::Run, None));
    }

    #[test]
    fn a_full_room_refuses_and_a_clean_newcomer_pushes_out_the_last_suspect() {
        let mut room = Room::new(1, 3);
        assert_eq!(room.enter(Class::Clean, "run").0, Admit::Run);
        room.enter(Class::Suspect, "s1");
        room.enter(Class::Clean, "c1");
        room.enter(Class::Suspect, "s2");
        assert_eq!(room.enter(Class::Suspect, "s3"), (Admit::Busy, None));
        assert_eq!(room.enter(Class::Clean, "c2"), (Admit::Wait(3), Some("s2")));
        assert_eq!(room.enter(Class::Clean, "c3"), (Admit::Wait(4), Some("s1")));
        assert_eq!(room.enter(Class::Clean, "c4"), (Admit::Busy, None));
        assert_eq!(room.waiting(), 3);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_its_place() {
        let mut room = Room::new(1, 2);
        room.enter(Class::Clean, "run");
        let Admit::Wait(id) = room.enter(Class::Clean, "gone").0 else {
            panic!()
        };
        room.enter(Class::Clean, "next");
        assert!(room.cancel(id));
        assert!(!room.cancel(id));
        assert_eq!(room.enter(Class::Clean, "third").0, Admit::Wait(2));
        assert_eq!(room.leave(), Some("next"));
    }

    #[test]
    fn slots_pass_from_check_to_check_and_dropped_waiters_give_theirs_back() {
        use futures::FutureExt;
        let queue = Queue::new(1, 4);
        let first = queue.enter(Class::Clean).now_or_never().unwrap().unwrap();
        let mut waiting = Box::pin(queue.enter(Class::Clean));
        assert!(waiting.as_mut().now_or_never().is_none());
        let mut dropped = Box::pin(queue.enter(Class::Clean));
        assert!(dropped.as_mut().now_or_never().is_none());
        assert_eq!(queue.waiting(), 2);
        drop(first);
        // The slot went to the first waiter; the second gives up its place.
        drop(dropped);
        assert_eq!(queue.waiting(), 0);
        let second = waiting.now_or_never().unwrap().unwrap();
        // A waiter handed the slot that never looks gives it on.
        let mut late = Box::pin(queue.enter(Class::Clean));
        assert!(late.as_mut().now_or_never().is_none());
        drop(second);
        drop(late);
        assert!(queue.enter(Class::Clean).now_or_never().unwrap().is_ok());
    }
}

//! The drain signal inside the server, carried the book's way: a channel that never
//! carries a value and is closed by dropping its only sender. Every task that must react
//! to the drain holds a [`Shutdown`]; the server drops the sender when the drain begins.

use async_channel::{Receiver, Sender};

/// A value that cannot exist: the channel only ever reports that it closed.
pub enum Void {}

/// Creates the trigger (drop it to start the drain) and the first listener.
pub fn channel() -> (Sender<Void>, Shutdown) {
    let (tx, rx) = async_channel::bounded(1);
    (tx, Shutdown { rx })
}

/// One task's view of the drain signal.
#[derive(Clone)]
pub struct Shutdown {
    /// Closed (all senders dropped) once the drain has begun.
    rx: Receiver<Void>,
}

impl Shutdown {
    /// Resolves once the drain has begun.
    pub async fn wait(&self) {
        // No value is ever sent, so `recv` only returns when the sender is dropped.
        let _ = self.rx.recv().await;
    }

    /// True once the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.rx.is_closed()
    }
}

/// Counts live tasks the same way: each holds a clone of the sender, and
/// [`wait_all`] resolves once every clone has been dropped.
pub fn task_group() -> (Sender<Void>, Receiver<Void>) {
    async_channel::bounded(1)
}

/// Resolves once every sender of the group has been dropped.
pub async fn wait_all(group: Receiver<Void>) {
    let _ = group.recv().await;
}

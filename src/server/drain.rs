//! Shutdown (DESIGN §5): SIGINT/SIGTERM start the drain, a second signal exits at once,
//! and the drain ends with one summary line of what was delivered and what was dropped.
//! The ordered drain itself is the tail of [`crate::server::run`].

use std::future::Future;
use std::io;
use std::time::Duration;

use futures::channel::oneshot;
use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_async_std::Signals;
use tracing::{info, warn};

use crate::metrics::{DropReason, Metrics};
use crate::runtime;

/// What the drain did, for the summary line and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Connections open when the drain began.
    pub connections_closed: i64,
    /// Deliveries written to clients over the daemon's life.
    pub delivered: u64,
    pub dropped_recipient_gone: u64,
    pub dropped_slow_consumer: u64,
    /// Deliveries still queued when `drain_timeout` ran out.
    pub dropped_drain_deadline: u64,
    /// False when `drain_timeout` cut the drain short.
    pub completed: bool,
    pub drain_time: Duration,
}

pub(crate) fn summarize(
    metrics: &Metrics,
    open_at_start: i64,
    completed: bool,
    took: Duration,
) -> Summary {
    let delivered = metrics.messages_delivered.get();
    let gone = metrics.dropped_total(DropReason::RecipientGone);
    let slow = metrics.dropped_total(DropReason::SlowConsumer);
    // Every routed delivery ends delivered or dropped; what is neither is still queued.
    let stranded = metrics
        .deliveries_routed
        .get()
        .saturating_sub(delivered + gone + slow);
    metrics.dropped(DropReason::DrainDeadline, stranded);
    Summary {
        connections_closed: open_at_start - metrics.connections_open.get(),
        delivered,
        dropped_recipient_gone: gone,
        dropped_slow_consumer: slow,
        dropped_drain_deadline: stranded,
        completed,
        drain_time: took,
    }
}

impl Summary {
    /// Deliveries not written, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_recipient_gone + self.dropped_slow_consumer + self.dropped_drain_deadline
    }

    /// Logs the one summary line of the drain.
    pub fn log(&self) {
        let dropped = self.dropped();
        info!(
            connections_closed = self.connections_closed,
            delivered = self.delivered,
            dropped,
            dropped_recipient_gone = self.dropped_recipient_gone,
            dropped_slow_consumer = self.dropped_slow_consumer,
            dropped_drain_deadline = self.dropped_drain_deadline,
            completed = self.completed,
            took = ?self.drain_time,
            "drain finished"
        );
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Listens for SIGINT and SIGTERM. The returned future resolves at the first one (after
/// `on_first` ran); a second one ends the process at once with status 128 + its number
/// (130 for SIGINT, 143 for SIGTERM).
pub fn on_signals(
    on_first: impl FnOnce() + Send + 'static,
) -> io::Result<impl Future<Output = ()>> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let (first_tx, first_rx) = oneshot::channel::<()>();
    runtime::spawn(async move {
        let Some(first) = signals.next().await else {
            return;
        };
        info!(
            signal = signal_name(first),
            "signal received: draining (send it again to exit at once)"
        );
        on_first();
        let _ = first_tx.send(());
        if let Some(second) = signals.next().await {
            warn!(
                signal = signal_name(second),
                "second signal: exiting without finishing the drain"
            );
            eprintln!(
                "a-chat: {}: exiting without finishing the drain",
                signal_name(second)
            );
            std::process::exit(128 + second);
        }
    });
    Ok(async move {
        let _ = first_rx.await;
    })
}

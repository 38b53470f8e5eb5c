//! Shutdown (ARCHITECTURE §5): SIGINT/SIGTERM start the drain, a second signal exits at once,
//! and the drain ends with one summary line of what was delivered and what was dropped.
//! The ordered drain itself is the tail of [`crate::server::run`].

use std::io;
use std::time::Duration;

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_async_std::Signals;
use tracing::{info, warn};

use crate::metrics::{DropReason, Metrics};
use crate::runtime;

/// What the drain did, for the summary line and for tests. Every count is the drain's
/// own (from the signal to the end), except the `_total` ones, which cover the daemon's
/// whole life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Connections that closed during the drain.
    pub connections_closed: i64,
    /// Connections still open when `drain_timeout` cut the drain short (0 when it
    /// finished): their clients may have missed deliveries and the notice.
    pub connections_cut: i64,
    /// Deliveries written to clients during the drain.
    pub delivered: u64,
    pub dropped_recipient_gone: u64,
    pub dropped_slow_consumer: u64,
    /// Deliveries still queued when `drain_timeout` ran out.
    pub dropped_drain_deadline: u64,
    /// Deliveries written over the daemon's life.
    pub delivered_total: u64,
    /// Deliveries not written over the daemon's life, whatever the reason.
    pub dropped_total: u64,
    /// False when `drain_timeout` cut the drain short.
    pub completed: bool,
    pub drain_time: Duration,
}

/// The counters at the start of the drain, to report the drain's own counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AtStart {
    open: i64,
    delivered: u64,
    gone: u64,
    slow: u64,
}

impl AtStart {
    pub(crate) fn take(metrics: &Metrics) -> AtStart {
        AtStart {
            open: metrics.connections_open.get(),
            delivered: metrics.messages_delivered.get(),
            gone: metrics.dropped_total(DropReason::RecipientGone),
            slow: metrics.dropped_total(DropReason::SlowConsumer),
        }
    }
}

pub(crate) fn summarize(
    metrics: &Metrics,
    start: AtStart,
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
    let open = metrics.connections_open.get();
    Summary {
        connections_closed: start.open - open,
        connections_cut: if completed { 0 } else { open },
        delivered: delivered - start.delivered,
        dropped_recipient_gone: gone - start.gone,
        dropped_slow_consumer: slow - start.slow,
        dropped_drain_deadline: stranded,
        delivered_total: delivered,
        dropped_total: gone + slow + metrics.dropped_total(DropReason::DrainDeadline),
        completed,
        drain_time: took,
    }
}

impl Summary {
    /// Deliveries not written during the drain, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_recipient_gone + self.dropped_slow_consumer + self.dropped_drain_deadline
    }

    /// Logs the one summary line of the drain: at info when it finished, as a warning
    /// when `drain_timeout` cut it short.
    pub fn log(&self) {
        macro_rules! summary {
            ($level:ident, $message:literal) => {
                $level!(
                    connections_closed = self.connections_closed,
                    connections_cut = self.connections_cut,
                    delivered = self.delivered,
                    dropped = self.dropped(),
                    dropped_recipient_gone = self.dropped_recipient_gone,
                    dropped_slow_consumer = self.dropped_slow_consumer,
                    dropped_drain_deadline = self.dropped_drain_deadline,
                    delivered_total = self.delivered_total,
                    dropped_total = self.dropped_total,
                    completed = self.completed,
                    took_ms = self.drain_time.as_millis() as u64,
                    $message
                )
            };
        }
        if self.completed {
            summary!(info, "drain finished");
        } else {
            summary!(warn, "drain finished: cut short at drain_timeout");
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// Listens for SIGINT and SIGTERM. The first one runs `on_first` (which starts the
/// drain); a second one ends the process at once with status 128 + its number (130 for
/// SIGINT, 143 for SIGTERM).
pub fn on_signals(on_first: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    runtime::spawn(async move {
        let Some(first) = signals.next().await else {
            return;
        };
        info!(
            signal = signal_name(first),
            "signal received: draining (send it again to exit at once)"
        );
        on_first();
        if let Some(second) = signals.next().await {
            warn!(
                signal = signal_name(second),
                "second signal: exiting without finishing the drain"
            );
            // Through the log, in the format in force (a JSON pipeline gets JSON).
            crate::telemetry::exit(128 + second);
        }
    });
    Ok(())
}

/// Signals an operator may send by habit whose default action would end the process:
/// SIGUSR1 (NATS and many daemons reopen their log files on it) and SIGUSR2. Neither means
/// anything to a-chat (it logs to stderr, so there is no file to reopen): each is caught and
/// logged, and the daemon goes on serving. SIGPIPE stays ignored, as every Rust program
/// starts (a handler would log a line per write to a vanished log reader, itself a write to
/// that reader). SIGHUP is the reload (`crate::reload`); SIGINT and SIGTERM are the drain
/// ([`on_signals`]).
pub fn ignore_habitual_signals() -> io::Result<()> {
    let mut signals = Signals::new([SIGUSR1, SIGUSR2])?;
    runtime::spawn(async move {
        while let Some(signal) = signals.next().await {
            info!(
                signal = signal_name(signal),
                "signal received and ignored: a-chat has no log file to reopen (SIGHUP reloads the configuration, SIGTERM drains)"
            );
        }
    });
    Ok(())
}

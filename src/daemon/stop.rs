//! How the daemon leaves: the drain (SIGINT, SIGTERM, `POST /drain`) and lame duck mode
//! (SIGQUIT, `POST /lame-duck`), each started by whichever door asks first. Lame duck
//! mode turns `/readyz` 503 at once, stops accepting after `[shutdown] drain_delay` (so
//! that balancers notice first), closes the logged-in clients spread evenly over
//! `[shutdown] lame_duck_duration` with a notice (so that they reconnect to the other
//! nodes a few at a time), and then drains as SIGTERM does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use futures::StreamExt;
use signal_hook::consts::SIGQUIT;
use signal_hook_async_std::Signals;
use tracing::{info, Instrument};

use crate::config::ShutdownConfig;
use crate::health::Health;
use crate::metrics::{CloseReason, Metrics};
use crate::runtime;
use crate::server::{Closing, Live};

/// What a client closed by lame duck mode reads last.
pub const LAME_DUCK_NOTICE: &str = "server going away, reconnect to another";

/// Fewest milliseconds between two rounds of lame-duck closes: with more clients than
/// that allows, each round closes several.
const ROUND: Duration = Duration::from_millis(10);

/// Starts the drain or lame duck mode, once.
pub struct Stop {
    /// `/readyz` turns 503 the moment either begins.
    health: Arc<Health>,
    /// The connections lame duck mode closes, and the accept loop it stops.
    live: Arc<Live>,
    /// `achat_lame_duck`.
    metrics: Arc<Metrics>,
    /// `drain_delay` and `lame_duck_duration`.
    timing: ShutdownConfig,
    /// Fired (dropped) when the drain begins: the server's shutdown future waits for it.
    drain: Mutex<Option<oneshot::Sender<()>>>,
    /// Set when lame duck mode begins, so that a second request does not start a second.
    lame: AtomicBool,
}

impl Stop {
    /// The stop controller, and the future that resolves when the drain begins.
    pub fn new(
        health: Arc<Health>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        timing: ShutdownConfig,
    ) -> (Arc<Stop>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = oneshot::channel();
        let stop = Arc::new(Stop {
            health,
            live,
            metrics,
            timing,
            drain: Mutex::new(Some(tx)),
            lame: AtomicBool::new(false),
        });
        (stop, async move {
            let _ = rx.await;
        })
    }

    /// Starts the drain (`why` names who asked, for the log); false when it had begun.
    pub fn drain(&self, why: &str) -> bool {
        let Some(trigger) = self.drain.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return false;
        };
        info!(by = why, "drain asked");
        self.health.set_draining();
        crate::notify::stopping();
        drop(trigger);
        true
    }

    fn draining(&self) -> bool {
        self.drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Starts lame duck mode (`why` names who asked); false when it or the drain had
    /// begun already.
    pub fn lame_duck(self: &Arc<Self>, why: &str) -> bool {
        if self.draining() || self.lame.swap(true, Ordering::AcqRel) || !self.health.set_lame_duck()
        {
            return false;
        }
        self.metrics.operator.lame_duck.set(1);
        let (delay, spread) = (self.timing.drain_delay, self.timing.lame_duck_duration);
        info!(by = why, drain_delay = ?delay, lame_duck_duration = ?spread, "lame duck mode: not ready; accepting stops after drain_delay, then clients are closed spread over lame_duck_duration, then the drain");
        crate::notify::status("lame duck: leaving");
        let stop = self.clone();
        runtime::spawn(stop.leave().instrument(tracing::info_span!("lame_duck")));
        true
    }

    /// Lame duck mode, from the delay to the drain.
    async fn leave(self: Arc<Self>) {
        runtime::sleep(self.timing.drain_delay).await;
        if self.draining() {
            return;
        }
        self.live.stop_accepting();
        let ids = self.live.logged_in();
        let (per_round, pause) = rounds(ids.len(), self.timing.lame_duck_duration);
        info!(clients = ids.len(), per_round, pause = ?pause, "lame duck: closing clients");
        let mut closed = 0usize;
        for chunk in ids.chunks(per_round.max(1)) {
            if self.draining() {
                return;
            }
            for &conn in chunk {
                let closing = self
                    .live
                    .close(conn, CloseReason::LameDuck, LAME_DUCK_NOTICE);
                closed += matches!(closing, Some(Closing::Now { .. })) as usize;
            }
            runtime::sleep(pause).await;
        }
        info!(closed, "lame duck: every client closed");
        self.drain("lame duck");
    }
}

/// How to spread `clients` closes over `spread`: how many per round and the pause after
/// each round (rounds at least [`ROUND`] apart).
fn rounds(clients: usize, spread: Duration) -> (usize, Duration) {
    if clients == 0 {
        return (1, Duration::ZERO);
    }
    let most_rounds = (spread.as_nanos() / ROUND.as_nanos()).max(1) as usize;
    let rounds = clients.min(most_rounds);
    let per_round = clients.div_ceil(rounds);
    let rounds = clients.div_ceil(per_round);
    (per_round, spread / rounds as u32)
}

/// SIGQUIT starts lame duck mode (as `nginx -s quit` asks nginx to leave gracefully).
pub fn on_sigquit(stop: Arc<Stop>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGQUIT])?;
    runtime::spawn(async move {
        while signals.next().await.is_some() {
            if !stop.lame_duck("SIGQUIT") {
                info!(
                    signal = "SIGQUIT",
                    "already leaving: lame duck mode or the drain has begun"
                );
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_in_rounds() {
        let s = Duration::from_secs(30);
        assert_eq!(rounds(0, s), (1, Duration::ZERO));
        assert_eq!(rounds(3, s), (1, Duration::from_secs(10)));
        assert_eq!(rounds(3000, s), (1, Duration::from_millis(10)));
        assert_eq!(rounds(6000, s), (2, Duration::from_millis(10)));
        assert_eq!(rounds(10, Duration::ZERO), (10, Duration::ZERO));
    }
}

//! The coordinator of a direct, fanout, rate or idle run: it starts the worker
//! threads and leads them through the phases (log in, run, drain), shows
//! progress once a second, and stops early when the run cannot go on. `lib`
//! measures around the phases and prints the summary.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::args::BenchArgs;
use super::plan::{Load, Plan};
use super::shared::{Shared, WorkerStats, DONE, DRAIN, RUN};
use super::{spread, worker};

/// A run in progress, seen from the coordinating thread.
pub struct Coordinator<'a> {
    /// The command line: `--duration`, `--grace` and `--quiet` shape the phases.
    args: &'a BenchArgs,
    /// What the workers do; each holds a reference.
    plan: Arc<Plan>,
    /// The phase and counters the workers and the coordinator share.
    shared: Arc<Shared>,
    /// The worker threads, joined at the end for what they measured.
    handles: Vec<JoinHandle<WorkerStats>>,
    /// `idle`: logins may fail without stopping the run, and nothing is sent.
    idle: bool,
}

/// Prints a progress line unless `--quiet`.
fn progress(quiet: bool, line: std::fmt::Arguments<'_>) {
    if !quiet {
        eprintln!("{line}");
    }
}

/// Sleeps until `until`, at most `step`.
fn nap(until: Instant, step: Duration) {
    let now = Instant::now();
    if until > now {
        thread::sleep((until - now).min(step));
    }
}

impl<'a> Coordinator<'a> {
    /// The shared state for `plan`; no worker runs yet.
    pub fn new(args: &'a BenchArgs, plan: Arc<Plan>) -> Result<Self, String> {
        let shared =
            Arc::new(Shared::new(plan.clients, plan.threads).map_err(|e| format!("setup: {e}"))?);
        Ok(Coordinator {
            args,
            idle: matches!(plan.load, Load::Idle),
            plan,
            shared,
            handles: Vec::new(),
        })
    }

    /// Starts one worker thread for every `--threads`; they connect and log in.
    pub fn spawn_workers(&mut self) -> Result<(), String> {
        for me in 0..self.plan.threads {
            let (plan, shared) = (self.plan.clone(), self.shared.clone());
            let handle = thread::Builder::new()
                .name(format!("bench-{me}"))
                .spawn(move || worker::run(plan, shared, me))
                .map_err(|e| format!("spawning a worker: {e}"))?;
            self.handles.push(handle);
        }
        Ok(())
    }

    /// Phase 1: waits until every client is connected and its login confirmed by
    /// a message to itself; returns how long that took and how many are in.
    /// Unless idle, a failed login ends the run with an error.
    pub fn log_in(&mut self) -> Result<(Duration, usize), String> {
        let login_start = Instant::now();
        let login_ok = self.wait_for_logins(login_start);
        let login_time = login_start.elapsed();
        let confirmed = self.shared.confirmed.load(SeqCst);
        let plan = &*self.plan;
        if !login_ok && !self.idle {
            self.shared.set_phase(DONE);
            join(std::mem::take(&mut self.handles));
            let notes = self.shared.notes();
            return Err(format!(
                "could not log in all {} clients at {} ({confirmed} confirmed): {}",
                plan.clients,
                spread::addrs_text(&plan.access.addrs),
                notes.join("; ")
            ));
        }
        progress(
            self.args.quiet,
            format_args!(
                "[{:5.1}s] {confirmed} clients logged in at {} ({} worker thread{})",
                login_time.as_secs_f64(),
                spread::addrs_text(&plan.access.addrs),
                plan.threads,
                if plan.threads == 1 { "" } else { "s" }
            ),
        );
        Ok((login_time, confirmed))
    }

    /// Whether every login was confirmed: false at the first failure (unless
    /// idle) or once `--connect-timeout` has passed since the last connect.
    fn wait_for_logins(&self, login_start: Instant) -> bool {
        let (plan, shared) = (&*self.plan, &*self.shared);
        let mut connected_at: Option<Instant> = None;
        let mut next_tick = login_start + Duration::from_secs(1);
        loop {
            nap(next_tick, Duration::from_millis(10));
            let opened = shared.opened.load(SeqCst);
            let confirmed = shared.confirmed.load(SeqCst);
            let failed = shared.connect_failed.load(SeqCst) + shared.login_failed.load(SeqCst);
            let all_connected = shared.workers_connected.load(SeqCst) == plan.threads;
            if all_connected && connected_at.is_none() {
                connected_at = Some(Instant::now());
            }
            if failed > 0 && !self.idle {
                return false;
            }
            if all_connected && confirmed + shared.login_failed.load(SeqCst) == opened {
                return failed == 0;
            }
            if connected_at.is_some_and(|t| t.elapsed() > plan.access.connect_timeout) {
                shared.note(|| {
                    format!(
                        "only {confirmed} of {opened} logins confirmed within --connect-timeout"
                    )
                });
                return false;
            }
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                progress(
                    self.args.quiet,
                    format_args!(
                        "[{:5.1}s] logging in: {confirmed} confirmed, {opened} connected of {}",
                        login_start.elapsed().as_secs_f64(),
                        plan.clients
                    ),
                );
            }
        }
    }

    /// Phase 2: the workers send (or, idle, hold their connections) for
    /// `--duration`, until `--messages` are all sent, or until no connection is
    /// left. Returns how long it ran, and the deliveries and messages sent by then.
    pub fn run(&self, confirmed: usize) -> (Duration, u64, u64) {
        let (plan, shared) = (&*self.plan, &*self.shared);
        let run_start = Instant::now();
        shared.run_start_ns.store(shared.now_ns(), SeqCst);
        shared.set_phase(RUN);
        let end = run_start + self.args.duration;
        let mut next_tick = run_start + Duration::from_secs(1);
        let mut last = (run_start, 0u64);
        while Instant::now() < end {
            nap(end.min(next_tick), Duration::from_millis(5));
            if plan.messages.is_some() && shared.senders_done.load(SeqCst) == plan.clients {
                break;
            }
            if shared.open_conns.load(SeqCst) == 0 {
                shared.note(|| "every connection was closed: run stopped".into());
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick += Duration::from_secs(1);
                let delivered = shared.delivered.load(SeqCst);
                let rate = (delivered - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, delivered);
                self.run_progress((now - run_start).as_secs_f64(), confirmed, delivered, rate);
            }
        }
        let send_time = run_start.elapsed();
        let delivered_at_stop = shared.delivered.load(SeqCst);
        let sent_at_stop = shared.sent_msgs.load(SeqCst);
        (send_time, delivered_at_stop, sent_at_stop)
    }

    /// The run phase's line a second: connections held, or deliveries and their rate.
    fn run_progress(&self, secs: f64, confirmed: usize, delivered: u64, rate: f64) {
        let (quiet, shared) = (self.args.quiet, &*self.shared);
        if self.idle {
            progress(
                quiet,
                format_args!(
                    "[{secs:5.1}s] holding {confirmed} connections, trouble {}",
                    shared.trouble.load(SeqCst)
                ),
            );
        } else {
            let sent = shared.sent_deliveries.load(SeqCst);
            progress(
                quiet,
                format_args!(
                    "[{secs:5.1}s] delivered {delivered} ({rate:.0}/s), in flight {}, trouble {}",
                    sent.saturating_sub(delivered),
                    shared.trouble.load(SeqCst)
                ),
            );
        }
    }

    /// Phase 3: sending stops; waits up to `--grace` for what is still in flight.
    /// Returns how long it waited.
    pub fn drain(&self) -> Duration {
        let (plan, shared, grace) = (&*self.plan, &*self.shared, self.args.grace);
        shared.set_phase(DRAIN);
        let drain_start = Instant::now();
        if !self.idle && shared.open_conns.load(SeqCst) > 0 {
            // The sent counters are final once every worker has seen the phase.
            while drain_start.elapsed() < grace
                && shared.stopped_sending.load(SeqCst) < plan.threads
            {
                thread::sleep(Duration::from_millis(1));
            }
            while drain_start.elapsed() < grace
                && shared.delivered.load(SeqCst) < shared.sent_deliveries.load(SeqCst)
            {
                thread::sleep(Duration::from_millis(2));
            }
        }
        drain_start.elapsed()
    }

    /// Ends the run: the workers stop and hand back what they measured.
    pub fn finish(self) -> (Arc<Shared>, Vec<WorkerStats>) {
        self.shared.set_phase(DONE);
        (self.shared, join(self.handles))
    }
}

/// What every worker measured (nothing, for one that panicked).
fn join(handles: Vec<JoinHandle<WorkerStats>>) -> Vec<WorkerStats> {
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect()
}

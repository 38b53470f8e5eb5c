//! `a-chat-bench` (also run as `a-chat bench`): a load generator for the a-chat protocol
//! (and, for comparison on the same machine, for Redis pub/sub). A crate of its own: the
//! daemon does not carry it, and it shares only the version and the TLS client setup with
//! the daemon's library.
//!
//! Clients log in, confirm their login by messaging themselves, then send
//! messages whose payload carries the sender, a per-pair sequence number and the
//! send time. Receivers measure latency and check loss, duplicates and
//! reordering for every (sender, recipient) pair. Worker threads each run an
//! epoll loop over their share of the connections (see `worker`); this module
//! coordinates the phases (log in, run, drain).
//!
//! Where the rest lives: `args` (the command line), `plan` (what a run does),
//! `shared` (coordinator/worker state), `worker` (the epoll loops), `report`
//! (the summary), `storm` and `burst` (workloads with loops of their own),
//! `link` (a connection's transport: plain TCP or TLS), `spread` (clients over
//! several addresses, the nodes of a cluster), and the pure helpers `wire`,
//! `payload`, `checker`, `histogram`, `sys`.

mod args;
mod burst;
mod checker;
mod histogram;
mod link;
mod payload;
mod plan;
mod report;
mod shared;
mod spread;
mod storm;
mod sys;
mod wire;
mod worker;

#[cfg(test)]
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use args::BenchArgs;
use args::Workload;
#[cfg(test)]
use args::{parse_bytes, parse_duration, parse_rate};
use plan::{build_plan, ensure_descriptors, plan_warnings, Load};
use report::Summary;
#[cfg(test)]
use report::{fmt_ns, json_str};
use shared::{Shared, WorkerStats, DONE, DRAIN, RUN};

/// Runs the bench; the exit code says whether every check passed.
pub fn run(args: BenchArgs) -> ExitCode {
    match run_checked(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("a-chat bench: {msg}");
            ExitCode::from(2)
        }
    }
}

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

/// The summed VmRSS of the `--pid` processes, if there are any and all are readable.
fn servers_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| sys::proc_rss_kib(p)).sum()
}

/// The summed CPU time of the `--pid` processes, if there are any and all are readable.
fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| sys::proc_cpu(p)).sum()
}

fn run_checked(args: &BenchArgs) -> Result<bool, String> {
    match args.workload {
        Workload::Storm { n, concurrency } => return storm::run(args, n, concurrency),
        Workload::Burst {
            senders,
            burst_bytes,
            rounds,
        } => return burst::run(args, senders, burst_bytes, rounds),
        _ => {}
    }
    let plan = Arc::new(build_plan(args)?);
    ensure_descriptors(&plan)?;
    let warnings = plan_warnings(&plan, &args.pid);
    for w in &warnings {
        eprintln!("a-chat bench: warning: {w}");
    }
    for &pid in &args.pid {
        if sys::proc_rss_kib(pid).is_none() {
            return Err(format!("--pid {pid}: no such process readable in /proc"));
        }
    }
    let idle = matches!(plan.load, Load::Idle);
    let quiet = args.quiet;
    let shared =
        Arc::new(Shared::new(plan.clients, plan.threads).map_err(|e| format!("setup: {e}"))?);
    let rss_before = servers_rss(&args.pid);

    let handles: Vec<_> = (0..plan.threads)
        .map(|me| {
            let (plan, shared) = (plan.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("bench-{me}"))
                .spawn(move || worker::run(plan, shared, me))
                .map_err(|e| format!("spawning a worker: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let join = |handles: Vec<thread::JoinHandle<WorkerStats>>| -> Vec<WorkerStats> {
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    };

    // Phase 1: connect and log in; each login is confirmed by a message to itself.
    let login_start = Instant::now();
    let mut connected_at: Option<Instant> = None;
    let mut next_tick = login_start + Duration::from_secs(1);
    let login_ok = loop {
        nap(next_tick, Duration::from_millis(10));
        let opened = shared.opened.load(SeqCst);
        let confirmed = shared.confirmed.load(SeqCst);
        let failed = shared.connect_failed.load(SeqCst) + shared.login_failed.load(SeqCst);
        let all_connected = shared.workers_connected.load(SeqCst) == plan.threads;
        if all_connected && connected_at.is_none() {
            connected_at = Some(Instant::now());
        }
        if failed > 0 && !idle {
            break false;
        }
        if all_connected && confirmed + shared.login_failed.load(SeqCst) == opened {
            break failed == 0;
        }
        if connected_at.is_some_and(|t| t.elapsed() > plan.connect_timeout) {
            shared.note(|| {
                format!("only {confirmed} of {opened} logins confirmed within --connect-timeout")
            });
            break false;
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            progress(
                quiet,
                format_args!(
                    "[{:5.1}s] logging in: {confirmed} confirmed, {opened} connected of {}",
                    login_start.elapsed().as_secs_f64(),
                    plan.clients
                ),
            );
        }
    };
    let login_time = login_start.elapsed();
    let confirmed = shared.confirmed.load(SeqCst);
    if !login_ok && !idle {
        shared.set_phase(DONE);
        join(handles);
        let notes = shared.notes();
        return Err(format!(
            "could not log in all {} clients at {} ({confirmed} confirmed): {}",
            plan.clients,
            spread::addrs_text(&plan.addrs),
            notes.join("; ")
        ));
    }
    progress(
        quiet,
        format_args!(
            "[{:5.1}s] {confirmed} clients logged in at {} ({} worker thread{})",
            login_time.as_secs_f64(),
            spread::addrs_text(&plan.addrs),
            plan.threads,
            if plan.threads == 1 { "" } else { "s" }
        ),
    );
    let rss_loggedin = servers_rss(&args.pid);

    // Phase 2: run (or hold, for idle).
    let cpu0 = sys::self_cpu();
    let dcpu0 = servers_cpu(&args.pid);
    let run_start = Instant::now();
    shared.run_start_ns.store(shared.now_ns(), SeqCst);
    shared.set_phase(RUN);
    let end = run_start + args.duration;
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
            if idle {
                progress(
                    quiet,
                    format_args!(
                        "[{:5.1}s] holding {confirmed} connections, trouble {}",
                        (now - run_start).as_secs_f64(),
                        shared.trouble.load(SeqCst)
                    ),
                );
            } else {
                let sent = shared.sent_deliveries.load(SeqCst);
                progress(
                    quiet,
                    format_args!(
                        "[{:5.1}s] delivered {delivered} ({:.0}/s), in flight {}, trouble {}",
                        (now - run_start).as_secs_f64(),
                        rate,
                        sent.saturating_sub(delivered),
                        shared.trouble.load(SeqCst)
                    ),
                );
            }
        }
    }
    let send_time = run_start.elapsed();
    let delivered_at_stop = shared.delivered.load(SeqCst);
    let sent_at_stop = shared.sent_msgs.load(SeqCst);
    let rss_end = servers_rss(&args.pid);

    // Phase 3: stop sending, wait for what is still in flight.
    shared.set_phase(DRAIN);
    let drain_start = Instant::now();
    if !idle && shared.open_conns.load(SeqCst) > 0 {
        // The sent counters are final once every worker has seen the phase.
        while drain_start.elapsed() < args.grace
            && shared.stopped_sending.load(SeqCst) < plan.threads
        {
            thread::sleep(Duration::from_millis(1));
        }
        while drain_start.elapsed() < args.grace
            && shared.delivered.load(SeqCst) < shared.sent_deliveries.load(SeqCst)
        {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let drain_time = drain_start.elapsed();
    let cpu = sys::self_cpu().saturating_sub(cpu0);
    let dcpu = servers_cpu(&args.pid)
        .zip(dcpu0)
        .map(|(b, a)| b.saturating_sub(a));
    shared.set_phase(DONE);
    let stats = join(handles);

    let mut s = Summary::new(args, &plan, &shared, stats);
    s.login_time = login_time;
    s.confirmed = confirmed;
    s.send_time = send_time;
    s.drain_time = drain_time;
    s.delivered_at_stop = delivered_at_stop;
    s.sent_at_stop = sent_at_stop;
    s.cpu = cpu;
    s.daemon_cpu = dcpu;
    s.rss = [rss_before, rss_loggedin, rss_end];
    s.warnings = warnings;
    if args.json {
        println!("{}", s.json());
    } else {
        print!("{}", s.text());
    }
    Ok(s.ok())
}

#[cfg(test)]
mod tests;

//! `a-chat-bench` (also run as `a-chat bench`): a load generator for the a-chat protocol
//! (and, for comparison on the same machine, for Redis pub/sub). A crate of its own: the
//! daemon does not carry it, and it shares only the version and the TLS client setup with
//! the daemon's library.
//!
//! Clients log in, confirm their login by messaging themselves, then send
//! messages whose payload carries the sender, a per-pair sequence number and the
//! send time. Receivers measure latency and check loss, duplicates and
//! reordering for every (sender, recipient) pair. Worker threads each run an
//! epoll loop over their share of the connections (see `worker`); `coordinator`
//! leads them through the phases (log in, run, drain), and this module measures
//! around the phases (CPU time, the server's memory) for the summary.
//!
//! Where the rest lives: `args` (the command line), `plan` (what a run does),
//! `shared` (coordinator/worker state), `worker` (the epoll loops), `report`
//! (the summary), `storm` and `burst` (workloads with loops of their own),
//! `link` (a connection's transport: plain TCP or TLS), `spread` (clients over
//! several addresses, the nodes of a cluster), `input` (reading a connection
//! dry, for `worker` and `burst`), and the pure helpers `wire`, `payload`,
//! `checker`, `histogram`, `sys`.

mod access;
mod args;
mod burst;
mod checker;
mod coordinator;
mod histogram;
mod input;
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
mod wslink;

#[cfg(test)]
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub use args::BenchArgs;
use args::Workload;
#[cfg(test)]
use args::{parse_bytes, parse_duration, parse_rate};
use coordinator::Coordinator;
use plan::{build_plan, ensure_descriptors, plan_warnings, Plan};
use report::Summary;
#[cfg(test)]
use report::{fmt_ns, json_str};

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
    let warnings = check_plan(&plan, &args.pid)?;
    let mut run = Coordinator::new(args, plan.clone())?;
    let rss_before = servers_rss(&args.pid);
    run.spawn_workers()?;
    let (login_time, confirmed) = run.log_in()?;
    let rss_loggedin = servers_rss(&args.pid);
    let cpu0 = sys::self_cpu();
    let dcpu0 = servers_cpu(&args.pid);
    let (send_time, delivered_at_stop, sent_at_stop) = run.run(confirmed);
    let rss_end = servers_rss(&args.pid);
    let drain_time = run.drain();
    let cpu = sys::self_cpu().saturating_sub(cpu0);
    let dcpu = servers_cpu(&args.pid)
        .zip(dcpu0)
        .map(|(b, a)| b.saturating_sub(a));
    let (shared, stats) = run.finish();

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

/// Makes sure the run can start (descriptors, readable `--pid` processes);
/// returns the warnings about the plan, printed already.
fn check_plan(plan: &Plan, pids: &[u32]) -> Result<Vec<String>, String> {
    ensure_descriptors(plan)?;
    let warnings = plan_warnings(plan, pids);
    for w in &warnings {
        eprintln!("a-chat bench: warning: {w}");
    }
    for &pid in pids {
        if sys::proc_rss_kib(pid).is_none() {
            return Err(format!("--pid {pid}: no such process readable in /proc"));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests;

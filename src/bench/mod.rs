//! `a-chat bench`: a load generator for the a-chat protocol (and, for comparison
//! on the same machine, for Redis pub/sub).
//!
//! Clients log in, confirm their login by messaging themselves, then send
//! messages whose payload carries the sender, a per-pair sequence number and the
//! send time. Receivers measure latency and check loss, duplicates and
//! reordering for every (sender, recipient) pair. Worker threads each run an
//! epoll loop over their share of the connections (see `worker`); this module
//! parses the command line, coordinates the phases (log in, run, drain) and
//! reports.

mod checker;
mod histogram;
mod payload;
mod sys;
mod wire;
mod worker;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use histogram::Histogram;
pub use worker::Target;
use worker::{Load, Plan, Shared, WorkerStats, DONE, DRAIN, RUN};

/// Load-test an a-chat server (or Redis, for comparison) on this machine.
#[derive(clap::Args, Debug, Clone)]
#[command(
    subcommand_value_name = "WORKLOAD",
    subcommand_help_heading = "Workloads"
)]
#[command(after_help = "\
In detail:
  direct       each client i sends to client (i+1) mod N, closed loop (--inflight)
  fanout K     each message names K recipients: clients i+1..i+K mod N
  rate R       open loop: R messages/s in total (e.g. 20000, 50k), on a fixed
               schedule; latency counts from the scheduled send time, so queueing
               in the server (or in the bench) is included
  idle N       hold N logged-in connections for --duration; with --pid, the
               daemon's memory per connection (start the daemon afresh for this:
               memory freed by earlier connections is reused, and hides the cost)

Exit status: 0 all checks passed, 1 a check failed (loss, duplicates, reordering,
misrouting, server errors, closed connections), 2 the run could not start.
Only loopback targets (127.0.0.0/8, ::1) are accepted.")]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: Workload,

    /// Server address [default: 127.0.0.1:8080 for achat, 127.0.0.1:6379 for redis]
    #[arg(long, global = true)]
    pub addr: Option<SocketAddr>,

    /// Protocol of the server under test
    #[arg(long, value_enum, default_value_t = Target::Achat, global = true)]
    pub target: Target,

    /// Number of clients (ignored by `idle`, which takes its own count)
    #[arg(long, short = 'c', default_value_t = 100, global = true)]
    pub clients: usize,

    /// Message payload size in bytes (at least 38: the bench's header)
    #[arg(long, short = 's', default_value_t = 64, global = true)]
    pub size: usize,

    /// How long to send (for `idle`: how long to hold the connections)
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration, global = true)]
    pub duration: Duration,

    /// Messages per client; the run ends when all are sent (or at --duration)
    #[arg(long, short = 'n', global = true)]
    pub messages: Option<u64>,

    /// Closed-loop window: unacknowledged messages per client
    #[arg(long, default_value_t = 64, global = true)]
    pub inflight: u64,

    /// After sending stops, how long to wait for messages still in flight
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub grace: Duration,

    /// Time allowed for one connect, and for all logins to be confirmed after the last connect
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Worker threads of the bench (each runs an epoll loop over its clients)
    #[arg(long, short = 't', default_value_t = 1, global = true)]
    pub threads: usize,

    /// PID of the server: report its CPU time, and its RSS (VmRSS) before and after
    #[arg(long, global = true)]
    pub pid: Option<u32>,

    /// Spread connections over 127.0.0.1..=127.0.0.N (bind before connect)
    /// [default: `idle` uses one address per 4000 connections; others don't bind]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=254), global = true)]
    pub source_ips: Option<u32>,

    /// Login / channel name prefix; client i is <prefix><i> [default: b<pid>-]
    #[arg(long, global = true)]
    pub prefix: Option<String>,

    /// Print the summary as one JSON object on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress lines on stderr
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Workload {
    /// Each client sends to the next one (closed loop)
    Direct,
    /// Each message names K recipients (closed loop)
    Fanout {
        /// Recipients per message
        k: usize,
    },
    /// Open loop at R messages/s in total (e.g. 20000 or 20k)
    Rate {
        /// Messages per second, all clients together
        #[arg(value_parser = parse_rate)]
        rate: f64,
    },
    /// Hold N logged-in connections
    Idle {
        /// Connections to open
        connections: usize,
    },
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Direct => "direct",
            Workload::Fanout { .. } => "fanout",
            Workload::Rate { .. } => "rate",
            Workload::Idle { .. } => "idle",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 1m)"))
}

/// A rate like `20000`, `20k`, `1.5M`.
fn parse_rate(s: &str) -> Result<f64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        _ => (s, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * mult),
        _ => Err(format!(
            "{s:?} is not a positive rate (examples: 20000, 20k, 1.5M)"
        )),
    }
}

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

fn build_plan(args: &BenchArgs) -> Result<Plan, String> {
    let addr = args.addr.unwrap_or_else(|| match args.target {
        Target::Achat => "127.0.0.1:8080".parse().unwrap(),
        Target::Redis => "127.0.0.1:6379".parse().unwrap(),
    });
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the bench only targets 127.0.0.0/8 or ::1"
        ));
    }
    let (clients, fanout, load) = match args.workload {
        Workload::Direct => (
            args.clients,
            1,
            Load::Closed {
                inflight: args.inflight,
            },
        ),
        Workload::Fanout { k } => (
            args.clients,
            k,
            Load::Closed {
                inflight: args.inflight,
            },
        ),
        Workload::Rate { rate } => (
            args.clients,
            1,
            Load::Open {
                interval_ns: args.clients as f64 / rate * 1e9,
            },
        ),
        Workload::Idle { connections } => (connections, 1, Load::Idle),
    };
    if clients == 0 {
        return Err("need at least one client".into());
    }
    if fanout == 0 || fanout > clients {
        return Err(format!(
            "fanout K must be between 1 and the number of clients ({clients})"
        ));
    }
    if args.inflight == 0 {
        return Err("--inflight must be at least 1".into());
    }
    if args.size < payload::HEADER_LEN {
        return Err(format!(
            "--size {} is too small: payloads carry a {}-byte header",
            args.size,
            payload::HEADER_LEN
        ));
    }
    if args.messages == Some(0) || args.messages.is_some_and(|m| m > payload::MAX_SEQ) {
        return Err("--messages must be between 1 and 2^48 - 1".into());
    }
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("b{}-", std::process::id()));
    let longest = format!("{prefix}{}", clients - 1);
    if prefix.is_empty()
        || longest.len() > 64
        || prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == ',')
    {
        return Err(format!(
            "--prefix {prefix:?}: logins must be 1..=64 bytes without whitespace, ':' or ','"
        ));
    }
    let idle = matches!(load, Load::Idle);
    let source_ips = match (args.source_ips, addr) {
        (Some(_), SocketAddr::V6(_)) => {
            return Err("--source-ips needs an IPv4 loopback --addr".into())
        }
        (Some(n), _) => n,
        (None, SocketAddr::V4(_)) if idle => clients.div_ceil(4000).clamp(1, 254) as u32,
        (None, _) => 0,
    };
    Ok(Plan {
        target: args.target,
        load,
        clients,
        fanout,
        size: args.size,
        messages: args.messages,
        prefix,
        addr,
        source_ips,
        threads: args.threads.clamp(1, clients),
        connect_timeout: args.connect_timeout,
    })
}

/// Warnings about limits of the server under test that the plan goes past.
fn plan_warnings(plan: &Plan, pid: Option<u32>) -> Vec<String> {
    let mut w = Vec::new();
    if plan.target == Target::Achat {
        if plan.fanout > 64 {
            w.push(format!(
                "fanout {} is above the server's default max_recipients (64): expect errors",
                plan.fanout
            ));
        }
        let names: usize = (0..plan.fanout)
            .map(|k| plan.name(plan.clients - 1 - k).len() + 2)
            .sum();
        if names + plan.size > 8192 {
            w.push(format!(
                "message lines of about {} bytes exceed the server's default max_line_bytes (8192)",
                names + plan.size
            ));
        }
        if matches!(plan.load, Load::Idle) && plan.clients > 10_000 {
            w.push(format!(
                "{} connections exceed the server's default max_connections (10000): the rest wait in the backlog",
                plan.clients
            ));
        }
    }
    if let Some(limit) = pid.and_then(sys::proc_nofile) {
        let conns = plan.clients * conns_per_client(plan) as usize;
        if conns as u64 + 16 > limit {
            w.push(format!(
                "the server (pid {}) may open only {limit} files (RLIMIT_NOFILE), fewer than the {conns} connections planned",
                pid.unwrap_or(0)
            ));
        }
    }
    w
}

fn conns_per_client(plan: &Plan) -> u64 {
    match (plan.target, plan.load) {
        (Target::Redis, Load::Idle) | (Target::Achat, _) => 1,
        (Target::Redis, _) => 2,
    }
}

/// Makes sure this process may open enough descriptors, or says why not.
fn ensure_descriptors(plan: &Plan) -> Result<(), String> {
    let conns = plan.clients as u64 * conns_per_client(plan);
    let need = conns + 2 * plan.threads as u64 + 32;
    let (soft, hard) = sys::nofile_limit().map_err(|e| format!("getrlimit: {e}"))?;
    if need > hard {
        return Err(format!(
            "{conns} connections need about {need} open files, but this process may open at most {hard} \
             (RLIMIT_NOFILE soft {soft}, hard {hard}); use fewer connections, or raise the hard limit \
             (ulimit -Hn, LimitNOFILE=) — the server needs one descriptor per connection too"
        ));
    }
    if need > soft {
        sys::raise_nofile(need)
            .map_err(|e| format!("cannot raise RLIMIT_NOFILE from {soft} to {need}: {e}"))?;
    }
    Ok(())
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

fn run_checked(args: &BenchArgs) -> Result<bool, String> {
    let plan = Arc::new(build_plan(args)?);
    ensure_descriptors(&plan)?;
    let warnings = plan_warnings(&plan, args.pid);
    for w in &warnings {
        eprintln!("a-chat bench: warning: {w}");
    }
    if let Some(pid) = args.pid {
        if sys::proc_rss_kib(pid).is_none() {
            return Err(format!("--pid {pid}: no such process readable in /proc"));
        }
    }
    let idle = matches!(plan.load, Load::Idle);
    let quiet = args.quiet;
    let shared =
        Arc::new(Shared::new(plan.clients, plan.threads).map_err(|e| format!("setup: {e}"))?);
    let rss_before = args.pid.and_then(sys::proc_rss_kib);

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
            plan.addr,
            notes.join("; ")
        ));
    }
    progress(
        quiet,
        format_args!(
            "[{:5.1}s] {confirmed} clients logged in at {} ({} worker thread{})",
            login_time.as_secs_f64(),
            plan.addr,
            plan.threads,
            if plan.threads == 1 { "" } else { "s" }
        ),
    );
    let rss_loggedin = args.pid.and_then(sys::proc_rss_kib);

    // Phase 2: run (or hold, for idle).
    let cpu0 = sys::self_cpu();
    let dcpu0 = args.pid.and_then(sys::proc_cpu);
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
    let rss_end = args.pid.and_then(sys::proc_rss_kib);

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
    let dcpu = args
        .pid
        .and_then(sys::proc_cpu)
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

/// Everything the run measured, for the text and the JSON summary.
struct Summary<'a> {
    args: &'a BenchArgs,
    plan: &'a Plan,
    login_time: Duration,
    confirmed: usize,
    send_time: Duration,
    drain_time: Duration,
    sent: u64,
    sent_at_stop: u64,
    expected: u64,
    delivered: u64,
    delivered_at_stop: u64,
    hist: Histogram,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    misrouted: u64,
    malformed: u64,
    server_errors: u64,
    notices: u64,
    closed: u64,
    unheard: u64,
    connect_failed: usize,
    lag: Histogram,
    cpu: Duration,
    daemon_cpu: Option<Duration>,
    rss: [Option<u64>; 3],
    notes: Vec<String>,
    warnings: Vec<String>,
}

impl<'a> Summary<'a> {
    fn new(args: &'a BenchArgs, plan: &'a Plan, shared: &Shared, stats: Vec<WorkerStats>) -> Self {
        let sent_by: Vec<u64> = shared.sent.iter().map(|a| a.load(SeqCst)).collect();
        let mut s = Summary {
            args,
            plan,
            login_time: Duration::ZERO,
            confirmed: 0,
            send_time: Duration::ZERO,
            drain_time: Duration::ZERO,
            sent: sent_by.iter().sum(),
            sent_at_stop: 0,
            expected: shared.sent_deliveries.load(SeqCst),
            delivered: 0,
            delivered_at_stop: 0,
            hist: Histogram::new(),
            lost: 0,
            duplicates: 0,
            reordered: 0,
            misrouted: 0,
            malformed: 0,
            server_errors: 0,
            notices: 0,
            closed: 0,
            unheard: 0,
            connect_failed: shared.connect_failed.load(SeqCst),
            lag: Histogram::new(),
            cpu: Duration::ZERO,
            daemon_cpu: None,
            rss: [None; 3],
            notes: shared.notes(),
            warnings: Vec::new(),
        };
        if s.notes.iter().any(|n| n.contains("protected mode")) {
            s.notes.push(
                "Redis in protected mode refuses sources other than 127.0.0.1: start it with \
                 --protected-mode no, or pass --source-ips 1"
                    .into(),
            );
        }
        for w in stats {
            s.hist.merge(&w.hist);
            s.delivered += w.delivered;
            s.duplicates += w.duplicates;
            s.reordered += w.reordered;
            s.misrouted += w.misrouted;
            s.malformed += w.malformed;
            s.server_errors += w.server_errors;
            s.notices += w.notices;
            s.closed += w.closed;
            s.unheard += w.unheard;
            s.lag.merge(&w.lag);
            for (sender, ch) in &w.pairs {
                s.lost += ch.lost(sent_by[*sender]);
            }
        }
        s
    }

    fn idle(&self) -> bool {
        matches!(self.plan.load, Load::Idle)
    }

    fn ok(&self) -> bool {
        let clean = self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.misrouted == 0
            && self.malformed == 0
            && self.server_errors == 0
            && self.closed == 0
            && self.connect_failed == 0;
        clean && (!self.idle() || self.confirmed == self.plan.clients)
    }

    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    fn cpu_per_delivery_ns(&self, cpu: Duration) -> Option<u64> {
        (self.delivered > 0).then(|| (cpu.as_nanos() / u128::from(self.delivered)) as u64)
    }

    fn rss_per_conn_kib(&self) -> Option<f64> {
        if !self.idle() {
            return None;
        }
        let (before, after) = (self.rss[0]?, self.rss[1]?);
        (self.confirmed > 0).then(|| (after as f64 - before as f64) / self.confirmed as f64)
    }

    fn workload(&self) -> String {
        match self.args.workload {
            Workload::Direct => "direct".into(),
            Workload::Fanout { k } => format!("fanout {k}"),
            Workload::Rate { rate } => format!("rate {rate}/s"),
            Workload::Idle { connections } => format!("idle {connections}"),
        }
    }

    fn target(&self) -> &'static str {
        match self.plan.target {
            Target::Achat => "achat",
            Target::Redis => "redis",
        }
    }

    fn text(&self) -> String {
        let p = self.plan;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "a-chat bench: {} against {} at {}: {} clients, {}-byte payloads{}, {} thread{}",
            self.workload(),
            self.target(),
            p.addr,
            p.clients,
            p.size,
            match p.load {
                Load::Closed { inflight } => format!(", inflight {inflight}"),
                _ => String::new(),
            },
            p.threads,
            if p.threads == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            o,
            "  login       {} of {} confirmed in {:.2} s",
            self.confirmed,
            p.clients,
            self.login_time.as_secs_f64()
        );
        if self.idle() {
            let _ = writeln!(o, "  held        {:.2} s", self.send_time.as_secs_f64());
            let kib = |v: Option<u64>| v.map_or("?".to_string(), |v| format!("{v} KiB"));
            if self.args.pid.is_some() {
                let _ = writeln!(
                    o,
                    "  server rss  {} before, {} logged in, {} at the end",
                    kib(self.rss[0]),
                    kib(self.rss[1]),
                    kib(self.rss[2])
                );
                if let Some(per) = self.rss_per_conn_kib() {
                    let _ = writeln!(o, "  per conn    {per:.1} KiB of server RSS per connection");
                }
            }
        } else {
            let _ = writeln!(
                o,
                "  sent        {} messages in {:.2} s: {:.0} msgs/s",
                self.sent,
                self.send_time.as_secs_f64(),
                self.per_s(self.sent_at_stop)
            );
            let _ = writeln!(
                o,
                "  delivered   {} of {}: {:.0} deliveries/s (drain {:.2} s)",
                self.delivered,
                self.expected,
                self.per_s(self.delivered_at_stop),
                self.drain_time.as_secs_f64()
            );
            let h = &self.hist;
            let _ = writeln!(
                o,
                "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
                fmt_ns(h.quantile(0.5)),
                fmt_ns(h.quantile(0.9)),
                fmt_ns(h.quantile(0.99)),
                fmt_ns(h.quantile(0.999)),
                fmt_ns(h.max()),
                fmt_ns(h.mean())
            );
            if let Load::Open { .. } = p.load {
                let _ = writeln!(
                    o,
                    "  send lag    p50 {}  p99 {}  max {}  (the bench behind its schedule; included above)",
                    fmt_ns(self.lag.quantile(0.5)),
                    fmt_ns(self.lag.quantile(0.99)),
                    fmt_ns(self.lag.max())
                );
            }
        }
        let _ = writeln!(
            o,
            "  checks      lost {}, duplicated {}, reordered {}, misrouted {}, malformed {}",
            self.lost, self.duplicates, self.reordered, self.misrouted, self.malformed
        );
        let _ = writeln!(
            o,
            "  server      errors {}, notices {}, closed connections {}, failed connects {}{}",
            self.server_errors,
            self.notices,
            self.closed,
            self.connect_failed,
            if self.unheard > 0 {
                format!(", publishes nobody heard {}", self.unheard)
            } else {
                String::new()
            }
        );
        let per = |cpu| {
            self.cpu_per_delivery_ns(cpu)
                .map_or(String::new(), |n| format!(", {} per delivery", fmt_ns(n)))
        };
        let _ = writeln!(
            o,
            "  bench cpu   {:.2} s{}",
            self.cpu.as_secs_f64(),
            per(self.cpu)
        );
        if let Some(d) = self.daemon_cpu {
            let _ = writeln!(o, "  server cpu  {:.2} s{}", d.as_secs_f64(), per(d));
        }
        for n in &self.notes {
            let _ = writeln!(o, "  note        {n}");
        }
        let _ = writeln!(
            o,
            "  result      {}",
            if self.ok() { "OK" } else { "FAILED" }
        );
        o
    }

    fn json(&self) -> String {
        let p = self.plan;
        let h = &self.hist;
        let mut o = String::from("{");
        let mut field = |k: &str, v: String| {
            if o.len() > 1 {
                o.push(',');
            }
            let _ = write!(o, "{}:{v}", json_str(k));
        };
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        field("workload", json_str(self.args.workload.name()));
        field("target", json_str(self.target()));
        field("addr", json_str(&p.addr.to_string()));
        field("clients", p.clients.to_string());
        field("fanout", p.fanout.to_string());
        field("size", p.size.to_string());
        field("threads", p.threads.to_string());
        field(
            "inflight",
            match p.load {
                Load::Closed { inflight } => inflight.to_string(),
                _ => "null".into(),
            },
        );
        field(
            "rate_target",
            match self.args.workload {
                Workload::Rate { rate } => format!("{rate}"),
                _ => "null".into(),
            },
        );
        field("confirmed", self.confirmed.to_string());
        field("login_s", format!("{:.6}", self.login_time.as_secs_f64()));
        field("duration_s", format!("{:.6}", self.send_time.as_secs_f64()));
        field("drain_s", format!("{:.6}", self.drain_time.as_secs_f64()));
        field("sent", self.sent.to_string());
        field(
            "sent_per_s",
            format!("{:.1}", self.per_s(self.sent_at_stop)),
        );
        field("expected_deliveries", self.expected.to_string());
        field("delivered", self.delivered.to_string());
        field(
            "delivered_per_s",
            format!("{:.1}", self.per_s(self.delivered_at_stop)),
        );
        field(
            "latency_ns",
            format!(
                "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"min\":{},\"mean\":{}}}",
                h.quantile(0.5),
                h.quantile(0.9),
                h.quantile(0.99),
                h.quantile(0.999),
                h.max(),
                h.min(),
                h.mean()
            ),
        );
        field(
            "send_lag_ns",
            if matches!(p.load, Load::Open { .. }) {
                format!(
                    "{{\"p50\":{},\"p99\":{},\"max\":{}}}",
                    self.lag.quantile(0.5),
                    self.lag.quantile(0.99),
                    self.lag.max()
                )
            } else {
                "null".into()
            },
        );
        field("lost", self.lost.to_string());
        field("duplicates", self.duplicates.to_string());
        field("reordered", self.reordered.to_string());
        field("misrouted", self.misrouted.to_string());
        field("malformed", self.malformed.to_string());
        field("server_errors", self.server_errors.to_string());
        field("notices", self.notices.to_string());
        field("closed", self.closed.to_string());
        field("connect_failed", self.connect_failed.to_string());
        field("unheard_publishes", self.unheard.to_string());
        field("bench_cpu_s", format!("{:.6}", self.cpu.as_secs_f64()));
        field(
            "bench_cpu_ns_per_delivery",
            opt(self.cpu_per_delivery_ns(self.cpu)),
        );
        field(
            "server_cpu_s",
            self.daemon_cpu
                .map_or("null".into(), |d| format!("{:.6}", d.as_secs_f64())),
        );
        field(
            "server_cpu_ns_per_delivery",
            opt(self.daemon_cpu.and_then(|d| self.cpu_per_delivery_ns(d))),
        );
        field("server_rss_kib_before", opt(self.rss[0]));
        field("server_rss_kib_logged_in", opt(self.rss[1]));
        field("server_rss_kib_end", opt(self.rss[2]));
        field(
            "server_rss_kib_per_conn",
            self.rss_per_conn_kib()
                .map_or("null".into(), |v| format!("{v:.3}")),
        );
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",")
            )
        };
        field("notes", list(&self.notes));
        field("warnings", list(&self.warnings));
        field("ok", self.ok().to_string());
        o.push('}');
        o
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A duration in nanoseconds, in a readable unit.
fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests;

//! The command line of `a-chat bench`: the clap structs (global options and
//! one subcommand per workload) and the parsers of their values.

use std::net::SocketAddr;
use std::time::Duration;

use super::plan::Target;

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
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Direct => "direct",
            Workload::Fanout { .. } => "fanout",
            Workload::Rate { .. } => "rate",
            Workload::Idle { .. } => "idle",
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 1m)"))
}

/// A rate like `20000`, `20k`, `1.5M`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
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

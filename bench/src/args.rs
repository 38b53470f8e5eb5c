//! The command line of `a-chat bench`: the clap structs (global options and
//! one subcommand per workload) and the parsers of their values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::link::{TlsOptions, TlsSetup};

/// Load-test an a-chat server (or Redis, for comparison) on this machine.
#[derive(clap::Args, Debug, Clone)]
#[command(
    subcommand_value_name = "WORKLOAD",
    subcommand_help_heading = "Workloads"
)]
#[command(after_help = "\
In detail:
  direct       each client i sends to client (i+1) mod N, closed loop (--inflight)
  fanout K     each message names K recipients: clients i+1..i+K mod N (with
               --cross-node: the next K clients on other nodes, see below)
  rate R       open loop: R messages/s in total (e.g. 20000, 50k), on a fixed
               schedule; latency counts from the scheduled send time, so queueing
               in the server (or in the bench) is included
  idle N       hold N logged-in connections for --duration; with --pid, the
               daemon's memory per connection (start the daemon afresh for this:
               memory freed by earlier connections is reused, and hides the cost)
  storm N      N clients connect and log in at once, like the reconnect storm of
               a restarted node: non-blocking connects, up to --concurrency in
               flight, spread over 127.0.0.x (--source-ips; one address per 4000
               connections by default). A client counts when its login is
               confirmed (a-chat: the echo of a message to itself; redis: the
               SUBSCRIBE reply). Reports the time until all are logged in,
               connect-to-login latency, failures, and the kernel's listen queue
               overflows, drops and SYN retransmits (/proc/net/netstat, whole
               machine). Fails unless all log in within --connect-timeout
  burst        --senders S each write a burst of --burst-bytes (lines of --size
               bytes) to all --clients readers at once (default 2 readers, 2048-
               byte lines), --rounds R times; readers read at full speed. Reports
               each round's time (first send to last line at every reader), the
               bytes per reader, loss/order checks and any reader cut off
               (an error:/notice: line or EOF fails the run). --duration bounds
               one round

Several servers (the nodes of a cluster sharing one login namespace): repeat --addr,
e.g. --addr 127.0.0.1:8081 --addr 127.0.0.1:8082 --addr 127.0.0.1:8083. Client i
connects to the (i mod n)-th address, in every workload (for burst, readers and senders
are numbered together). With n addresses, direct rounds --clients up to a multiple of n
(the report says so), so that every message goes to a client on the next node;
`fanout K --cross-node` sends each message to the next K clients on other nodes than the
sender's (it rounds --clients up the same way, and refuses K above the clients on other
nodes). The report gives the addresses and the share of deliveries that cross nodes.
Give every --addr before the workload's name (or every one after it): a group after it
replaces one before it. --target redis takes one address. Repeat --pid for each node's process to sum their
CPU time and memory.

With --tls (and --ca FILE; --cert/--key for mutual TLS; --server-name NAME if the
certificate does not carry the IP of --addr), every connection of every workload makes a
full TLS handshake (no session resumption) before it logs in; the workload then runs
unchanged over TLS. storm then measures TLS handshakes plus logins per second.

Exit status: 0 all checks passed, 1 a check failed (loss, duplicates, reordering,
misrouting, server errors, closed connections), 2 the run could not start.
Only loopback targets (127.0.0.0/8, ::1) are accepted.")]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: Workload,

    /// Server address [default: 127.0.0.1:8080 for achat, 127.0.0.1:6379 for redis].
    /// Repeat it for the nodes of a cluster: client i connects to the (i mod n)-th
    #[arg(long, global = true, value_name = "ADDR")]
    pub addr: Vec<SocketAddr>,

    /// Protocol of the server under test
    #[arg(long, value_enum, default_value_t = Target::Achat, global = true)]
    pub target: Target,

    /// Number of clients (ignored by `idle` and `storm`, which take their own
    /// count; for `burst`, the readers) [default: 100; burst: 2]
    #[arg(long, short = 'c', global = true)]
    pub clients: Option<usize>,

    /// Message payload size in bytes (at least 38: the bench's header)
    /// [default: 64; burst: 2048]
    #[arg(long, short = 's', global = true)]
    pub size: Option<usize>,

    /// How long to send (`idle`: how long to hold the connections; `burst`: the
    /// most one round may take)
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

    /// Time allowed for one connect, and for all logins to be confirmed after the
    /// last connect (`storm`: for every client to log in, from the first connect)
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Worker threads of the bench (each runs an epoll loop over its clients;
    /// `storm` and `burst` run one loop)
    #[arg(long, short = 't', default_value_t = 1, global = true)]
    pub threads: usize,

    /// PID of the server: report its CPU time per delivery (and, for `idle`, its memory
    /// per connection from VmRSS before and after). Repeat it for the nodes of a
    /// cluster (and Redis): their CPU times and memory are summed
    #[arg(long, global = true, value_name = "PID")]
    pub pid: Vec<u32>,

    /// Spread connections over 127.0.0.1..=127.0.0.N (bind before connect)
    /// [default: `idle` and `storm` use one address per 4000 connections; others don't bind]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=254), global = true)]
    pub source_ips: Option<u32>,

    /// Login / channel name prefix; client i is <prefix><i> [default: b<pid>-]
    #[arg(long, global = true)]
    pub prefix: Option<String>,

    /// For a-chat with [auth] users_file: every client logs in with `NAME PASSWORD`
    /// (every bench user shares this password; a wrong one makes a storm of failed logins)
    #[arg(long, global = true, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// What a-chat's clients connect over: tcp, or ws (a WebSocket session each, on the
    /// daemon's [websocket] listen address given as --addr; one text frame per line)
    #[arg(long, value_enum, default_value = "tcp", global = true)]
    pub transport: Transport,

    /// Every connection makes a TLS handshake first (then logs in as usual); needs --ca
    #[arg(long, requires = "ca", global = true)]
    pub tls: bool,

    /// With --tls: the CA certificate (PEM) that signed the server's certificate
    #[arg(long, value_name = "FILE", requires = "tls", global = true)]
    pub ca: Option<PathBuf>,

    /// With --tls: a client certificate (PEM), for mutual TLS (needs --key)
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"], global = true)]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires = "cert", global = true)]
    pub key: Option<PathBuf>,

    /// With --tls: the name the server's certificate must carry [default: the IP of --addr]
    #[arg(long, value_name = "NAME", requires = "tls", global = true)]
    pub server_name: Option<String>,

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
        /// With several --addr: each message goes to the next K clients on other
        /// nodes than the sender's, so every delivery crosses nodes
        #[arg(long)]
        cross_node: bool,
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
    /// N clients connect and log in at once (a reconnect storm)
    Storm {
        /// Clients to connect
        #[arg(value_name = "N")]
        n: usize,
        /// Connections started but not yet logged in, at most
        #[arg(long, default_value_t = 2048)]
        concurrency: usize,
    },
    /// Senders fire bursts addressed to all readers at once
    Burst {
        /// Sender clients; each writes its whole burst in one go
        #[arg(long, default_value_t = 30)]
        senders: usize,
        /// Payload bytes per sender and round (e.g. 1048576, 512k, 1MiB)
        #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
        burst_bytes: u64,
        /// Bursts, one after the other
        #[arg(long, default_value_t = 1)]
        rounds: u32,
    },
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Direct => "direct",
            Workload::Fanout { .. } => "fanout",
            Workload::Rate { .. } => "rate",
            Workload::Idle { .. } => "idle",
            Workload::Storm { .. } => "storm",
            Workload::Burst { .. } => "burst",
        }
    }
}

impl BenchArgs {
    /// `--clients`, or the workload's default.
    pub fn clients_or(&self, default: usize) -> usize {
        self.clients.unwrap_or(default)
    }

    /// The TLS setup of `--tls` (for the servers at `addrs`), or `None` for plaintext.
    /// Every connection checks one server name: `--server-name`, or the IP the
    /// addresses share.
    pub fn tls_setup(&self, addrs: &[SocketAddr]) -> Result<Option<Arc<TlsSetup>>, String> {
        if !self.tls {
            return Ok(None);
        }
        let addr = addrs[0];
        if self.server_name.is_none() && addrs.iter().any(|a| a.ip() != addr.ip()) {
            return Err(
                "--tls with --addr on different IPs needs --server-name: the name every \
                 node's certificate carries"
                    .into(),
            );
        }
        let opts = TlsOptions {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
        };
        TlsSetup::new(&opts, addr.ip()).map(|t| Some(Arc::new(t)))
    }

    /// `--size`, or the workload's default.
    pub fn size_or(&self, default: usize) -> usize {
        self.size.unwrap_or(default)
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

/// A byte count like `1048576`, `512k`, `1MiB`, `2M` (k/M/G are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(v) if v > 0 && mult > 0 => v
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large")),
        _ => Err(format!(
            "{s:?} is not a positive byte count (examples: 1048576, 512k, 1MiB)"
        )),
    }
}

/// `--transport`: what a-chat's clients connect over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Tcp,
    Ws,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// An a-chat server (its line protocol).
    Achat,
    /// A Redis server (SUBSCRIBE / PUBLISH), to compare on one machine.
    Redis,
    /// A NATS server (SUB / PUB on one connection), to compare; with --transport ws, its
    /// WebSocket listener (direct, fanout and idle only).
    Nats,
}

impl Target {
    /// The name reports give the target.
    pub fn label(self) -> &'static str {
        match self {
            Target::Achat => "achat",
            Target::Redis => "redis",
            Target::Nats => "nats",
        }
    }
}

//! The end of a run: [`Summary`] gathers what the workers measured and prints
//! it as text for people (`text`) or as one JSON object for scripts (`json`).
//! Here: the figures, how they are gathered from the workers, the figures
//! derived from them, and the formatting helpers the other reports share.

mod json;
mod text;

use std::fmt::Write as _;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::args::{BenchArgs, Workload};
use super::histogram::Histogram;
use super::plan::{Load, Plan};
use super::shared::{Shared, WorkerStats};

/// Everything the run measured, for the text and the JSON summary.
pub struct Summary<'a> {
    /// The command line: the workload as typed, the `--pid` processes.
    pub args: &'a BenchArgs,
    /// What ran: target, addresses, clients, payload size, load shape.
    pub plan: &'a Plan,
    /// From the first connect until every login was confirmed (or given up on).
    pub login_time: Duration,
    /// Logins confirmed by the client's message to itself (or the SUBSCRIBE reply).
    pub confirmed: usize,
    /// How long the run phase lasted: sending, or holding the connections.
    pub send_time: Duration,
    /// How long the bench waited after sending for what was still in flight.
    pub drain_time: Duration,
    /// Messages sent, all told.
    pub sent: u64,
    /// Messages sent when the run phase ended: the send rate counts these.
    pub sent_at_stop: u64,
    /// Deliveries the sent messages call for (one per recipient).
    pub expected: u64,
    /// Deliveries the recipients received and checked, all told.
    pub delivered: u64,
    /// Deliveries when the run phase ended: the delivery rate counts these.
    pub delivered_at_stop: u64,
    /// Send-to-receive latency of every delivery.
    pub hist: Histogram,
    /// Messages a recipient never got (gaps in its sender's sequence).
    pub lost: u64,
    /// Messages a recipient got more than once.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same sender.
    pub reordered: u64,
    /// Messages that reached a client they were not sent to.
    pub misrouted: u64,
    /// Input that was not a line, reply or payload the bench sends or expects.
    pub malformed: u64,
    /// Error lines (or RESP errors) from the server.
    pub server_errors: u64,
    /// Notice lines from the server.
    pub notices: u64,
    /// Connections that ended before the run did.
    pub closed: u64,
    /// Redis PUBLISH replies of 0: nobody was subscribed.
    pub unheard: u64,
    /// Connects that failed.
    pub connect_failed: usize,
    /// Open loop: how far each send fell behind its schedule.
    pub lag: Histogram,
    /// CPU time of the bench during the run and the drain.
    pub cpu: Duration,
    /// CPU time of the `--pid` processes over the same span, if readable.
    pub daemon_cpu: Option<Duration>,
    /// VmRSS (KiB) of the `--pid` processes before login, once logged in, at the end.
    pub rss: [Option<u64>; 3],
    /// The first few problems the workers described, and hints about them.
    pub notes: Vec<String>,
    /// Server limits the plan goes past, said before the run.
    pub warnings: Vec<String>,
}

impl<'a> Summary<'a> {
    pub fn new(
        args: &'a BenchArgs,
        plan: &'a Plan,
        shared: &Shared,
        stats: Vec<WorkerStats>,
    ) -> Self {
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

    pub fn ok(&self) -> bool {
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

    /// With several `--pid`: says that the server figures are their sum.
    fn pids_note(&self) -> String {
        match self.args.pid.len() {
            0 | 1 => String::new(),
            n => format!(" (sum of {n} processes)"),
        }
    }

    fn workload(&self) -> String {
        match self.args.workload {
            Workload::Direct => "direct".into(),
            Workload::Fanout {
                k,
                cross_node: false,
            } => format!("fanout {k}"),
            Workload::Fanout {
                k,
                cross_node: true,
            } => format!("fanout {k} --cross-node"),
            Workload::Rate { rate } => format!("rate {rate}/s"),
            Workload::Idle { connections } => format!("idle {connections}"),
            ref other => other.name().into(),
        }
    }

    fn target(&self) -> &'static str {
        self.plan.access.target.label()
    }
}

/// The addresses as a JSON array of strings.
pub fn addrs_json(addrs: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| json_str(&a.to_string())).collect();
    format!("[{}]", list.join(","))
}

pub fn json_str(s: &str) -> String {
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
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

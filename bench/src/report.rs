//! The end of a run: [`Summary`] gathers what the workers measured and prints
//! it as text for people or as one JSON object for scripts.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::args::{BenchArgs, Workload};
use super::histogram::Histogram;
use super::plan::{Load, Plan, Target};
use super::shared::{Shared, WorkerStats};
use super::spread::addrs_text;

/// Everything the run measured, for the text and the JSON summary.
pub struct Summary<'a> {
    pub args: &'a BenchArgs,
    pub plan: &'a Plan,
    pub login_time: Duration,
    pub confirmed: usize,
    pub send_time: Duration,
    pub drain_time: Duration,
    pub sent: u64,
    pub sent_at_stop: u64,
    pub expected: u64,
    pub delivered: u64,
    pub delivered_at_stop: u64,
    pub hist: Histogram,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub server_errors: u64,
    pub notices: u64,
    pub closed: u64,
    pub unheard: u64,
    pub connect_failed: usize,
    pub lag: Histogram,
    pub cpu: Duration,
    pub daemon_cpu: Option<Duration>,
    pub rss: [Option<u64>; 3],
    pub notes: Vec<String>,
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
        match self.plan.target {
            Target::Achat => "achat",
            Target::Redis => "redis",
        }
    }

    pub fn text(&self) -> String {
        let p = self.plan;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "a-chat bench: {} against {} at {}{}: {} clients, {}-byte payloads{}, {} thread{}",
            self.workload(),
            self.target(),
            addrs_text(&p.addrs),
            if p.tls.is_some() { " over TLS" } else { "" },
            p.clients,
            p.size,
            match p.load {
                Load::Closed { inflight } => format!(", inflight {inflight}"),
                _ => String::new(),
            },
            p.threads,
            if p.threads == 1 { "" } else { "s" }
        );
        if p.addrs.len() > 1 {
            let _ = writeln!(
                o,
                "  nodes       {} addresses (client i on address i mod {}){}{}",
                p.addrs.len(),
                p.addrs.len(),
                if self.idle() {
                    String::new()
                } else {
                    format!("; {:.1}% of deliveries cross nodes", p.cross_share * 100.0)
                },
                if p.clients != p.requested_clients {
                    format!(
                        " ({} clients rounded up to {})",
                        p.requested_clients, p.clients
                    )
                } else {
                    String::new()
                }
            );
        }
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
            if !self.args.pid.is_empty() {
                let _ = writeln!(
                    o,
                    "  server rss  {} before, {} logged in, {} at the end{}",
                    kib(self.rss[0]),
                    kib(self.rss[1]),
                    kib(self.rss[2]),
                    self.pids_note()
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
            let _ = writeln!(
                o,
                "  server cpu  {:.2} s{}{}",
                d.as_secs_f64(),
                per(d),
                self.pids_note()
            );
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

    pub fn json(&self) -> String {
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
        field("addr", json_str(&p.addrs[0].to_string()));
        field("addrs", addrs_json(&p.addrs));
        field("addresses", p.addrs.len().to_string());
        field("clients", p.clients.to_string());
        field("clients_requested", p.requested_clients.to_string());
        field("fanout", p.fanout.to_string());
        field("cross_node", (p.route.skip_every > 0).to_string());
        field(
            "cross_node_share",
            if self.idle() {
                "null".into()
            } else {
                format!("{:.6}", p.cross_share)
            },
        );
        field("size", p.size.to_string());
        field("threads", p.threads.to_string());
        field("tls", p.tls.is_some().to_string());
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

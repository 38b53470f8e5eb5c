//! The run summary as one JSON object for scripts: the plan, the timings and
//! traffic, the checks, and the CPU time and memory of the bench and the server.

use std::fmt::Write as _;

use super::super::args::Workload;
use super::super::plan::Load;
use super::{addrs_json, json_str, Summary};

/// A JSON object written one field at a time, in order.
struct Object {
    /// The text so far: `{` and the fields written.
    out: String,
}

impl Object {
    fn new() -> Self {
        Object {
            out: String::from("{"),
        }
    }

    /// Adds `"k":v`; `v` is JSON already.
    fn field(&mut self, k: &str, v: String) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        let _ = write!(self.out, "{}:{v}", json_str(k));
    }

    fn close(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// A number, or `null`.
fn opt(v: Option<u64>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

/// A JSON array of strings.
fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",")
    )
}

impl Summary<'_> {
    pub fn json(&self) -> String {
        let mut o = Object::new();
        self.json_plan(&mut o);
        self.json_traffic(&mut o);
        self.json_checks(&mut o);
        self.json_resources(&mut o);
        o.field("notes", list(&self.notes));
        o.field("warnings", list(&self.warnings));
        o.field("ok", self.ok().to_string());
        o.close()
    }

    /// What ran against what: workload, target, addresses, clients, payload, load.
    fn json_plan(&self, o: &mut Object) {
        let p = self.plan;
        o.field("workload", json_str(self.args.workload.name()));
        o.field("target", json_str(self.target()));
        o.field("addr", json_str(&p.access.addrs[0].to_string()));
        o.field("addrs", addrs_json(&p.access.addrs));
        o.field("addresses", p.access.addrs.len().to_string());
        o.field("clients", p.clients.to_string());
        o.field("clients_requested", p.requested_clients.to_string());
        o.field("fanout", p.fanout.to_string());
        o.field("cross_node", (p.route.skip_every > 0).to_string());
        o.field(
            "cross_node_share",
            if self.idle() {
                "null".into()
            } else {
                format!("{:.6}", p.cross_share)
            },
        );
        o.field("size", p.size.to_string());
        o.field("threads", p.threads.to_string());
        o.field("tls", p.access.tls.is_some().to_string());
        o.field(
            "inflight",
            match p.load {
                Load::Closed { inflight } => inflight.to_string(),
                _ => "null".into(),
            },
        );
        o.field(
            "rate_target",
            match self.args.workload {
                Workload::Rate { rate } => format!("{rate}"),
                _ => "null".into(),
            },
        );
    }

    /// Logins, phase times, messages and deliveries, latency and send lag.
    fn json_traffic(&self, o: &mut Object) {
        let h = &self.hist;
        o.field("confirmed", self.confirmed.to_string());
        o.field("login_s", format!("{:.6}", self.login_time.as_secs_f64()));
        o.field("duration_s", format!("{:.6}", self.send_time.as_secs_f64()));
        o.field("drain_s", format!("{:.6}", self.drain_time.as_secs_f64()));
        o.field("sent", self.sent.to_string());
        o.field(
            "sent_per_s",
            format!("{:.1}", self.per_s(self.sent_at_stop)),
        );
        o.field("expected_deliveries", self.expected.to_string());
        o.field("delivered", self.delivered.to_string());
        o.field(
            "delivered_per_s",
            format!("{:.1}", self.per_s(self.delivered_at_stop)),
        );
        o.field(
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
        o.field(
            "send_lag_ns",
            if matches!(self.plan.load, Load::Open { .. }) {
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
    }

    /// What the checks found, and what the server said or did to the connections.
    fn json_checks(&self, o: &mut Object) {
        o.field("lost", self.lost.to_string());
        o.field("duplicates", self.duplicates.to_string());
        o.field("reordered", self.reordered.to_string());
        o.field("misrouted", self.misrouted.to_string());
        o.field("malformed", self.malformed.to_string());
        o.field("server_errors", self.server_errors.to_string());
        o.field("notices", self.notices.to_string());
        o.field("closed", self.closed.to_string());
        o.field("connect_failed", self.connect_failed.to_string());
        o.field("unheard_publishes", self.unheard.to_string());
    }

    /// CPU time of the bench and the server (per delivery too), the server's memory.
    fn json_resources(&self, o: &mut Object) {
        o.field("bench_cpu_s", format!("{:.6}", self.cpu.as_secs_f64()));
        o.field(
            "bench_cpu_ns_per_delivery",
            opt(self.cpu_per_delivery_ns(self.cpu)),
        );
        o.field(
            "server_cpu_s",
            self.daemon_cpu
                .map_or("null".into(), |d| format!("{:.6}", d.as_secs_f64())),
        );
        o.field(
            "server_cpu_ns_per_delivery",
            opt(self.daemon_cpu.and_then(|d| self.cpu_per_delivery_ns(d))),
        );
        o.field("server_rss_kib_before", opt(self.rss[0]));
        o.field("server_rss_kib_logged_in", opt(self.rss[1]));
        o.field("server_rss_kib_end", opt(self.rss[2]));
        o.field(
            "server_rss_kib_per_conn",
            self.rss_per_conn_kib()
                .map_or("null".into(), |v| format!("{v:.3}")),
        );
    }
}

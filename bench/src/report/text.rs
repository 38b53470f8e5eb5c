//! The run summary as text for people: a heading line, then one labelled line
//! per figure (login, the traffic or the held connections, the checks, CPU time,
//! notes) and the result.

use std::fmt::Write as _;

use super::super::plan::Load;
use super::super::spread::addrs_text;
use super::{fmt_ns, Summary};

impl Summary<'_> {
    pub fn text(&self) -> String {
        let mut o = String::new();
        self.text_heading(&mut o);
        self.text_nodes(&mut o);
        let _ = writeln!(
            o,
            "  login       {} of {} confirmed in {:.2} s",
            self.confirmed,
            self.plan.clients,
            self.login_time.as_secs_f64()
        );
        if self.idle() {
            self.text_held(&mut o);
        } else {
            self.text_traffic(&mut o);
        }
        self.text_checks(&mut o);
        self.text_cpu(&mut o);
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

    /// What ran against what: workload, target, addresses, clients, payload, threads.
    fn text_heading(&self, o: &mut String) {
        let p = self.plan;
        let _ = writeln!(
            o,
            "a-chat bench: {} against {} at {}{}: {} clients, {}-byte payloads{}, {} thread{}",
            self.workload(),
            self.target(),
            addrs_text(&p.access.addrs),
            if p.access.tls.is_some() {
                " over TLS"
            } else {
                ""
            },
            p.clients,
            p.size,
            match p.load {
                Load::Closed { inflight } => format!(", inflight {inflight}"),
                _ => String::new(),
            },
            p.threads,
            if p.threads == 1 { "" } else { "s" }
        );
    }

    /// With several addresses: how clients spread over them and how many
    /// deliveries cross nodes.
    fn text_nodes(&self, o: &mut String) {
        let p = self.plan;
        if p.access.addrs.len() <= 1 {
            return;
        }
        let _ = writeln!(
            o,
            "  nodes       {} addresses (client i on address i mod {}){}{}",
            p.access.addrs.len(),
            p.access.addrs.len(),
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

    /// `idle`: how long the connections were held and, with `--pid`, the server's memory.
    fn text_held(&self, o: &mut String) {
        let _ = writeln!(o, "  held        {:.2} s", self.send_time.as_secs_f64());
        if self.args.pid.is_empty() {
            return;
        }
        let kib = |v: Option<u64>| v.map_or("?".to_string(), |v| format!("{v} KiB"));
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

    /// Messages sent, deliveries, latency and (open loop) the send lag.
    fn text_traffic(&self, o: &mut String) {
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
        if let Load::Open { .. } = self.plan.load {
            let _ = writeln!(
                o,
                "  send lag    p50 {}  p99 {}  max {}  (the bench behind its schedule; included above)",
                fmt_ns(self.lag.quantile(0.5)),
                fmt_ns(self.lag.quantile(0.99)),
                fmt_ns(self.lag.max())
            );
        }
    }

    /// What the checks found, and what the server said or did to the connections.
    fn text_checks(&self, o: &mut String) {
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
    }

    /// CPU time of the bench and (with `--pid`) of the server, per delivery too.
    fn text_cpu(&self, o: &mut String) {
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
    }
}

//! What a burst run measured ([`Outcome`]), as text for people or as one JSON
//! object for scripts.

use std::fmt::Write as _;

use super::super::plan::Target;
use super::super::report::{addrs_json, fmt_ns, json_str};
use super::super::spread::addrs_text;
use super::{min_median_max, BurstPlan};

/// What the bursts measured.
pub struct Outcome {
    /// Seconds per round; `None` for a round that did not complete.
    pub rounds: Vec<Option<f64>>,
    pub lost: u64,
    /// Bytes received by the reader that got the fewest.
    pub bytes_min: u64,
    pub disconnected: usize,
    pub senders_closed: usize,
    pub duplicates: u64,
    pub reordered: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub server_lines: u64,
    pub unheard: u64,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn done(&self) -> Vec<f64> {
        self.rounds.iter().flatten().copied().collect()
    }

    pub fn ok(&self, plan: &BurstPlan) -> bool {
        self.rounds.len() == plan.rounds as usize
            && self.rounds.iter().all(Option::is_some)
            && self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.misrouted == 0
            && self.malformed == 0
            && self.server_lines == 0
            && self.unheard == 0
            && self.disconnected == 0
            && self.senders_closed == 0
    }

    pub fn text(&self, p: &BurstPlan) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "a-chat bench: burst against {} at {}: {} readers, {} senders × {} bytes ({} lines of {} bytes) to every reader, {} round{}",
            if p.access.target == Target::Achat { "achat" } else { "redis" },
            addrs_text(&p.access.addrs), p.readers, p.senders, p.burst_bytes, p.lines, p.size, p.rounds,
            if p.rounds == 1 { "" } else { "s" }
        );
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|t| t.map_or("incomplete".into(), |t| fmt_ns((t * 1e9) as u64)))
            .collect();
        let _ = writeln!(o, "  rounds      {}", rounds.join(", "));
        if let Some((min, med, max)) = min_median_max(&self.done()) {
            let _ = writeln!(
                o,
                "  burst time  min {}  median {}  max {}  (first send to last line at every reader)",
                fmt_ns((min * 1e9) as u64),
                fmt_ns((med * 1e9) as u64),
                fmt_ns((max * 1e9) as u64)
            );
        }
        let mib = |b: f64| b / 1048576.0;
        if self.done().len() == self.rounds.len() && !self.rounds.is_empty() {
            let _ = writeln!(
                o,
                "  per reader  {:.1} MiB per round ({} lines), {:.1} MiB in all (the reader that got least)",
                mib(self.bytes_min as f64 / self.rounds.len() as f64),
                p.per_reader(),
                mib(self.bytes_min as f64)
            );
        } else {
            let _ = writeln!(
                o,
                "  per reader  {} lines due per round; {:.1} MiB received in all (the reader that got least)",
                p.per_reader(),
                mib(self.bytes_min as f64)
            );
        }
        let _ = writeln!(
            o,
            "  checks      lost {}, duplicated {}, reordered {}, misrouted {}, malformed {}",
            self.lost, self.duplicates, self.reordered, self.misrouted, self.malformed
        );
        let _ = writeln!(
            o,
            "  readers     disconnected {} of {}; server error/notice lines {}; senders closed {}{}",
            self.disconnected,
            p.readers,
            self.server_lines,
            self.senders_closed,
            if self.unheard > 0 { format!("; publishes nobody heard {}", self.unheard) } else { String::new() }
        );
        for n in &self.notes {
            let _ = writeln!(o, "  note        {n}");
        }
        let _ = writeln!(
            o,
            "  result      {}",
            if self.ok(p) { "OK" } else { "FAILED" }
        );
        o
    }

    pub fn json(&self, p: &BurstPlan) -> String {
        let mmm = min_median_max(&self.done());
        let f = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.6}"));
        let list = |v: &[String]| v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",");
        let rounds: Vec<String> = self.rounds.iter().map(|t| f(*t)).collect();
        format!(
            "{{\"workload\":\"burst\",\"target\":{},\"addr\":{},\"addrs\":{},\"readers\":{},\"senders\":{},\"size\":{},\
             \"burst_bytes\":{},\"lines_per_burst\":{},\"rounds\":{},\"round_s\":[{}],\"burst_s_min\":{},\
             \"burst_s_median\":{},\"burst_s_max\":{},\"lines_per_reader_per_round\":{},\
             \"bytes_per_reader\":{},\"lost\":{},\"duplicates\":{},\"reordered\":{},\"misrouted\":{},\
             \"malformed\":{},\"server_lines\":{},\"unheard_publishes\":{},\"readers_disconnected\":{},\
             \"senders_closed\":{},\"notes\":[{}],\"warnings\":[{}],\"ok\":{}}}",
            json_str(if p.access.target == Target::Achat { "achat" } else { "redis" }),
            json_str(&p.access.addrs[0].to_string()),
            addrs_json(&p.access.addrs),
            p.readers, p.senders, p.size, p.burst_bytes, p.lines, p.rounds,
            rounds.join(","),
            f(mmm.map(|m| m.0)), f(mmm.map(|m| m.1)), f(mmm.map(|m| m.2)),
            p.per_reader(), self.bytes_min, self.lost, self.duplicates, self.reordered,
            self.misrouted, self.malformed, self.server_lines, self.unheard,
            self.disconnected, self.senders_closed,
            list(&self.notes), list(&self.warnings), self.ok(p)
        )
    }
}

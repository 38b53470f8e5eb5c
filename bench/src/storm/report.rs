//! What a storm measured, as text for people or as one JSON object for scripts.

use std::fmt::Write as _;

use super::super::plan::Target;
use super::super::report::{addrs_json, fmt_ns, json_str};
use super::super::spread::addrs_text;
use super::{StormPlan, StormResult};

fn kernel_text(d: Option<u64>) -> String {
    d.map_or("n/a".into(), |v| format!("+{v}"))
}

fn notes(plan: &StormPlan, res: &StormResult) -> Vec<String> {
    let mut n: Vec<String> = res
        .failures
        .iter()
        .take(8)
        .map(|(why, count)| format!("{count} × {why}"))
        .collect();
    if plan.access.target == Target::Redis
        && res.failures.keys().any(|k| k.contains("protected mode"))
    {
        n.push(
            "Redis in protected mode refuses sources other than 127.0.0.1: start it with \
             --protected-mode no, or pass --source-ips 1"
                .into(),
        );
    }
    n
}

pub fn text(plan: &StormPlan, res: &StormResult) -> String {
    let mut o = String::new();
    let target = plan.access.target.label();
    let _ = writeln!(
        o,
        "a-chat bench: storm {} against {target} at {}{}: concurrency {}, {} source address{}",
        plan.clients,
        addrs_text(&plan.access.addrs),
        if plan.access.tls.is_some() {
            " over TLS"
        } else {
            ""
        },
        plan.concurrency,
        plan.access.source_ips.max(1),
        if plan.access.source_ips > 1 { "es" } else { "" }
    );
    let _ = writeln!(
        o,
        "  logged in   {} of {}{}  (failed {}, timed out {})",
        res.logged_in,
        plan.clients,
        match res.all_in {
            Some(t) => format!(", all in {:.3} s", t.as_secs_f64()),
            None => format!(
                ", not all (gave up after {:.2} s)",
                res.elapsed.as_secs_f64()
            ),
        },
        res.failed,
        res.timed_out
    );
    if let Some(r) = res.rate() {
        let what = if plan.access.tls.is_some() {
            "TLS handshakes plus logins"
        } else {
            "logins"
        };
        let _ = writeln!(
            o,
            "  rate        {r:.0} {what} per second (all of them / all in)"
        );
    }
    if let Some(t) = &res.tls_params {
        let _ = writeln!(o, "  tls         {t} (full handshakes, no resumption)");
    }
    let h = &res.latency;
    let _ = writeln!(
        o,
        "  latency     connect to login: p50 {}  p99 {}  max {}",
        fmt_ns(h.quantile(0.5)),
        fmt_ns(h.quantile(0.99)),
        fmt_ns(h.max())
    );
    let k = &res.kernel;
    let _ = writeln!(
        o,
        "  kernel      ListenOverflows {}, ListenDrops {}, TCPSynRetrans {}  (whole machine, over the storm)",
        kernel_text(k[0].1),
        kernel_text(k[1].1),
        kernel_text(k[2].1)
    );
    for n in notes(plan, res) {
        let _ = writeln!(o, "  note        {n}");
    }
    let _ = writeln!(
        o,
        "  result      {}",
        if res.ok(plan) { "OK" } else { "FAILED" }
    );
    o
}

pub fn json(plan: &StormPlan, res: &StormResult) -> String {
    let h = &res.latency;
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let mut o = String::from("{");
    let _ = write!(
        o,
        "\"workload\":\"storm\",\"target\":{},\"addr\":{},\"addrs\":{},\"clients\":{},\"concurrency\":{},\
         \"source_ips\":{},\"logged_in\":{},\"failed\":{},\"timed_out\":{},\"all_logged_in_s\":{},\
         \"tls\":{},\"logins_per_s\":{},\"elapsed_s\":{:.6},\"latency_ns\":{{\"p50\":{},\"p99\":{},\"max\":{},\"min\":{},\"mean\":{}}}",
        json_str(plan.access.target.label()),
        json_str(&plan.access.addrs[0].to_string()),
        addrs_json(&plan.access.addrs),
        plan.clients,
        plan.concurrency,
        plan.access.source_ips.max(1),
        res.logged_in,
        res.failed,
        res.timed_out,
        res.all_in
            .map_or("null".into(), |t| format!("{:.6}", t.as_secs_f64())),
        res.tls_params.as_deref().map_or("null".into(), json_str),
        res.rate().map_or("null".into(), |r| format!("{r:.1}")),
        res.elapsed.as_secs_f64(),
        h.quantile(0.5),
        h.quantile(0.99),
        h.max(),
        h.min(),
        h.mean()
    );
    for (name, d) in &res.kernel {
        let _ = write!(o, ",{}:{}", json_str(name), opt(*d));
    }
    let failures: Vec<String> = res
        .failures
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    let notes: Vec<String> = notes(plan, res).iter().map(|s| json_str(s)).collect();
    let _ = write!(
        o,
        ",\"failures\":{{{}}},\"notes\":[{}],\"ok\":{}}}",
        failures.join(","),
        notes.join(","),
        res.ok(plan)
    );
    o
}

//! The run summary rendered from fixed figures: its text and JSON must stay the
//! same byte for byte, whatever the code that renders them looks like.

use super::*;
use crate::histogram::Histogram;

/// A histogram of the given values (nanoseconds).
fn hist(values: &[u64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    h
}

/// The text and JSON of a summary of fixed figures for the command line `line`;
/// `set` changes what a case needs.
fn render(line: &str, set: impl FnOnce(&mut Summary<'_>)) -> (String, String) {
    let args = args(line);
    let plan = build_plan(&args).unwrap();
    let mut s = Summary {
        args: &args,
        plan: &plan,
        login_time: Duration::from_millis(1234),
        confirmed: plan.clients,
        send_time: Duration::from_millis(10_500),
        drain_time: Duration::from_millis(42),
        sent: 5000,
        sent_at_stop: 4990,
        expected: 5000,
        delivered: 5000,
        delivered_at_stop: 4980,
        hist: hist(&[800, 12_000, 15_000, 90_000, 1_500_000, 2_000_000_000]),
        lost: 0,
        duplicates: 0,
        reordered: 0,
        misrouted: 0,
        malformed: 0,
        server_errors: 0,
        notices: 0,
        closed: 0,
        unheard: 0,
        connect_failed: 0,
        lag: Histogram::new(),
        cpu: Duration::from_millis(2500),
        daemon_cpu: None,
        rss: [None; 3],
        notes: Vec::new(),
        warnings: Vec::new(),
    };
    set(&mut s);
    (s.text(), s.json())
}

fn cases() -> Vec<(String, String)> {
    vec![
        render(
            "--addr 127.0.0.1:9000 -c 4 --inflight 8 --pid 11 --pid 12 direct",
            |s| {
                s.daemon_cpu = Some(Duration::from_millis(3100));
                s.unheard = 3;
                s.lost = 2;
                s.notes = vec!["connection of \"b-1\": closed\n".into()];
                s.warnings = vec!["a warning".into()];
            },
        ),
        render("--addr 127.0.0.1:9000 -c 3 --size 100 rate 600", |s| {
            s.lag = hist(&[100, 2_000, 300_000]);
            s.delivered = 0;
            s.hist = Histogram::new();
        }),
        render("--addr 127.0.0.1:9000 --pid 7 idle 20", |s| {
            s.rss = [Some(10_000), Some(10_800), Some(10_900)];
            s.daemon_cpu = Some(Duration::from_millis(20));
        }),
        render(
            "--addr 127.0.0.1:9000 --addr 127.0.0.1:9001 --addr 127.0.0.1:9002 -c 10 \
             --threads 2 fanout 2 --cross-node",
            |s| {
                s.duplicates = 1;
                s.reordered = 2;
                s.misrouted = 3;
                s.malformed = 4;
                s.server_errors = 5;
                s.notices = 6;
                s.closed = 7;
                s.connect_failed = 8;
            },
        ),
        render(
            "--addr 127.0.0.1:9000 --addr [::1]:9001 --pid 7 --pid 8 idle 5",
            |s| {
                s.rss = [Some(1), None, Some(3)];
                s.confirmed = 4;
            },
        ),
        render(
            "--addr 127.0.0.1:9000 --addr 127.0.0.1:9001 -c 5 fanout 3",
            |_| {},
        ),
        render("--target redis -c 4 -n 100 fanout 2", |s| s.unheard = 9),
    ]
}

/// The summaries of [`cases`] as a-chat-bench prints them (tests/summary/N.txt
/// and N.json).
const EXPECTED: [(&str, &str); 7] = [
    (
        include_str!("summary/0.txt"),
        include_str!("summary/0.json"),
    ),
    (
        include_str!("summary/1.txt"),
        include_str!("summary/1.json"),
    ),
    (
        include_str!("summary/2.txt"),
        include_str!("summary/2.json"),
    ),
    (
        include_str!("summary/3.txt"),
        include_str!("summary/3.json"),
    ),
    (
        include_str!("summary/4.txt"),
        include_str!("summary/4.json"),
    ),
    (
        include_str!("summary/5.txt"),
        include_str!("summary/5.json"),
    ),
    (
        include_str!("summary/6.txt"),
        include_str!("summary/6.json"),
    ),
];

#[test]
fn summaries_of_fixed_figures_are_unchanged() {
    let cases = cases();
    assert_eq!(cases.len(), EXPECTED.len());
    for (i, ((text, json), (want_text, want_json))) in cases.iter().zip(EXPECTED).enumerate() {
        assert_eq!(text, want_text, "text of case {i}");
        assert_eq!(json, want_json, "JSON of case {i}");
    }
}

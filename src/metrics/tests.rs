//! Tests of the metrics registry and its two text formats.

use super::*;

#[test]
fn labelled_handles_share_the_registered_values() {
    let m = Metrics::new();
    m.refused(Refusal::LoginTaken);
    m.dropped(DropReason::SlowConsumer, 3);
    m.messages_delivered.inc_by(5);
    let text = m.encode();
    assert!(
        text.contains("achat_connections_refused_total{reason=\"login_taken\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("achat_deliveries_dropped_total{reason=\"slow_consumer\"} 3"),
        "{text}"
    );
    assert!(text.contains("achat_deliveries_written_total 5"), "{text}");
    assert!(
        text.contains("# HELP achat_received_bytes Bytes read"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(m.dropped_total(DropReason::SlowConsumer), 3);
}

#[test]
fn the_classic_text_format_declares_every_sample_name() {
    let m = Metrics::new();
    m.bytes_in.inc_by(12);
    m.draining.set(1);
    let text = m.encode_prometheus_text();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# HELP achat_received_bytes_total Bytes read from clients.\n# TYPE achat_received_bytes_total counter\nachat_received_bytes_total 12\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE achat_draining gauge\nachat_draining 1\n"),
        "{text}"
    );
    let declared: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| rest.split(' ').next().unwrap())
        .collect();
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        let name = sample.split(['{', ' ']).next().unwrap();
        // A histogram's samples are its declared name with _bucket, _sum or _count.
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .any(|base| text.contains(&format!("# TYPE {base} histogram\n")));
        assert!(
            declared.contains(name) || histogram,
            "{name} undeclared in\n{text}"
        );
    }
}

//! The series a dashboard and the shipped alert rules read, against the real binary:
//! readiness as a gauge, the served certificate's expiry (re-read at a reload), the time
//! of the last applied configuration, and the queue budget beside the queued bytes.
mod common;

use std::process::Command;

use common::{Daemon, Pki};

/// `openssl x509 -enddate` of a PEM file, in Unix seconds.
fn openssl_not_after(pem: &str) -> f64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "date -u -d \"$(openssl x509 -enddate -noout -in '{pem}' | cut -d= -f2)\" +%s"
        ))
        .output()
        .expect("openssl and date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a time")
}

#[test]
fn readiness_certificate_expiry_reload_time_and_the_queue_budget_are_series() {
    let pki = Pki::new();
    let toml = format!(
        "{}[limits]\noutbound_total_bytes = 67108864\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        pki.toml(false)
    );
    let mut d = Daemon::with_toml(&toml);
    let admin = d.admin_addr();
    let samples = common::scrape(admin);
    let started = common::sample(
        &samples,
        "achat_config_last_reload_success_timestamp_seconds",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - started).abs() < 120.0, "{started} vs {now}");
    assert_eq!(common::sample(&samples, "achat_ready"), 1.0);
    assert_eq!(
        common::sample(&samples, "achat_outbound_limit_bytes"),
        67108864.0
    );
    let expiry = common::sample(&samples, "achat_tls_certificate_expiry_timestamp_seconds");
    assert_eq!(expiry, openssl_not_after(&pki.path("server.pem")));
    // A renewal with another lifetime is seen at the reload.
    pki.renew_server_for(30);
    std::fs::write(&d.config_path, format!("{toml}# renewed\n")).unwrap();
    d.signal(libc::SIGHUP);
    let renewed = openssl_not_after(&pki.path("server.pem"));
    assert_ne!(renewed, expiry, "the renewal has another expiry");
    let samples = common::scrape_until(admin, |s| {
        common::sample(s, "achat_tls_certificate_expiry_timestamp_seconds") == renewed
    });
    assert_eq!(
        common::sample(&samples, "achat_tls_certificate_expiry_timestamp_seconds"),
        renewed
    );
    assert!(
        common::sample(
            &samples,
            "achat_config_last_reload_success_timestamp_seconds"
        ) >= started
    );
}

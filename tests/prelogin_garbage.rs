//! Garbage before a login (bytes that are not UTF-8, a TLS handshake on the plaintext
//! port, a first line too long) is refused, closed and counted like before, but logged at
//! debug per connection: a scanner's hundreds of connections make one summary warning a
//! minute, not one warning each.
mod common;

use common::{sample, scrape, Client, Daemon};

/// The start of a TLS 1.2/1.3 ClientHello record, as any TLS client sends it first.
const CLIENT_HELLO: &[u8] =
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x17\xc3\x0a\xee\x91\x0a random\xf0\n";

#[test]
fn garbage_before_login_is_refused_and_counted_with_at_most_one_warning() {
    let mut d =
        Daemon::with_toml("[limits]\nmax_line_bytes = 100\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let admin = d.admin_addr();
    let long = format!("{}\n", "x".repeat(200));
    for i in 0..200 {
        let (bytes, answer): (&[u8], &str) = match i % 10 {
            0..=4 => (b"\xff\xfe\n", "error: invalid utf-8"),
            5..=8 => (CLIENT_HELLO, "error: this port speaks plain text, not TLS"),
            _ => (long.as_bytes(), "error: line too long"),
        };
        let mut c = d.connect();
        c.send_raw(bytes).unwrap();
        let rest = String::from_utf8_lossy(&c.read_until_closed()).into_owned();
        // The answer to a ClientHello is checked below; here, that it is one error line.
        let want = if i % 10 >= 5 && i % 10 <= 8 {
            rest.starts_with("error: ") && rest.lines().count() == 1
        } else {
            rest == format!("{answer}\n")
        };
        assert!(want, "connection {i}: {rest:?}, expected {answer:?}");
    }
    // A login after them: its line is logged after every line the garbage caused.
    let _alice = d.login("alice");
    d.wait_log(|l| l.contains("logged in") && l.contains("login=\"alice\""))
        .expect("alice's login");
    let log = d.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("somaxconn"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("1 connection sent garbage before login"),
        "{}",
        warnings[0]
    );

    let metrics = scrape(admin);
    let kinds = [
        ("invalid_utf8", 100.0),
        ("tls_on_plaintext", 80.0),
        ("line_too_long", 20.0),
    ];
    for (kind, n) in kinds {
        let name = format!("achat_prelogin_garbage_total{{kind=\"{kind}\"}}");
        assert_eq!(sample(&metrics, &name), n, "{name}");
    }
    assert_eq!(
        sample(
            &metrics,
            "achat_connections_refused_total{reason=\"invalid_login\"}"
        ),
        200.0
    );
}

/// A TLS client on the plaintext port is told at once, not after `login_timeout`: its
/// ClientHello rarely holds a line ending.
#[test]
fn a_tls_handshake_on_the_plaintext_port_is_refused_at_once() {
    let d = Daemon::with_toml("[limits]\nlogin_timeout = \"30s\"\n");
    let mut c = Client::connect(d.addr);
    c.send_raw(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03\xaa\xbb")
        .unwrap();
    c.set_read_timeout(std::time::Duration::from_secs(10));
    let rest = c.read_until_closed();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "error: this port speaks plain text, not TLS\n"
    );
}

//! ARCHITECTURE §9, TLS, against the real binary: chat over TLS between a-chat's own client and
//! `openssl s_client` (a client a-chat did not write), mutual TLS, and what a TLS port
//! does with plaintext, garbage and stalled handshakes while a TLS pair chats.
//! Certificates are made for each test with the `openssl` command.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use a_chat::tls;
use common::tlsclient::TlsClient;
use common::{Daemon, Pki, WAIT};

/// A child process that speaks the line protocol on its stdin and stdout.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the client");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the client");
        self.stdin.flush().unwrap();
    }

    /// Waits for `want` among the lines the client prints.
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(_) => panic!("never printed {want:?}"),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_chat_client_and_openssl_s_client_chat_over_tls() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&pki.toml(false));
    let addr = d.tls_addr();
    let mut bob = Peer::spawn(Command::new("openssl").args([
        "s_client",
        "-quiet",
        "-verify_return_error",
        "-CAfile",
        &pki.path("ca.pem"),
        "-connect",
        &addr.to_string(),
    ]));
    bob.send("bob");
    bob.send("bob: ready?");
    bob.expect("from bob: ready?");
    let mut alice = Peer::spawn(Command::new(common::bin()).args([
        "client",
        "--tls",
        "--ca",
        &pki.path("ca.pem"),
        &addr.to_string(),
    ]));
    alice.send("alice");
    alice.send("bob: hello from a-chat's client");
    bob.expect("from alice: hello from a-chat's client");
    bob.send("alice: hello from openssl");
    alice.expect("from bob: hello from openssl");
    // The plain listener beside it still serves plain clients.
    let mut carol = d.login("carol");
    carol.send("bob: hi from plaintext");
    bob.expect("from carol: hi from plaintext");
}

#[test]
fn mutual_tls_admits_only_certificates_signed_by_the_client_ca() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        pki.toml(true)
    ));
    let admin = d.admin_addr();
    let addr = d.tls_addr();
    let mut good = TlsClient::connect(addr, &pki, Some("client")).expect("a good certificate");
    good.send("good");
    good.send("good: in");
    good.expect("from good: in");
    // Without a certificate, and with one from another CA: the server refuses the
    // handshake (with TLS 1.3 the client learns it on its first read).
    for (who, cert) in [("nocert", None), ("stranger", Some("stranger"))] {
        if let Ok(mut c) = TlsClient::connect(addr, &pki, cert) {
            let sent = c
                .try_send(who)
                .and_then(|()| c.try_send(&format!("{who}: in")));
            if sent.is_ok() {
                assert_eq!(c.line(), None, "{who} got in");
            }
        }
    }
    // Counted once the server's side of the handshake has ended, just after the client saw it.
    let name = "achat_tls_handshake_failures_total{reason=\"client_certificate\"}";
    let samples = common::scrape_until(admin, |s| common::sample(s, name) >= 2.0);
    let refused = common::sample(&samples, name);
    assert_eq!(refused, 2.0);
    let log = d.log_text();
    assert!(
        !log.contains("login=\"nocert\"") && !log.contains("login=\"stranger\""),
        "{log}"
    );
}

#[test]
fn plaintext_garbage_and_stalled_handshakes_are_closed_and_counted_while_a_pair_chats() {
    const EACH: usize = 20;
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&format!(
        "[limits]\nlogin_timeout = \"1s\"\n{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        pki.toml(false)
    ));
    let admin = d.admin_addr();
    let addr = d.tls_addr();
    let mut alice = TlsClient::login(addr, &pki, "alice");
    let mut bob = TlsClient::login(addr, &pki, "bob");
    let started = Instant::now();
    let intruders: Vec<_> = (0..3 * EACH)
        .map(|i| {
            thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(WAIT)).unwrap();
                let opened = Instant::now();
                match i % 3 {
                    0 => s.write_all(b"mallory\nalice: hi\n").unwrap(),
                    1 => {
                        let noise: Vec<u8> =
                            (0..4096u32).map(|k| (k * 7919 + i as u32) as u8).collect();
                        let _ = s.write_all(&noise);
                    }
                    _ => {} // connects and says nothing: a stalled handshake
                }
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return opened.elapsed(),
                        Ok(_) => {}
                    }
                }
            })
        })
        .collect();
    let mut trips = 0;
    while trips < 50 || intruders.iter().any(|t| !t.is_finished()) {
        alice.send(&format!("bob: ping {trips}"));
        bob.expect(&format!("from alice: ping {trips}"));
        bob.send(&format!("alice: pong {trips}"));
        alice.expect(&format!("from bob: pong {trips}"));
        trips += 1;
        assert!(
            started.elapsed() < WAIT * 2,
            "the intruders are still connected"
        );
    }
    let closed_after: Vec<Duration> = intruders.into_iter().map(|t| t.join().unwrap()).collect();
    let slowest = closed_after.iter().max().unwrap();
    eprintln!("{trips} round trips meanwhile; every intruder closed within {slowest:?}");
    // Within login_timeout (1 s) and a generous margin; the bug would hold them forever.
    assert!(*slowest < Duration::from_secs(4), "{slowest:?}");
    // Counted once the server's side has ended, just after each intruder saw it.
    let counted = |s: &[(String, f64)]| {
        let all: f64 = (tls::Failure::ALL.iter())
            .map(|f| {
                let name = format!(
                    "achat_tls_handshake_failures_total{{reason=\"{}\"}}",
                    f.label()
                );
                common::sample(s, &name)
            })
            .sum();
        all >= 3.0 * EACH as f64
    };
    let samples = common::scrape_until(admin, counted);
    let failed = |reason: &str| {
        common::sample(
            &samples,
            &format!("achat_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(failed("not_tls") >= EACH as f64, "{samples:?}");
    assert_eq!(failed("timeout"), EACH as f64);
    let all: f64 = tls::Failure::ALL.iter().map(|f| failed(f.label())).sum();
    assert_eq!(all, 3.0 * EACH as f64);
    // Counted, not logged: scanners must not flood the log at the default level.
    let log = d.log_text();
    assert!(!log.contains("TLS handshake failed"), "{log}");
}

#[test]
fn the_drain_does_not_wait_for_a_handshake_that_never_ends() {
    let pki = Pki::new();
    let mut d = Daemon::with_toml(&format!(
        "[limits]\nlogin_timeout = \"30s\"\n[shutdown]\ndrain_timeout = \"25s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{}",
        pki.toml(false)
    ));
    let tls = d.tls_addr();
    // Half a ClientHello: the handshake waits for the rest.
    let mut stalled = TcpStream::connect(tls).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // A drain held by the handshake would take login_timeout (30 s).
    d.drains_past_an_opening();
}

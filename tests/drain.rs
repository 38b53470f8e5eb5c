//! ARCHITECTURE §5 over TCP against the real binary: SIGINT/SIGTERM drain the daemon: every
//! line it has read is delivered, every client gets `notice: server shutting down` last,
//! the process exits 0 by `drain_timeout` at the latest, a second signal exits at once,
//! and new connections are refused while the drain runs.
//!
//! Clients here read on their own threads while they send: a client that stops reading
//! is (rightly) cut off as a slow consumer, which would be a different test.
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{log_field, log_number, Client, Daemon, WAIT};

const NOTICE: &str = "notice: server shutting down";

/// These tests start many clients and time the daemon's exit against its deadline: run
/// them one at a time so they do not slow each other down on a small machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads lines on a thread until end of stream, handing each to `on_line`; then shuts the
/// socket down so the daemon's last wait for our side ends at once. Returns every line, or
/// only the last one unless `keep_all`. Errors (a read that waited longer than WAIT, a
/// reset) come back as `Err` describing what was read so far.
fn read_until_end(
    mut reader: BufReader<TcpStream>,
    keep_all: bool,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> JoinHandle<Result<Vec<String>, String>> {
    thread::spawn(move || {
        let mut lines = Vec::new();
        let mut count = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if !line.ends_with('\n') => {
                    return Err(format!("partial last line {line:?} after {count} lines"))
                }
                Ok(_) => {
                    line.pop();
                    on_line(&line);
                    count += 1;
                    if !keep_all {
                        lines.clear();
                    }
                    lines.push(line.clone());
                }
                Err(e) => {
                    let last = lines.last().cloned();
                    return Err(format!("{e} after {count} lines, last {last:?}"));
                }
            }
        }
        let _ = reader.get_ref().shutdown(Shutdown::Both);
        Ok(lines)
    })
}

/// 20 clients send 100 messages each to the others; once every line is written, `signal`:
/// everything arrives, the notice comes last, and the daemon exits 0 before its deadline.
fn drain_delivers_everything(signal: i32) {
    const CLIENTS: usize = 20;
    const EACH: usize = 100;
    let drain_timeout = Duration::from_secs(10);
    let mut d = Daemon::with_toml("[shutdown]\ndrain_timeout = \"10s\"\n");
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("c{i}")).collect();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for name in &names {
        let (w, r) = d.login(name).split();
        writers.push(w);
        readers.push(read_until_end(r, true, |_| {}));
    }
    // Message j of client i goes to client i+1+(j mod 19): everyone writes to everyone.
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    for i in 0..CLIENTS {
        for j in 0..EACH {
            let to = (i + 1 + j % (CLIENTS - 1)) % CLIENTS;
            expected[to].push(format!("from c{i}: message {j} of c{i}"));
        }
    }
    let senders: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(i, mut w)| {
            thread::spawn(move || {
                for j in 0..EACH {
                    let to = (i + 1 + j % (CLIENTS - 1)) % CLIENTS;
                    writeln!(w, "c{to}: message {j} of c{i}").expect("send");
                }
                w
            })
        })
        .collect();
    // Keep the writing halves open until the end: closing them would look like a logout.
    let _writers: Vec<TcpStream> = senders.into_iter().map(|s| s.join().unwrap()).collect();

    let signalled = Instant::now();
    d.signal(signal);
    let status = d
        .wait_exit(drain_timeout + Duration::from_secs(1))
        .unwrap_or_else(|| panic!("no exit within drain_timeout + 1 s; log:\n{}", d.log_text()));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");

    for (i, reader) in readers.into_iter().enumerate() {
        let lines = reader
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("c{i}: {e}"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some(NOTICE),
            "c{i}: the notice must be the last line"
        );
        let mut got: Vec<String> = lines[..lines.len() - 1].to_vec();
        let mut want = expected[i].clone();
        // Per sender, the order is kept: compare in arrival order after a stable sort by sender.
        got.sort_by_key(|l| l.split(':').next().unwrap().to_owned());
        want.sort_by_key(|l| l.split(':').next().unwrap().to_owned());
        assert_eq!(
            got, want,
            "c{i}: every message, once, in each sender's order"
        );
    }
    let summary = d.summary();
    assert_eq!(log_field(&summary, "completed"), Some("true"), "{summary}");
    assert_eq!(log_number(&summary, "dropped"), 0, "{summary}");
    // Every message plus each client's login check, `c: ready?`.
    assert_eq!(
        log_number(&summary, "delivered_total"),
        (CLIENTS * EACH + CLIENTS) as u64,
        "{summary}"
    );
    assert!(log_number(&summary, "delivered") <= log_number(&summary, "delivered_total"));
    assert_eq!(log_number(&summary, "connections_cut"), 0, "{summary}");
    assert_eq!(log_number(&summary, "connections_closed"), CLIENTS as u64);
    eprintln!("drain after {signal}: exit {took:?} after the signal; {summary}");
}

#[test]
fn sigint_drains_every_message_then_says_goodbye() {
    let _serial = serial();
    drain_delivers_everything(libc::SIGINT);
}

#[test]
fn sigterm_drains_the_same_way() {
    let _serial = serial();
    drain_delivers_everything(libc::SIGTERM);
}

/// The last lines of the daemon's log, for failure messages.
fn tail(d: &Daemon) -> String {
    let log = d.log.lock().unwrap();
    log[log.len().saturating_sub(40)..].join("\n")
}

/// The outcome of one receiving client in the busy drain.
struct Received {
    /// Per sender, the last sequence number seen (messages run 1, 2, 3, ...).
    last: HashMap<usize, u64>,
    /// `from` lines read, the login check included.
    from_lines: u64,
    problems: Vec<String>,
}

/// 100 clients send numbered messages to three others as fast as they can; SIGINT comes
/// while they are at it. Whatever each recipient got from each sender is 1..k with no
/// gap and no repeat, and the summary's `delivered=` is exactly what the clients read.
#[test]
fn a_drain_in_the_middle_of_traffic_loses_no_line_in_the_middle() {
    let _serial = serial();
    const CLIENTS: usize = 100;
    /// Bound on each sender's messages, so the test stays small if the drain comes late.
    const MOST: u64 = 20_000;
    const PER_WRITE: u64 = 8;
    /// Signal after this many deliveries, while the senders are still sending.
    const SIGNAL_AFTER: u64 = 30_000;
    // Long-ish messages: the bytes in flight when the drain begins, not the message count,
    // bound the drain's work.
    let padding = "p".repeat(400);
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 16777216\n[shutdown]\ndrain_timeout = \"30s\"\n",
    );
    let received_total = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let outcomes: Vec<Arc<Mutex<Received>>> = (0..CLIENTS)
        .map(|_| {
            Arc::new(Mutex::new(Received {
                last: HashMap::new(),
                from_lines: 0,
                problems: Vec::new(),
            }))
        })
        .collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        let (w, r) = d.login(&format!("c{i}")).split();
        outcome.lock().unwrap().from_lines = 1; // the login check `from ci: ready?`
        writers.push(w);
        let (outcome, total) = (outcome.clone(), received_total.clone());
        readers.push(read_until_end(r, false, move |line| {
            let mut o = outcome.lock().unwrap();
            if line == NOTICE {
                return;
            }
            let parsed = line.strip_prefix("from c").and_then(|rest| {
                let (sender, text) = rest.split_once(": ")?;
                let seq = text.split(' ').next()?;
                Some((sender.parse::<usize>().ok()?, seq.parse::<u64>().ok()?))
            });
            let Some((sender, seq)) = parsed else {
                o.problems.push(format!("unexpected line {line:?}"));
                return;
            };
            o.from_lines += 1;
            total.fetch_add(1, Ordering::Relaxed);
            let last = o.last.entry(sender).or_insert(0);
            if seq != *last + 1 {
                let msg = format!("from c{sender}: got {seq} after {last}");
                *last = seq;
                o.problems.push(msg);
            } else {
                *last = seq;
            }
        }));
    }
    let recipients = |i: usize| [(i + 1) % CLIENTS, (i + 10) % CLIENTS, (i + 37) % CLIENTS];
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<JoinHandle<(TcpStream, u64)>> = writers
        .into_iter()
        .enumerate()
        .map(|(i, mut w)| {
            let stop = stop.clone();
            let [a, b, c] = recipients(i);
            let padding = padding.clone();
            thread::spawn(move || {
                let mut sent = 0;
                let mut buf = String::new();
                while sent < MOST && !stop.load(Ordering::Relaxed) {
                    buf.clear();
                    for _ in 0..PER_WRITE {
                        sent += 1;
                        buf.push_str(&format!("c{a}, c{b},c{c} : {sent} {padding}\n"));
                    }
                    if w.write_all(buf.as_bytes()).is_err() {
                        break; // the daemon closed: the drain is over for this client
                    }
                }
                (w, sent)
            })
        })
        .collect();

    // Signal once traffic flows, while the senders are still at it.
    let deadline = Instant::now() + 3 * WAIT;
    while received_total.load(Ordering::Relaxed) < SIGNAL_AFTER {
        assert!(
            Instant::now() < deadline,
            "only {} of {SIGNAL_AFTER} messages arrived",
            received_total.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(5));
    }
    d.signal(libc::SIGINT);
    stop.store(true, Ordering::Relaxed);
    let status = d
        .wait_exit(Duration::from_secs(31))
        .unwrap_or_else(|| panic!("no exit within drain_timeout + 1 s; log:\n{}", tail(&d)));
    assert!(status.success(), "exit status {status:?}");

    let sent: Vec<u64> = senders.into_iter().map(|s| s.join().unwrap().1).collect();
    let mut from_lines = 0;
    let mut cut_short = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let lines = reader
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("c{i}: {e}"));
        assert_eq!(lines.last().map(String::as_str), Some(NOTICE), "c{i}");
        let o = outcomes[i].lock().unwrap();
        assert!(o.problems.is_empty(), "c{i}: {:?}", o.problems);
        from_lines += o.from_lines;
        for (&sender, &k) in &o.last {
            assert!(recipients(sender).contains(&i), "c{i} got c{sender}'s");
            assert!(
                k <= sent[sender],
                "c{i} got {k} of c{sender}'s {}",
                sent[sender]
            );
            if k < sent[sender] {
                cut_short += 1;
            }
        }
    }
    let summary = d.summary();
    assert_eq!(log_field(&summary, "completed"), Some("true"), "{summary}");
    assert_eq!(
        log_number(&summary, "delivered_total"),
        from_lines,
        "the summary counts exactly the lines clients read: {summary}"
    );
    eprintln!(
        "busy drain: {} messages sent, {from_lines} from-lines read, {cut_short} of {} \
         sender→recipient streams cut short by the drain; {summary}",
        sent.iter().sum::<u64>(),
        CLIENTS * 3
    );
}

/// Sends `bytes` of messages to `to` from a fresh client `name`, and returns once the
/// daemon has routed all of them (its answer to a later message to itself has arrived).
fn flood(d: &Daemon, name: &str, to: &str, bytes: usize) -> Client {
    let mut c = d.login(name);
    let text = "x".repeat(1000);
    let line = format!("{to}: {text}\n");
    let mut batch = String::new();
    for _ in 0..bytes / line.len() / 16 {
        batch.clear();
        for _ in 0..16 {
            batch.push_str(&line);
        }
        c.send_raw(batch.as_bytes()).expect("send");
    }
    c.send(&format!("{name}: all sent"));
    c.expect(&format!("from {name}: all sent"));
    c
}

/// A client that logs in and never reads: while it holds data the daemon cannot deliver,
/// the drain runs until `drain_timeout`.
fn non_reader(d: &Daemon) -> Client {
    d.login_small_rcvbuf("sleepy", 4096)
}

/// A daemon whose drain, started by one SIGINT, cannot finish for a minute: 12 MB wait
/// for a client that never reads. Returns the daemon and the clients that hold it open.
fn drain_held_open() -> (Daemon, [Client; 2]) {
    let d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 33554432\nwrite_timeout = \"60s\"\n\
         [shutdown]\ndrain_timeout = \"60s\"\n",
    );
    let sleepy = non_reader(&d);
    let talker = flood(&d, "talker", "sleepy", 12 << 20);
    d.signal(libc::SIGINT);
    (d, [sleepy, talker])
}

#[test]
fn a_client_that_never_reads_cannot_hold_the_drain_past_its_deadline() {
    let _serial = serial();
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 33554432\nwrite_timeout = \"60s\"\n\
         [shutdown]\ndrain_timeout = \"2s\"\n",
    );
    let _sleepy = non_reader(&d);
    // 12 MB, far more than the daemon's send buffer and the client's small window hold.
    let mut talkers: Vec<Client> = (0..3)
        .map(|i| flood(&d, &format!("t{i}"), "sleepy", 4 << 20))
        .collect();
    let signalled = Instant::now();
    d.signal(libc::SIGINT);
    let status = d
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no exit by drain_timeout + 1 s; log:\n{}", d.log_text()));
    eprintln!("exit {:?} after SIGINT", signalled.elapsed());
    assert!(status.success(), "exit status {status:?}");
    for t in &mut talkers {
        t.expect(NOTICE);
        t.expect_closed();
    }
    let summary = d.summary();
    assert_eq!(log_field(&summary, "completed"), Some("false"), "{summary}");
    assert!(
        summary.contains("WARN") && summary.contains("cut short at drain_timeout"),
        "{summary}"
    );
    // The non-reader at least (talkers still lingering for their clients' close count too).
    assert!(log_number(&summary, "connections_cut") >= 1, "{summary}");
    assert!(
        log_number(&summary, "dropped_drain_deadline") > 0,
        "{summary}"
    );
    assert_eq!(
        log_number(&summary, "dropped_slow_consumer"),
        0,
        "{summary}"
    );
    eprintln!("{summary}");
}

#[test]
fn a_second_sigint_during_the_drain_exits_at_once() {
    let _serial = serial();
    let (mut d, _clients) = drain_held_open();
    d.wait_log(|l| l.contains("drain started"))
        .expect("the drain did not start");
    assert!(d.child.try_wait().unwrap().is_none(), "exited on its own");
    d.signal(libc::SIGINT);
    let status = d.wait_exit(WAIT).expect("no exit after the second SIGINT");
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    assert!(
        d.wait_log(|l| l.contains("exiting without finishing the drain"))
            .is_some(),
        "{}",
        d.log_text()
    );
    assert!(!d.log_text().contains("drain finished"));
}

#[test]
fn connections_are_refused_during_the_drain() {
    let _serial = serial();
    let (mut d, _clients) = drain_held_open();
    d.wait_log(|l| l.contains("stopped accepting"))
        .expect("the accept loop did not stop");
    let refused = TcpStream::connect_timeout(&d.addr, WAIT);
    match refused {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a connection was accepted during the drain"),
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the drain should still be running (it waits for the non-reader)"
    );
}

//! End-to-end checks of the bench against a tiny in-process chat server that
//! speaks a-chat's line protocol (and can be told to lose, repeat or swap
//! messages, to prove the checks catch it).

use super::*;
use clap::Parser;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn args(line: &str) -> BenchArgs {
    Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace()))
        .unwrap_or_else(|e| panic!("{e}"))
        .bench
}

#[derive(Clone, Copy, Default)]
enum Fault {
    #[default]
    None,
    /// Skip every Nth routed message.
    Drop(u64),
    /// Deliver every Nth routed message twice.
    Repeat(u64),
    /// Hold every Nth message back and deliver it after the next one.
    Swap(u64),
    /// Close every connection once N messages have been routed.
    Hangup(u64),
}

/// A minimal a-chat-compatible server on an ephemeral loopback port.
fn chat_server(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    type Peers = Arc<Mutex<HashMap<String, TcpStream>>>;
    let peers: Peers = Arc::default();
    let routed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (peers, routed) = (peers.clone(), routed.clone());
            thread::spawn(move || {
                let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
                let Some(Ok(login)) = lines.next() else {
                    return;
                };
                {
                    let mut p = peers.lock().unwrap();
                    if p.contains_key(&login) {
                        let _ = (&stream)
                            .write_all(format!("error: login {login:?} is taken\n").as_bytes());
                        return;
                    }
                    p.insert(login.clone(), stream.try_clone().unwrap());
                }
                let mut held: HashMap<String, Vec<u8>> = HashMap::new();
                for line in lines {
                    let Ok(line) = line else { break };
                    let Some((names, text)) = line.split_once(':') else {
                        let _ = (&stream).write_all(b"error: not a message\n");
                        continue;
                    };
                    let out = format!("from {login}: {}\n", text.trim());
                    for name in names.split(',').map(str::trim) {
                        let n = routed.fetch_add(1, SeqCst) + 1;
                        let p = peers.lock().unwrap();
                        let Some(mut to) = p.get(name) else {
                            drop(p);
                            let _ = (&stream)
                                .write_all(format!("error: no such user {name:?}\n").as_bytes());
                            continue;
                        };
                        let is_ping = text.trim() == "ping";
                        match fault {
                            Fault::Hangup(k) if n >= k => {
                                for s in p.values() {
                                    let _ = s.shutdown(std::net::Shutdown::Both);
                                }
                                return;
                            }
                            Fault::Drop(k) if !is_ping && n % k == 0 => continue,
                            Fault::Repeat(k) if !is_ping && n % k == 0 => {
                                let _ = to.write_all(out.as_bytes());
                            }
                            Fault::Swap(k)
                                if !is_ping && n % k == 0 && !held.contains_key(name) =>
                            {
                                held.insert(name.to_string(), out.clone().into_bytes());
                                continue;
                            }
                            _ => {}
                        }
                        let _ = to.write_all(out.as_bytes());
                        if let Some(late) = held.remove(name) {
                            let _ = to.write_all(&late);
                        }
                        drop(p);
                    }
                }
                peers.lock().unwrap().remove(&login);
            });
        }
    });
    addr
}

/// A minimal Redis stand-in: SUBSCRIBE (inline or RESP) and PUBLISH.
fn redis_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let subs: Arc<Mutex<HashMap<String, TcpStream>>> = Arc::default();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let subs = subs.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut read_line = |line: &mut String| {
                    line.clear();
                    r.read_line(line).ok().filter(|&n| n > 0)?;
                    Some(line.trim_end().to_string())
                };
                while let Some(first) = read_line(&mut line) {
                    let words: Vec<String> = match first.strip_prefix('*') {
                        Some(n) => (0..n.parse::<usize>().unwrap())
                            .map(|_| {
                                read_line(&mut line); // the $len line
                                read_line(&mut line).unwrap_or_default()
                            })
                            .collect(),
                        None => first.split_whitespace().map(String::from).collect(),
                    };
                    let mut me = &stream;
                    match words.first().map(String::as_str) {
                        Some("SUBSCRIBE") => {
                            let ch = &words[1];
                            subs.lock()
                                .unwrap()
                                .insert(ch.clone(), stream.try_clone().unwrap());
                            let reply =
                                format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n{ch}\r\n:1\r\n", ch.len());
                            let _ = me.write_all(reply.as_bytes());
                        }
                        Some("PUBLISH") => {
                            let (ch, msg) = (&words[1], &words[2]);
                            let push = format!(
                                "*3\r\n$7\r\nmessage\r\n${}\r\n{ch}\r\n${}\r\n{msg}\r\n",
                                ch.len(),
                                msg.len()
                            );
                            let n = match subs.lock().unwrap().get(ch) {
                                Some(mut to) => to.write_all(push.as_bytes()).is_ok() as u8,
                                None => 0,
                            };
                            let _ = me.write_all(format!(":{n}\r\n").as_bytes());
                        }
                        _ => {
                            let _ = me.write_all(b"-ERR unknown command\r\n");
                        }
                    }
                }
            });
        }
    });
    addr
}

fn bench(fault: Fault, line: &str) -> Result<bool, String> {
    let addr = chat_server(fault);
    run_checked(&args(&format!("--addr {addr} --quiet {line}")))
}

#[test]
fn direct_run_is_clean() {
    assert_eq!(bench(Fault::None, "direct -c 4 -n 300 -d 10s"), Ok(true));
}

#[test]
fn fanout_and_two_threads_are_clean() {
    assert_eq!(
        bench(
            Fault::None,
            "-c 5 -n 200 -d 10s --threads 2 --inflight 8 fanout 3"
        ),
        Ok(true)
    );
}

#[test]
fn rate_run_is_clean() {
    assert_eq!(
        bench(Fault::None, "-c 3 -d 1s --size 100 rate 600"),
        Ok(true)
    );
}

#[test]
fn idle_connections_log_in() {
    assert_eq!(bench(Fault::None, "-d 200ms idle 20"), Ok(true));
}

#[test]
fn redis_target_direct_and_fanout_are_clean() {
    let addr = redis_server();
    let run = |l: &str| run_checked(&args(&format!("--target redis --addr {addr} -q {l}")));
    assert_eq!(run("-c 4 -n 300 -d 10s direct"), Ok(true));
    assert_eq!(run("-c 4 -n 100 -d 10s --threads 2 fanout 2"), Ok(true));
    assert_eq!(run("-d 100ms idle 10"), Ok(true));
}

#[test]
fn loss_fails_the_run() {
    assert_eq!(
        bench(Fault::Drop(50), "direct -c 3 -n 200 -d 10s --grace 300ms"),
        Ok(false)
    );
}

#[test]
fn duplicates_fail_the_run() {
    assert_eq!(
        bench(Fault::Repeat(50), "direct -c 3 -n 200 -d 10s"),
        Ok(false)
    );
}

#[test]
fn reordering_fails_the_run() {
    assert_eq!(
        bench(Fault::Swap(50), "direct -c 3 -n 200 -d 10s"),
        Ok(false)
    );
}

#[test]
fn a_server_that_hangs_up_fails_the_run_at_once() {
    let t = Instant::now();
    assert_eq!(bench(Fault::Hangup(500), "direct -c 3 -d 20s"), Ok(false));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_taken_login_stops_the_run() {
    let addr = chat_server(Fault::None);
    let _squatter = {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"dup-0\n").unwrap();
        s
    };
    thread::sleep(Duration::from_millis(100));
    let err = run_checked(&args(&format!(
        "--addr {addr} -q --prefix dup- --connect-timeout 1s -c 2 -n 10 direct"
    )))
    .unwrap_err();
    assert!(err.contains("taken"), "{err}");
}

#[test]
fn refuses_bad_plans() {
    let plan = |l: &str| build_plan(&args(l)).map(|_| ()).unwrap_err();
    assert!(plan("--addr 192.0.2.1:8080 direct").contains("loopback"));
    assert!(plan("--size 10 direct").contains("too small"));
    assert!(plan("-c 3 fanout 4").contains("fanout"));
    assert!(plan("--prefix a:b direct").contains("prefix"));
    assert!(
        build_plan(&args("--target redis direct"))
            .unwrap()
            .addr
            .port()
            == 6379
    );
    assert_eq!(build_plan(&args("idle 9000")).unwrap().source_ips, 3);
}

#[test]
fn options_go_before_or_after_the_workload() {
    let a = args("fanout 3 --clients 7 --size 80 -d 2s");
    assert!(matches!(a.workload, Workload::Fanout { k: 3 }));
    assert_eq!(
        (a.clients, a.size, a.duration),
        (Some(7), Some(80), Duration::from_secs(2))
    );
}

#[test]
fn rates_and_durations_parse() {
    assert_eq!(parse_rate("20000"), Ok(20000.0));
    assert_eq!(parse_rate("20k"), Ok(20000.0));
    assert_eq!(parse_rate("1.5M"), Ok(1_500_000.0));
    assert!(parse_rate("0").is_err());
    assert!(parse_rate("fast").is_err());
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn formats() {
    assert_eq!(fmt_ns(850), "850ns");
    assert_eq!(fmt_ns(12_345), "12.3µs");
    assert_eq!(fmt_ns(4_560_000), "4.56ms");
    assert_eq!(fmt_ns(2_000_000_000), "2.00s");
    assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
}

#[test]
fn byte_counts_parse() {
    assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
    assert_eq!(parse_bytes("512k"), Ok(512 << 10));
    assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
    assert_eq!(parse_bytes("2M"), Ok(2 << 20));
    assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
    assert!(parse_bytes("0").is_err());
    assert!(parse_bytes("1TB").is_err());
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("99999999999G").is_err());
}

#[test]
fn storm_and_burst_arguments() {
    let a = args("storm 5000");
    assert!(matches!(
        a.workload,
        Workload::Storm {
            n: 5000,
            concurrency: 2048
        }
    ));
    let p = storm::StormPlan::new(&a, 5000, 2048).unwrap();
    assert_eq!((p.source_ips, p.addr.port()), (2, 8080));
    let p = storm::StormPlan::new(&args("--source-ips 9 storm 10"), 10, 1).unwrap();
    assert_eq!(p.source_ips, 9);
    assert!(storm::StormPlan::new(&a, 0, 1).is_err());
    assert!(storm::StormPlan::new(&a, 5, 0)
        .unwrap_err()
        .contains("concurrency"));
    assert!(
        storm::StormPlan::new(&args("--addr 10.0.0.1:80 storm 5"), 5, 5)
            .unwrap_err()
            .contains("loopback")
    );

    let a = args("burst");
    let Workload::Burst {
        senders,
        burst_bytes,
        rounds,
    } = a.workload
    else {
        panic!("{:?}", a.workload)
    };
    assert_eq!((senders, burst_bytes, rounds), (30, 1 << 20, 1));
    let p = burst::BurstPlan::new(&a, senders, burst_bytes, rounds).unwrap();
    assert_eq!(
        (p.readers, p.size, p.lines, p.per_reader()),
        (2, 2048, 512, 30 * 512)
    );
    assert_eq!(p.source_ips, 0);
    assert!(p.warnings().is_empty());
    let a = args("burst -c 3 --size 100 --senders 4 --burst-bytes 10k --rounds 2");
    let Workload::Burst {
        senders,
        burst_bytes,
        rounds,
    } = a.workload
    else {
        panic!()
    };
    let p = burst::BurstPlan::new(&a, senders, burst_bytes, rounds).unwrap();
    assert_eq!((p.readers, p.senders, p.lines, p.rounds), (3, 4, 102, 2));
    let bad = |l: &str, s, b, r| burst::BurstPlan::new(&args(l), s, b, r).unwrap_err();
    assert!(bad("burst", 0, 1 << 20, 1).contains("sender"));
    assert!(bad("burst", 1, 1 << 20, 0).contains("round"));
    assert!(bad("-c 0 burst", 1, 1 << 20, 1).contains("reader"));
    assert!(bad("--size 20 burst", 1, 1 << 20, 1).contains("too small"));
    assert!(bad("burst", 1, 100, 1).contains("less than one line"));
    let many = burst::BurstPlan::new(&args("-c 70 burst"), 1, 1 << 20, 1).unwrap();
    assert!(many.warnings().iter().any(|w| w.contains("max_recipients")));
}

#[test]
fn storm_helpers() {
    assert_eq!(
        storm::failure_key("error: login \"b7-12\" is taken", "b7-12"),
        "error: login \"NAME\" is taken"
    );
    assert!(storm::failure_key(&"é".repeat(100), "x").len() <= 120);
    let before: HashMap<String, u64> = [("TcpExtListenOverflows", 5), ("TcpExtListenDrops", 5)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let mut after = before.clone();
    after.insert("TcpExtListenOverflows".into(), 9);
    after.insert("TcpExtTCPSynRetrans".into(), 3);
    assert_eq!(
        storm::counter_deltas(Some(&before), Some(&after)),
        vec![
            ("TcpExtListenOverflows", Some(4)),
            ("TcpExtListenDrops", Some(0)),
            ("TcpExtTCPSynRetrans", None)
        ]
    );
    assert!(storm::counter_deltas(None, Some(&after))
        .iter()
        .all(|(_, d)| d.is_none()));
    assert_eq!(burst::min_median_max(&[]), None);
    assert_eq!(
        burst::min_median_max(&[3.0, 1.0, 2.0]),
        Some((1.0, 2.0, 3.0))
    );
    assert_eq!(burst::min_median_max(&[4.0, 1.0]), Some((1.0, 2.5, 4.0)));
}

#[test]
fn storm_logs_everyone_in() {
    let addr = chat_server(Fault::None);
    let run = |l: &str| run_checked(&args(&format!("--addr {addr} -q {l}")));
    assert_eq!(run("storm 60 --concurrency 16"), Ok(true));
    assert_eq!(run("--json --prefix st- --source-ips 3 storm 20"), Ok(true));
    let redis = redis_server();
    assert_eq!(
        run_checked(&args(&format!("--target redis --addr {redis} -q storm 30"))),
        Ok(true)
    );
}

#[test]
fn storm_fails_when_logins_are_refused_or_nobody_listens() {
    let addr = chat_server(Fault::None);
    let _squatter = {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"sq-3\n").unwrap();
        s
    };
    thread::sleep(Duration::from_millis(100));
    let run = |l: &str| run_checked(&args(l));
    assert_eq!(
        run(&format!(
            "--addr {addr} -q --prefix sq- --connect-timeout 2s storm 5"
        )),
        Ok(false)
    );
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    assert_eq!(run(&format!("--addr {gone} -q storm 3")), Ok(false));
}

#[test]
fn burst_delivers_every_line_in_order() {
    let addr = chat_server(Fault::None);
    let run = |l: &str| run_checked(&args(&format!("--addr {addr} -q {l}")));
    assert_eq!(
        run("-c 2 --size 200 burst --senders 3 --burst-bytes 20k --rounds 2"),
        Ok(true)
    );
    let redis = redis_server();
    assert_eq!(
        run_checked(&args(&format!(
            "--target redis --addr {redis} -q -c 2 --size 100 burst --senders 2 --burst-bytes 5k"
        ))),
        Ok(true)
    );
}

#[test]
fn burst_reports_loss_and_cut_off_readers() {
    let run = |f: Fault, l: &str| {
        let addr = chat_server(f);
        run_checked(&args(&format!("--addr {addr} -q -d 2s {l}")))
    };
    let l = "-c 2 --size 100 burst --senders 2 --burst-bytes 5k --rounds 2";
    assert_eq!(run(Fault::Drop(40), l), Ok(false));
    assert_eq!(run(Fault::Swap(40), l), Ok(false));
    assert_eq!(run(Fault::Repeat(40), l), Ok(false));
    assert_eq!(run(Fault::Hangup(60), l), Ok(false));
}

#[test]
fn storm_times_out_on_a_server_that_never_answers() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let t = Instant::now();
    assert_eq!(
        run_checked(&args(&format!(
            "--addr {addr} -q --connect-timeout 500ms storm 5"
        ))),
        Ok(false)
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(silent);
}

#[test]
fn storm_report_says_n_a_without_kernel_counters() {
    let plan = storm::StormPlan::new(&args("storm 3"), 3, 8).unwrap();
    let mut latency = histogram::Histogram::new();
    latency.record(2_000_000);
    let res = storm::StormResult {
        logged_in: 2,
        failed: 1,
        timed_out: 0,
        all_in: None,
        elapsed: Duration::from_millis(1500),
        latency,
        failures: [("connect: refused".to_string(), 1)].into_iter().collect(),
        kernel: storm::counter_deltas(None, None),
    };
    let t = storm::text(&plan, &res);
    assert!(
        t.contains("ListenOverflows n/a, ListenDrops n/a, TCPSynRetrans n/a"),
        "{t}"
    );
    assert!(t.contains("1 × connect: refused"), "{t}");
    assert!(t.contains("FAILED"), "{t}");
    let j: serde_json::Value = serde_json::from_str(&storm::json(&plan, &res)).unwrap();
    assert_eq!(j["TcpExtListenDrops"], serde_json::Value::Null);
    assert_eq!(j["failures"]["connect: refused"], 1);
    assert_eq!(j["ok"], false);
}

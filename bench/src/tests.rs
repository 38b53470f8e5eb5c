//! End-to-end checks of the bench against a tiny in-process chat server that
//! speaks a-chat's line protocol (and can be told to lose, repeat or swap
//! messages, to prove the checks catch it).

use super::*;
use clap::Parser;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

mod report;
mod spread;
mod storm_burst;

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
            .access
            .addrs[0]
            .port()
            == 6379
    );
    assert_eq!(build_plan(&args("idle 9000")).unwrap().access.source_ips, 3);
}

#[test]
fn options_go_before_or_after_the_workload() {
    let a = args("fanout 3 --clients 7 --size 80 -d 2s");
    assert!(matches!(
        a.workload,
        Workload::Fanout {
            k: 3,
            cross_node: false
        }
    ));
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

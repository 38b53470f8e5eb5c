//! ARCHITECTURE §6 over HTTP against the real binary: the admin endpoint's health, readiness
//! and metrics, its answers to bad requests, its counters against the traffic a test
//! sent, and its fences (a slow admin client never stops chat).
mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_samples, http_get, http_raw, read_http_response, sample, scrape, Daemon, Start, WAIT,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn with_admin(extra: &str) -> (Daemon, SocketAddr) {
    let mut d = Daemon::with_toml(&format!("{extra}{ADMIN}"));
    let admin = d.admin_addr();
    (d, admin)
}

#[test]
fn one_connection_serves_several_requests() {
    let (_d, admin) = with_admin("");
    let stream = TcpStream::connect_timeout(&admin, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // Two requests in one write (pipelined), then a third after the answers.
    (&stream)
        .write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let first = read_http_response(&mut reader, false).unwrap();
    let second = read_http_response(&mut reader, false).unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "ok\n"));
    assert_eq!((second.status, second.text().as_str()), (200, "ready\n"));
    assert_eq!(second.header("connection"), Some("keep-alive"));
    (&stream)
        .write_all(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let third = read_http_response(&mut reader, false).unwrap();
    assert_eq!(third.status, 404);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "the connection closes after Connection: close"
    );
}

#[test]
fn bad_requests_get_4xx_and_the_connection_closes() {
    let (_d, admin) = with_admin("");
    assert_eq!(http_get(admin, "/nope").status, 404);
    assert_eq!(http_get(admin, "/metricsx").status, 404);

    let post = http_raw(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    )
    .unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(post.header("connection"), Some("close"));
    let delete = http_raw(admin, b"DELETE /readyz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(delete.status, 405);

    // Garbage (the start of a TLS handshake): 400, then the end of the stream.
    let garbage = http_raw(
        admin,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    )
    .unwrap();
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.header("connection"), Some("close"));
    let version = http_raw(admin, b"GET /healthz HTTP/9.9\r\n\r\n").unwrap();
    assert_eq!(version.status, 400);

    // A 64 KiB header: refused once the head passes 8 KiB, and the client still gets
    // the answer (the server reads what was sent before closing, so no reset).
    let big = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = http_raw(admin, big.as_bytes()).expect("an answer to a huge header");
    assert!(
        answer.status == 431 || answer.status == 400,
        "{}",
        answer.status
    );
    assert_eq!(answer.header("connection"), Some("close"));

    // Still serving after all that.
    assert_eq!(http_get(admin, "/healthz").status, 200);
}

#[test]
fn readyz_turns_503_when_the_drain_begins_and_the_endpoint_serves_through_it() {
    // A recipient that never reads keeps its writer blocked, so the drain lasts until
    // drain_timeout (long) instead of finishing at once.
    let (mut d, admin) = with_admin(
        "[limits]\noutbound_queue_bytes = 268435456\noutbound_queue_hard_bytes = 268435456\noutbound_total_bytes = 1073741824\nwrite_timeout = \"60s\"\n[shutdown]\ndrain_timeout = \"60s\"\n",
    );
    let sink = d.login("sink");
    let mut source = d.login("source");
    let text = "x".repeat(1000);
    let mut stuck = false;
    for _ in 0..64 {
        for _ in 0..1024 {
            source.send(&format!("sink: {text}"));
        }
        // Once this comes back, every line above has been routed.
        source.send("source: sync");
        source.expect("from source: sync");
        let samples = scrape(admin);
        let routed = sample(&samples, "achat_deliveries_routed_total");
        let delivered = sample(&samples, "achat_deliveries_written_total");
        if routed - delivered > 2048.0 {
            stuck = true;
            break;
        }
    }
    assert!(stuck, "the sink's writer never blocked");
    assert_eq!(http_get(admin, "/readyz").status, 200);

    d.signal(libc::SIGTERM);
    let deadline = Instant::now() + WAIT;
    let readyz = loop {
        let r = http_get(admin, "/readyz");
        if r.status != 200 || Instant::now() >= deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert_eq!(readyz.text(), "draining\n");
    // Alive, and still answering everything else, while the drain runs.
    assert_eq!(http_get(admin, "/healthz").status, 200);
    assert!(d.wait_log(|l| l.contains("drain started")).is_some());
    assert_samples(admin, &[("achat_draining", 1.0)]);
    assert!(d.wait_exit(Duration::ZERO).is_none(), "the drain is busy");

    // A second signal ends it at once; the admin port goes with the process.
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(WAIT).expect("exit after the second signal");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(TcpStream::connect_timeout(&admin, WAIT).is_err());
    drop(sink);
}

#[test]
fn a_slowloris_on_the_admin_port_does_not_stop_chat() {
    // 100 admin connections that each send half a request head and then nothing, in a
    // daemon allowed 64 descriptors: without the admin connection cap they would take
    // every descriptor and the chat listener could accept nothing.
    let mut d = Daemon::start_with(Start {
        toml: ADMIN.to_owned(),
        nofile: Some(64),
        ..Start::default()
    });
    let admin = d.admin_addr();
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let s = TcpStream::connect_timeout(&admin, WAIT).expect("connect to admin");
            (&s).write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();

    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    alice.send("bob: still here");
    bob.expect("from alice: still here");
    assert!(
        !d.log_text().contains("Too many open files"),
        "{}",
        d.log_text()
    );

    // The server gives up on an incomplete head after its request timeout (5 s).
    let first = &mut slow[0];
    first.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    let n = first
        .read(&mut buf)
        .expect("the server closes a request head that never completes");
    assert_eq!(n, 0, "closed without an answer");

    // Once the slow clients go away, the endpoint answers again.
    drop(slow);
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = http_raw(admin, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            .is_some_and(|r| r.status == 200);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the admin endpoint did not recover"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_admin_address_in_use_stops_the_daemon_before_chat_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("a-chat.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{addr}\"\n"),
    )
    .unwrap();
    let mut child = Command::new(common::bin())
        .arg("server")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the daemon kept running with its admin address taken");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "a-chat: cannot listen on the admin address {addr}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn the_admin_endpoint_is_off_by_default() {
    let mut d = Daemon::start();
    let _alice = d.login("alice");
    // The admin line would have been logged before any connection was served.
    assert!(d.wait_log(|l| l.contains("logged in")).is_some());
    assert!(
        !d.log_text().contains("admin listening"),
        "{}",
        d.log_text()
    );
}

/// 40 connections trickle request heads (more than the 32 admin slots) while an
/// orchestrator probes `/healthz` and `/readyz`: each probe is answered at once (a
/// newcomer takes the place of the connection that waited longest), and a pair chats
/// meanwhile.
#[test]
fn health_probes_are_answered_at_once_while_tricklers_fill_the_admin_slots() {
    let (d, admin) = with_admin("");
    let tricklers: Vec<TcpStream> = (0..40)
        .map(|_| {
            let s = TcpStream::connect_timeout(&admin, WAIT).expect("connect to admin");
            (&s).write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let mut alice = d.login("alice");
    let mut worst = Duration::ZERO;
    for (i, path) in ["/healthz", "/readyz"].iter().cycle().take(20).enumerate() {
        let asked = Instant::now();
        let request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n");
        let answer = http_raw(admin, request.as_bytes()).expect("an answer");
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        worst = worst.max(asked.elapsed());
        alice.send(&format!("alice: ping {i}"));
        alice.expect(&format!("from alice: ping {i}"));
    }
    eprintln!("20 probes among 40 tricklers: worst {worst:?}");
    // Generous: waiting for a trickler's 5 s deadline took 4.4 s.
    assert!(worst < Duration::from_secs(1), "worst probe {worst:?}");
    drop(tricklers);
    drop(d);
}

/// One connection pipelines `GET /healthz` as fast as it can: the admin task yields
/// between answers and closes the connection after MAX_REQUESTS_PER_CONNECTION, so a
/// pair chatting on the same worker thread keeps its pace.
#[test]
fn a_pipelining_client_does_not_stall_the_chat() {
    let (d, admin) = with_admin("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = stop.clone();
    let answered = std::thread::spawn(move || {
        let mut answered = 0u64;
        let mut connections = 0u64;
        let request = b"GET /healthz HTTP/1.1\r\n\r\n".repeat(256);
        while !flooding.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(mut s) = TcpStream::connect(admin) else {
                continue;
            };
            connections += 1;
            s.set_read_timeout(Some(WAIT)).unwrap();
            let reader = s.try_clone().unwrap();
            let counter = std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = BufReader::new(reader).read_to_end(&mut text);
                text.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count() as u64
            });
            while !flooding.load(std::sync::atomic::Ordering::Relaxed) {
                if s.write_all(&request).is_err() {
                    break;
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Both);
            answered += counter.join().unwrap();
        }
        (answered, connections)
    });
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let sent = Instant::now();
        alice.send(&format!("bob: ping {i}"));
        bob.expect(&format!("from alice: ping {i}"));
        worst = worst.max(sent.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, connections) = answered.join().unwrap();
    eprintln!(
        "{answered} pipelined answers over {connections} connections; the pair's worst trip {worst:?}"
    );
    assert!(answered > 0);
    // Generous: without a yield between answers, a trip took 0.77-4.4 s.
    assert!(worst < Duration::from_millis(500), "worst trip {worst:?}");
}

/// `GET /connections`: one JSON object per open connection, sorted and limited, and
/// filtered by login; parsed as JSON, not grepped.
#[test]
fn connections_lists_every_open_connection_as_json() {
    let (d, admin) = with_admin("");
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    let _anonymous = d.connect();
    alice.send(&format!("bob: {}", "x".repeat(500)));
    // Written to bob before anything is counted.
    bob.expect(&format!("from alice: {}", "x".repeat(500)));
    let get = |query: &str| -> serde_json::Value {
        let response = http_get(admin, &format!("/connections{query}"));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        serde_json::from_str(&response.text()).expect("JSON")
    };
    // The anonymous connection may still be on its way through accept: wait for it.
    let deadline = Instant::now() + WAIT;
    let all = loop {
        let all = get("");
        if all["total"] == 3 || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(all["total"], 3, "{all}");
    let list = all["connections"].as_array().unwrap();
    for c in list {
        for key in [
            "id",
            "peer",
            "since",
            "bytes_in",
            "bytes_out",
            "messages_in",
            "messages_out",
            "queued_bytes",
        ] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
    }
    let alice_row = list.iter().find(|c| c["login"] == "alice").expect("alice");
    assert!(alice_row["bytes_in"].as_u64().unwrap() > 500, "{alice_row}");
    assert!(
        alice_row["messages_in"].as_u64().unwrap() >= 2,
        "{alice_row}"
    );
    assert!(
        list.iter().any(|c| c["login"].is_null()),
        "the anonymous one: {all}"
    );
    let one = get("?login=bob&limit=5");
    assert_eq!(one["total"], 1);
    assert_eq!(one["connections"][0]["login"], "bob");
    let limited = get("?sort=since&limit=2");
    assert_eq!(limited["connections"].as_array().unwrap().len(), 2);
    assert_eq!(
        limited["connections"][0]["login"], "alice",
        "oldest first: {limited}"
    );
    let by_out = get("?sort=bytes_out&limit=1");
    assert_eq!(
        by_out["connections"][0]["login"], "bob",
        "bob got the most: {by_out}"
    );
}

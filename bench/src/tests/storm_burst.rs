//! Checks of `storm` and `burst`: their arguments and pure helpers, and runs
//! against the in-process chat and Redis stand-ins of the parent module.

use super::*;

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
    assert_eq!((p.access.source_ips, p.access.addrs[0].port()), (2, 8080));
    let p = storm::StormPlan::new(&args("--source-ips 9 storm 10"), 10, 1).unwrap();
    assert_eq!(p.access.source_ips, 9);
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
    assert_eq!(p.access.source_ips, 0);
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
        tls_params: None,
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
    assert_eq!(j["tls"], serde_json::Value::Null);
    assert_eq!(j["logins_per_s"], serde_json::Value::Null);
}

#[test]
fn storm_rate_is_logins_over_the_time_until_all_were_in() {
    let plan = storm::StormPlan::new(&args("storm 4"), 4, 8).unwrap();
    let res = storm::StormResult {
        logged_in: 4,
        failed: 0,
        timed_out: 0,
        all_in: Some(Duration::from_millis(500)),
        elapsed: Duration::from_millis(600),
        latency: histogram::Histogram::new(),
        failures: Default::default(),
        kernel: storm::counter_deltas(None, None),
        tls_params: Some("TLSv1_3, TLS13_AES_256_GCM_SHA384".into()),
    };
    assert_eq!(res.rate(), Some(8.0));
    let t = storm::text(&plan, &res);
    assert!(t.contains("8 logins per second"), "{t}");
    assert!(t.contains("tls         TLSv1_3"), "{t}");
    let j: serde_json::Value = serde_json::from_str(&storm::json(&plan, &res)).unwrap();
    assert_eq!(j["logins_per_s"], 8.0);
    assert_eq!(j["tls"], "TLSv1_3, TLS13_AES_256_GCM_SHA384");
}

#[test]
fn tls_options_are_global_and_checked() {
    let a = args("--tls --ca /x/ca.pem --server-name chat.example --addr 127.0.0.1:8443 idle 3");
    assert!(a.tls);
    assert_eq!(a.ca.as_deref(), Some(std::path::Path::new("/x/ca.pem")));
    assert_eq!(a.server_name.as_deref(), Some("chat.example"));
    // Options after the workload are global too.
    let a = args("direct --tls --ca /x/ca.pem --cert c.pem --key k.pem");
    assert!(a.tls && a.cert.is_some() && a.key.is_some());
    for bad in [
        "--tls direct",
        "--ca /x/ca.pem direct",
        "--tls --ca /x/ca.pem --cert c.pem direct",
        "--server-name x direct",
    ] {
        let r = Cli::try_parse_from(std::iter::once("bench").chain(bad.split_whitespace()));
        assert!(r.is_err(), "{bad} was accepted");
    }
    // A missing CA file is an error before any connect, naming the option.
    let e = plan::build_plan(&args("--tls --ca /nonexistent/ca.pem direct")).unwrap_err();
    assert!(e.contains("--ca"), "{e}");
    assert!(plan::build_plan(&args("direct"))
        .unwrap()
        .access
        .tls
        .is_none());
}

//! The slow-consumer grace while the client's writer is blocked, against the real binary:
//! a queue above `outbound_queue_bytes` is cut when `slow_consumer_grace` ends, whatever its
//! writer is doing (here: waiting on a socket the client never reads, with a long
//! `write_timeout` and nobody queueing more), and the close line names the cut.
mod common;

use std::time::{Duration, Instant};

use common::Daemon;

#[test]
fn a_blocked_non_reader_is_cut_when_its_grace_ends_and_its_close_line_says_why() {
    let mut d = Daemon::with_toml(
        "[limits]\noutbound_queue_bytes = 1048576\noutbound_queue_hard_bytes = 67108864\n\
         slow_consumer_grace = \"2s\"\nwrite_timeout = \"60s\"\n",
    );
    let _sleepy = d.login_small_rcvbuf("sleepy", 4096);
    let mut talker = d.login("talker");
    // 8 MiB for a client that reads nothing: far more than the socket buffers hold, so the
    // writer's write blocks and the queue stays over the soft bound.
    let line = format!("sleepy: {}\n", "x".repeat(1000));
    let mut batch = String::new();
    for _ in 0..16 {
        batch.push_str(&line);
    }
    for _ in 0..(8 << 20) / batch.len() {
        talker.send_raw(batch.as_bytes()).expect("send");
    }
    talker.send("talker: all sent");
    talker.expect("from talker: all sent");
    // From here nobody queues anything for sleepy: only its writer can notice the grace.
    let routed = Instant::now();
    let close = d
        .wait_log_for(Duration::from_secs(20), |l| {
            l.contains("connection closed") && l.contains("login=\"sleepy\"")
        })
        .unwrap_or_else(|| panic!("sleepy was not cut off:\n{}", d.log_text()));
    let waited = routed.elapsed();
    eprintln!("cut {waited:?} after the last line was routed: {close}");
    assert!(close.contains("reason=\"slow_consumer_grace\""), "{close}");
    // The grace is 2 s; the write timeout (the old bound of a blocked writer) is 60 s.
    assert!(waited < Duration::from_secs(8), "cut after {waited:?}");
    let warning = d
        .wait_log(|l| l.contains("slow consumer disconnected"))
        .expect("no slow-consumer line");
    assert!(warning.contains("reason=\"grace\""), "{warning}");
    // The talker is not affected.
    talker.send("talker: still here");
    talker.expect("from talker: still here");
}

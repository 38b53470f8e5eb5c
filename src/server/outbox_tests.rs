//! Tests of the outbound queue (src/server/outbox.rs) on real loopback sockets: order,
//! closing, the soft bound over the grace, the hard bound, the total budget, bad lines.

use super::*;
use crate::runtime;

use crate::config::Limits;
use crate::metrics::Metrics;

/// A budget with these bounds (bytes: soft, hard, total).
fn budget(soft: usize, hard: usize, total: usize, grace: Duration) -> Arc<Budget> {
    let limits = Limits {
        outbound_queue_bytes: soft,
        outbound_queue_hard_bytes: hard,
        outbound_total_bytes: total,
        slow_consumer_grace: grace,
        ..Limits::default()
    };
    Budget::new(&limits, &Metrics::new())
}

/// A queue on a real (loopback) socket, as the server makes them.
fn queue_in(budget: &Arc<Budget>) -> (Outbox, Inbox, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let conn = Conn::from_accepted(accepted.into(), Duration::ZERO).unwrap();
    let peer = client.local_addr().unwrap();
    // Each queue its own connection id, as the accept loop gives them.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (outbox, inbox) = new(
        conn,
        budget.clone(),
        ConnInfo::new(id, peer, crate::metrics::Transport::Tcp),
    );
    (outbox, inbox, client)
}

/// A queue whose every bound is `limit`.
fn queue(limit: usize) -> (Outbox, Inbox, std::net::TcpStream) {
    queue_in(&budget(limit, limit, limit, Duration::from_secs(5)))
}

fn server(line: &str) -> Out {
    Out::Server(line.as_bytes().to_vec())
}

fn text(out: Option<Out>) -> Option<String> {
    out.map(|out| String::from_utf8(out.bytes().to_vec()).unwrap())
}

#[test]
fn lines_come_out_in_order_and_the_queue_closes_with_its_last_handle() {
    let (outbox, inbox, _client) = queue(1000);
    let other = outbox.clone();
    outbox.send(server("a\n")).unwrap();
    other.send(server("b\n")).unwrap();
    drop(outbox);
    runtime::block_on(async {
        assert_eq!(text(inbox.recv().await).as_deref(), Some("a\n"));
        assert_eq!(text(inbox.recv().await).as_deref(), Some("b\n"));
        // One handle is left: the writer waits, and a line sent later wakes it.
        let later = async {
            other.send(server("c\n")).unwrap();
            drop(other);
        };
        let (got, ()) = futures::join!(inbox.recv(), later);
        assert_eq!(text(got).as_deref(), Some("c\n"));
        assert!(
            inbox.recv().await.is_none(),
            "closed once every handle is gone"
        );
    });
}

#[test]
fn take_more_stops_when_asked() {
    let (outbox, inbox, _client) = queue(1000);
    for line in ["1\n", "2\n", "3\n"] {
        outbox.send(server(line)).unwrap();
    }
    let mut taken = Vec::new();
    inbox.take_more(true, |out| {
        taken.push(out.bytes().to_vec());
        taken.len() < 2
    });
    assert_eq!(taken, vec![b"1\n".to_vec(), b"2\n".to_vec()]);
    let left: Vec<_> = inbox
        .close()
        .0
        .into_iter()
        .map(|o| o.bytes().to_vec())
        .collect();
    assert_eq!(left, vec![b"3\n".to_vec()]);
    // A closed queue takes nothing more.
    assert_eq!(outbox.send(server("4\n")), Err(DropReason::RecipientGone));
}

fn delivery(line: &str) -> Out {
    let buf: Arc<[u8]> = line.as_bytes().into();
    Out::Delivery(Shared::new(buf, 0..line.len()))
}

#[test]
fn passing_the_hard_bound_cuts_the_client_at_once() {
    let b = budget(10, 20, 1000, Duration::from_secs(60));
    let (outbox, inbox, mut client) = queue_in(&b);
    outbox.send(delivery("12345678\n")).unwrap();
    outbox.send(delivery("12345678\n")).unwrap(); // 18: over soft, within the grace
    assert!(!inbox.queue.is_cut());
    assert_eq!(outbox.send(server("123\n")), Err(DropReason::SlowConsumer));
    assert_eq!(inbox.queue.cut_reason(), Some(SlowReason::Hard));
    // The socket was shut down: the client sees the end.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
    assert!(rest.is_empty());
    // What was queued was thrown away at once and left the total; the writer is told
    // how many deliveries that was.
    assert_eq!(b.total(), 0);
    assert_eq!(inbox.queue.queued(), 0);
    let (left, dropped) = inbox.close();
    assert!(left.is_empty());
    assert_eq!(dropped, 2);
    assert_eq!(outbox.send(server("x\n")), Err(DropReason::SlowConsumer));
}

#[test]
fn a_queue_may_stay_over_the_soft_bound_for_the_grace_only() {
    let b = budget(10, 1000, 10_000, Duration::from_millis(50));
    let (outbox, inbox, _client) = queue_in(&b);
    for _ in 0..5 {
        outbox.send(server("12345678\n")).unwrap();
    }
    assert!(inbox.queue.grace_left().is_some(), "over the soft bound");
    // Worked off below the soft bound within the grace: forgotten.
    inbox.take_more(true, |out| {
        inbox.queue.release(out.bytes().len());
        true
    });
    assert_eq!(inbox.queue.grace_left(), None);
    // Over again, and still over after the grace: cut.
    for _ in 0..5 {
        outbox.send(server("12345678\n")).unwrap();
    }
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(inbox.queue.grace_left(), Some(Duration::ZERO));
    assert_eq!(outbox.send(server("1\n")), Err(DropReason::SlowConsumer));
    assert_eq!(inbox.queue.cut_reason(), Some(SlowReason::Grace));
}

#[test]
fn over_the_total_the_largest_queues_are_cut_first() {
    let b = budget(100, 10_000, 1000, Duration::from_secs(60));
    let (small, small_in, _c1) = queue_in(&b);
    let (big, big_in, _c2) = queue_in(&b);
    let (mid, mid_in, _c3) = queue_in(&b);
    let line = "x".repeat(99) + "\n";
    for _ in 0..2 {
        small.send(server(&line)).unwrap();
    }
    for _ in 0..5 {
        big.send(server(&line)).unwrap();
    }
    for _ in 0..3 {
        mid.send(server(&line)).unwrap();
    }
    assert_eq!(b.total(), 1000);
    // One more line passes the total: the biggest queue goes, and that is enough.
    small.send(server(&line)).unwrap();
    assert_eq!(big_in.queue.cut_reason(), Some(SlowReason::Total));
    assert!(!mid_in.queue.is_cut() && !small_in.queue.is_cut());
    assert_eq!(b.total(), 600);
    drop((small_in, mid_in));
}

#[test]
fn bad_lines_are_answered_up_to_the_rate_then_the_connection_closes() {
    let (outbox, _inbox, _client) = queue(1000);
    let answers = std::iter::repeat_with(|| outbox.bad_line())
        .take(100)
        .collect::<Vec<_>>();
    let allowed = answers.iter().filter(|&&a| a == BadLine::Answer).count();
    assert_eq!(allowed, crate::server::badlines::BURST as usize);
    assert_eq!(answers[allowed], BadLine::TooMany);
    assert!(answers[allowed + 1..]
        .iter()
        .all(|&a| a == BadLine::Closing));
}

#[test]
fn a_dropped_queue_leaves_the_total_and_the_list() {
    let b = budget(100, 100, 1000, Duration::from_secs(60));
    let (outbox, inbox, _client) = queue_in(&b);
    outbox.send(server("hello\n")).unwrap();
    assert_eq!(b.total(), 6);
    drop((outbox, inbox));
    assert_eq!(b.total(), 0);
    assert!(b.is_empty());
}

//! Floods for tests: threads that send hostile input at full speed, a pair of clients
//! whose round trips are timed meanwhile, and a watch on the daemon's resident memory.
//! The flood tests (`floods.rs`, `proxy.rs`, `cluster_floods.rs`) are built from these.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{proc_status_kib, Client};

/// Samples the daemon's resident memory every few milliseconds until stopped.
pub struct RssWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(proc_status_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(5));
            }
            max
        });
        RssWatch { stop, handle }
    }

    /// The largest RSS seen, in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// One flooding connection after another to `addr` until `stop`: connect, send the login
/// part of `make(round)`, then its body over and over at full speed without ever
/// reading (with `trickle`, a pause after each write); reconnect when the daemon closes
/// the connection. Returns how many bytes went out.
pub fn flood_until(
    addr: SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
    trickle: Option<Duration>,
    make: impl Fn(usize) -> (Vec<u8>, Vec<u8>),
) -> u64 {
    use std::sync::atomic::Ordering;
    let mut sent = 0u64;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (login, body) = make(round);
        if stream.write_all(&login).is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            match stream.write(&body) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            if let Some(pause) = trickle {
                std::thread::sleep(pause);
            }
        }
    }
    sent
}

/// Flooding threads, each running its flood until [`Flood::stop`].
pub struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Flood {
    /// Starts `n` threads; thread `i` runs `flood(i, stop)`, which returns the bytes it sent
    /// once `stop` is set.
    pub fn start(
        n: usize,
        flood: impl Fn(usize, &std::sync::atomic::AtomicBool) -> u64 + Send + Sync + 'static,
    ) -> Flood {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = Arc::new(flood);
        let threads = (0..n)
            .map(|i| {
                let (stop, flood) = (stop.clone(), flood.clone());
                std::thread::spawn(move || flood(i, &stop))
            })
            .collect();
        Flood { stop, threads }
    }

    /// Stops every flooder and returns the bytes they sent together.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

/// What a pair's round trips came to.
pub struct RoundTrips {
    pub done: usize,
    pub worst: Duration,
    pub took: Duration,
}

/// Round trips between `alice` and `bob` (logged in under those names): `bob: ping N` one
/// way, `alice: pong N` back, each line checked as it arrives, until `rounds` are done or
/// `within` has passed.
pub fn ping_pong(
    alice: &mut Client,
    bob: &mut Client,
    rounds: usize,
    within: Duration,
) -> RoundTrips {
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut done = 0;
    while done < rounds && started.elapsed() < within {
        let sent = Instant::now();
        alice.send(&format!("bob: ping {done}"));
        bob.expect(&format!("from alice: ping {done}"));
        bob.send(&format!("alice: pong {done}"));
        alice.expect(&format!("from bob: pong {done}"));
        worst = worst.max(sent.elapsed());
        done += 1;
    }
    RoundTrips {
        done,
        worst,
        took: started.elapsed(),
    }
}

/// Twenty lines from `alice` to `bob` (logged in under those names), each checked: the
/// pair's buffers are warm before a test takes its base RSS.
pub fn warm_up(alice: &mut Client, bob: &mut Client) {
    for i in 0..20 {
        alice.send(&format!("bob: warm {i}"));
        bob.expect(&format!("from alice: warm {i}"));
    }
}

/// What a flood while a pair chatted came to (see [`chat_through_flood`]).
pub struct FloodRun {
    /// Each watched daemon's RSS before the flood, in KiB.
    pub bases: Vec<u64>,
    /// Each watched daemon's largest RSS during the flood, in KiB.
    pub maxes: Vec<u64>,
    /// The bytes the flooders sent together.
    pub flooded: u64,
    /// The pair's round trips during the flood.
    pub trips: RoundTrips,
}

/// Warms the pair up, takes the base RSS of the daemons `pids`, then runs `n` flooders
/// (see [`Flood::start`]) while `alice` and `bob` make round trips (see [`ping_pong`]),
/// and watches the daemons' RSS until the flood is stopped.
pub fn chat_through_flood(
    pids: &[u32],
    alice: &mut Client,
    bob: &mut Client,
    (rounds, within): (usize, Duration),
    n: usize,
    flood: impl Fn(usize, &std::sync::atomic::AtomicBool) -> u64 + Send + Sync + 'static,
) -> FloodRun {
    warm_up(alice, bob);
    let bases = pids
        .iter()
        .map(|&pid| proc_status_kib(pid, "VmRSS:"))
        .collect();
    let watches: Vec<RssWatch> = pids.iter().map(|&pid| RssWatch::start(pid)).collect();
    let flood = Flood::start(n, flood);
    let trips = ping_pong(alice, bob, rounds, within);
    let flooded = flood.stop();
    FloodRun {
        bases,
        maxes: watches.into_iter().map(RssWatch::stop).collect(),
        flooded,
        trips,
    }
}

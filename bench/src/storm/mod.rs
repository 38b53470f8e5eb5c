//! `a-chat bench storm N`: N clients connect and log in at once, like every
//! client of a restarted node coming back (ARCHITECTURE §4b). One epoll loop starts
//! non-blocking connects, up to `--concurrency` of them in flight (started, not
//! yet logged in), and counts a client once its login is confirmed: for a-chat
//! the echo of a message to itself, for Redis the SUBSCRIBE reply. It reports
//! the time until all are in, connect-to-login latency, the failures by cause,
//! and what the kernel counted meanwhile (listen queue overflows and drops, SYN
//! retransmits); `report` prints it. With `--tls` each client's full TLS handshake
//! comes before its login and counts in its connect-to-login time, so the rate is
//! TLS handshakes plus logins per second.

mod report;

pub use report::{json, text};

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::access::{login_prefix, source_ips, target_addrs, Access};
use super::args::BenchArgs;
use super::histogram::Histogram;
use super::link::Link;
use super::plan::{ensure_fds, Target};
use super::sys::{self, Epoll};
use super::wire::{self, ChatLine, Resp};

/// The kernel counters the storm reports, as /proc/net/netstat names them.
pub const KERNEL_COUNTERS: [&str; 3] = [
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPSynRetrans",
];

/// What a storm does; checked before any connect.
#[derive(Debug)]
pub struct StormPlan {
    /// How each client connects and logs in (client i on the (i mod n)-th
    /// address); with `--tls` the handshake is part of the login.
    pub access: Access,
    pub clients: usize,
    pub concurrency: usize,
}

impl StormPlan {
    pub fn new(args: &BenchArgs, clients: usize, concurrency: usize) -> Result<Self, String> {
        if clients == 0 {
            return Err("storm N: need at least one client".into());
        }
        if concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        let addrs = target_addrs(args)?;
        let source_ips = source_ips(args, &addrs, Some(clients))?;
        let prefix = login_prefix(args, clients)?;
        Ok(StormPlan {
            access: Access::new(args, addrs, prefix, source_ips)?,
            clients,
            concurrency,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    LoggingIn,
    Done,
    Failed,
}

struct Slot {
    stream: Option<Link>,
    state: State,
    started: Instant,
    buf: Vec<u8>,
}

/// Groups failure causes: the client's own login is replaced by `NAME`, so
/// `error: login "b1-7" is taken` counts once for all clients.
pub fn failure_key(why: &str, name: &str) -> String {
    let mut k = why.replace(name, "NAME");
    if k.len() > 120 {
        let mut cut = 120;
        while !k.is_char_boundary(cut) {
            cut -= 1;
        }
        k.truncate(cut);
    }
    k
}

/// `after - before` for each counter, if both readings have it.
pub fn counter_deltas(
    before: Option<&HashMap<String, u64>>,
    after: Option<&HashMap<String, u64>>,
) -> Vec<(&'static str, Option<u64>)> {
    KERNEL_COUNTERS
        .iter()
        .map(|&k| {
            let d = before
                .and_then(|b| b.get(k))
                .zip(after.and_then(|a| a.get(k)))
                .map(|(b, a)| a.saturating_sub(*b));
            (k, d)
        })
        .collect()
}

/// What the storm measured.
pub struct StormResult {
    pub logged_in: usize,
    pub failed: usize,
    pub timed_out: usize,
    /// From the first connect to the last confirmed login, when all logged in.
    pub all_in: Option<Duration>,
    pub elapsed: Duration,
    pub latency: Histogram,
    pub failures: BTreeMap<String, usize>,
    pub kernel: Vec<(&'static str, Option<u64>)>,
    /// With `--tls`: the protocol version, cipher suite and key exchange negotiated.
    pub tls_params: Option<String>,
}

impl StormResult {
    pub fn ok(&self, plan: &StormPlan) -> bool {
        self.logged_in == plan.clients
    }

    /// Logins (with `--tls`, handshakes plus logins) per second: all of them over
    /// the time until the last was in; `None` unless all logged in.
    pub fn rate(&self) -> Option<f64> {
        self.all_in
            .filter(|t| !t.is_zero())
            .map(|t| self.logged_in as f64 / t.as_secs_f64())
    }
}

struct Storm<'a> {
    plan: &'a StormPlan,
    quiet: bool,
    epoll: Epoll,
    slots: Vec<Slot>,
    in_flight: usize,
    res: StormResult,
    last_done: Option<Instant>,
    start: Instant,
}

const TICK: Duration = Duration::from_secs(1);

/// Runs the storm; `Ok(true)` if every client logged in in time.
pub fn run(args: &BenchArgs, clients: usize, concurrency: usize) -> Result<bool, String> {
    if args.transport == crate::args::Transport::Ws {
        return Err("storm connects over TCP (or --tls): --transport ws is for direct, fanout, idle and burst".into());
    }
    if args.target == Target::Nats {
        return Err(
            "storm compares a-chat with Redis: --target nats is for direct, fanout and idle".into(),
        );
    }
    let plan = StormPlan::new(args, clients, concurrency)?;
    ensure_fds(plan.clients as u64, 1)?;
    let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let before = sys::netstat();
    let start = Instant::now();
    let mut s = Storm {
        plan: &plan,
        quiet: args.quiet,
        epoll,
        slots: Vec::with_capacity(plan.clients),
        in_flight: 0,
        res: StormResult {
            logged_in: 0,
            failed: 0,
            timed_out: 0,
            all_in: None,
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
            failures: BTreeMap::new(),
            kernel: Vec::new(),
            tls_params: None,
        },
        last_done: None,
        start,
    };
    s.run_loop();
    let after = sys::netstat();
    s.res.kernel = counter_deltas(before.as_ref(), after.as_ref());
    let ok = s.res.ok(&plan);
    let Storm { res, .. } = s; // closes every connection
    if args.json {
        println!("{}", json(&plan, &res));
    } else {
        print!("{}", text(&plan, &res));
    }
    Ok(ok)
}

impl Storm<'_> {
    fn run_loop(&mut self) {
        let deadline = self.start + self.plan.access.connect_timeout;
        let mut next_tick = self.start + TICK;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            while self.in_flight < self.plan.concurrency && self.slots.len() < self.plan.clients {
                self.start_one();
            }
            let finished = self.res.logged_in + self.res.failed;
            if finished == self.plan.clients {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now >= next_tick {
                next_tick += TICK;
                self.progress();
            }
            let wait = (deadline.min(next_tick) - now).min(Duration::from_millis(100));
            let n = self.epoll.wait(&mut events, wait).unwrap_or(0);
            for ev in &events[..n] {
                self.on_event(ev.u64 as usize, ev.events, &mut rbuf);
            }
        }
        self.res.elapsed = self.start.elapsed();
        let left = self.plan.clients - self.res.logged_in - self.res.failed;
        if left > 0 {
            self.res.timed_out = left;
            *self
                .res
                .failures
                .entry(format!(
                    "not logged in within --connect-timeout {}",
                    humantime::format_duration(self.plan.access.connect_timeout)
                ))
                .or_default() += left;
        }
        if self.res.logged_in == self.plan.clients {
            self.res.all_in = self.last_done.map(|t| t - self.start);
        }
        self.progress();
    }

    fn progress(&self) {
        if !self.quiet {
            eprintln!(
                "[{:5.1}s] storm: {} logged in, {} in flight, {} failed, {} not started, of {}",
                self.start.elapsed().as_secs_f64(),
                self.res.logged_in,
                self.in_flight,
                self.res.failed,
                self.plan.clients - self.slots.len(),
                self.plan.clients
            );
        }
    }

    fn start_one(&mut self) {
        let i = self.slots.len();
        let started = Instant::now();
        self.slots.push(Slot {
            stream: None,
            state: State::Connecting,
            started,
            buf: Vec::new(),
        });
        self.in_flight += 1;
        match sys::connect_start(self.plan.access.addr_of(i), self.plan.access.source(i)) {
            Ok((stream, connected)) => {
                if let Err(e) = self.epoll.add(stream.as_raw_fd(), i as u64) {
                    return self.fail(i, format!("epoll: {e}"));
                }
                self.slots[i].stream = Some(Link::Plain(stream));
                if connected {
                    self.connected(i);
                }
            }
            Err(e) => self.fail(i, format!("connect: {e}")),
        }
    }

    fn on_event(&mut self, i: usize, flags: u32, rbuf: &mut [u8]) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        if slot.state == State::Connecting && flags & (sys::WRITABLE | sys::HANGUP) != 0 {
            let r = match &slot.stream {
                Some(s) => sys::take_socket_error(s.tcp()),
                None => return,
            };
            match r {
                Ok(()) => self.connected(i),
                Err(e) => return self.fail(i, format!("connect: {e}")),
            }
        }
        if self.slots[i].state == State::LoggingIn && flags & sys::WRITABLE != 0 {
            // TLS records (handshake, login) the socket could not take before.
            if let Some(link) = self.slots[i].stream.as_mut() {
                match link.send_pending() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                        return self.fail(i, format!("write: {e}"))
                    }
                    _ => {}
                }
            }
        }
        if self.slots[i].state == State::LoggingIn && flags & sys::READABLE != 0 {
            self.read(i, rbuf);
        }
    }

    /// The connect completed: send the login and its confirmation request (with
    /// `--tls`, start the handshake; the login follows it).
    fn connected(&mut self, i: usize) {
        let hello = self.plan.access.hello(&self.plan.access.name(i));
        self.slots[i].state = State::LoggingIn;
        if let Some(tls) = self.plan.access.tls.clone() {
            let Some(Link::Plain(sock)) = self.slots[i].stream.take() else {
                return;
            };
            match Link::new(sock, Some(&tls)) {
                Ok(link) => self.slots[i].stream = Some(link),
                Err(e) => return self.fail(i, format!("TLS: {e}")),
            }
        }
        let Some(stream) = self.slots[i].stream.as_mut() else {
            return;
        };
        // A fresh socket's send buffer (or rustls's, before the handshake) takes these
        // few bytes in one write.
        match stream.write(hello.as_bytes()) {
            Ok(n) if n == hello.len() => {}
            Ok(_) => self.fail(i, "short write of the login".into()),
            Err(e) => self.fail(i, format!("write: {e}")),
        }
    }

    fn read(&mut self, i: usize, rbuf: &mut [u8]) {
        loop {
            let Some(stream) = self.slots[i].stream.as_mut() else {
                return;
            };
            match stream.read(rbuf) {
                Ok(0) => {
                    return self.fail(
                        i,
                        "closed by the server before the login was confirmed".into(),
                    )
                }
                Ok(n) => {
                    self.slots[i].buf.extend_from_slice(&rbuf[..n]);
                    self.scan(i);
                    if self.slots[i].state != State::LoggingIn {
                        return;
                    }
                    if self.slots[i].buf.len() > 64 * 1024 {
                        return self
                            .fail(i, "too much input before the login was confirmed".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(i, format!("read: {e}")),
            }
        }
    }

    /// Looks through what client `i` received for its confirmation or an error.
    fn scan(&mut self, i: usize) {
        let name = self.plan.access.name(i);
        let buf = std::mem::take(&mut self.slots[i].buf);
        let mut pos = 0;
        let mut outcome: Option<Result<(), String>> = None;
        match self.plan.access.target {
            Target::Achat => {
                while let Some(n) = wire::find_byte(&buf[pos..], b'\n') {
                    let line = &buf[pos..pos + n];
                    pos += n + 1;
                    match wire::parse_chat_line(line) {
                        ChatLine::From { login, text }
                            if login == name.as_bytes() && text == b"ping" =>
                        {
                            outcome = Some(Ok(()));
                        }
                        ChatLine::Error(_) | ChatLine::Notice(_) => {
                            outcome = Some(Err(String::from_utf8_lossy(line).into_owned()));
                        }
                        _ => {}
                    }
                    if outcome.is_some() {
                        break;
                    }
                }
            }
            Target::Redis | Target::Nats => loop {
                match wire::parse_resp(&buf[pos..]) {
                    Ok(Some((v, n))) => {
                        pos += n;
                        match v {
                            Resp::Array {
                                first: Some(b"subscribe"),
                                ..
                            } => outcome = Some(Ok(())),
                            Resp::Error(e) => {
                                outcome = Some(Err(format!("-{}", String::from_utf8_lossy(e))))
                            }
                            _ => {}
                        }
                        if outcome.is_some() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(()) => {
                        outcome = Some(Err("unparsable RESP".into()));
                        break;
                    }
                }
            },
        }
        self.slots[i].buf = buf[pos..].to_vec();
        match outcome {
            Some(Ok(())) => self.done(i),
            Some(Err(why)) => self.fail(i, why),
            None => {}
        }
    }

    fn done(&mut self, i: usize) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        slot.state = State::Done;
        slot.buf = Vec::new();
        if self.res.tls_params.is_none() {
            self.res.tls_params = slot.stream.as_ref().and_then(Link::describe);
        }
        self.in_flight -= 1;
        self.res.logged_in += 1;
        self.res
            .latency
            .record((now - slot.started).as_nanos() as u64);
        self.last_done = Some(now);
    }

    fn fail(&mut self, i: usize, why: String) {
        let slot = &mut self.slots[i];
        if matches!(slot.state, State::Done | State::Failed) {
            return;
        }
        slot.state = State::Failed;
        slot.stream = None;
        slot.buf = Vec::new();
        self.in_flight -= 1;
        self.res.failed += 1;
        let key = failure_key(&why, &self.plan.access.name(i));
        *self.res.failures.entry(key).or_default() += 1;
    }
}

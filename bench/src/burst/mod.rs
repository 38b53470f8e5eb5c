//! `a-chat bench burst`: `--senders` clients each write a whole burst (lines of
//! `--size` bytes, `--burst-bytes` in all; over TLS with `--tls`) addressed to every one of the
//! `--clients` readers, all at once, `--rounds` times. Readers read at full
//! speed. Every line must reach every reader, in order per sender (the payload
//! and sequence checker of the other workloads), and no reader may be cut off
//! (ARCHITECTURE §1, §4b: a client that reads at a normal pace is never cut off by a
//! burst). One epoll loop runs all connections.
//!
//! Here: the plan, connecting and logging in, the rounds and the senders;
//! `receive` reads and checks, `report` prints the outcome.

mod receive;
mod report;

pub use report::Outcome;

use std::time::{Duration, Instant};

use super::access::{login_prefix, source_ips, target_addrs, Access};
use super::args::BenchArgs;
use super::checker::SeqChecker;
use super::link::Link;
use super::payload;
use super::plan::{ensure_fds, Target};
use super::report::fmt_ns;
use super::spread;
use super::sys::{self, Epoll};
use super::wire::{self, Template};

/// What a burst run does; checked before any connect.
#[derive(Debug)]
pub struct BurstPlan {
    /// How each client connects and logs in; client i (readers first, then
    /// senders) connects to the (i mod n)-th address.
    pub access: Access,
    pub readers: usize,
    pub senders: usize,
    pub size: usize,
    pub burst_bytes: u64,
    /// Lines per sender and round.
    pub lines: u64,
    pub rounds: u32,
    pub round_timeout: Duration,
}

impl BurstPlan {
    pub fn new(
        args: &BenchArgs,
        senders: usize,
        burst_bytes: u64,
        rounds: u32,
    ) -> Result<Self, String> {
        let readers = args.clients_or(2);
        let size = args.size_or(2048);
        if readers == 0 || senders == 0 || rounds == 0 {
            return Err(
                "burst needs at least one reader (--clients), one sender and one round".into(),
            );
        }
        if size < payload::HEADER_LEN {
            return Err(format!(
                "--size {size} is too small: payloads carry a {}-byte header",
                payload::HEADER_LEN
            ));
        }
        if burst_bytes < size as u64 {
            return Err(format!(
                "--burst-bytes {burst_bytes} is less than one line of --size {size}"
            ));
        }
        let lines = burst_bytes / size as u64;
        if lines.saturating_mul(u64::from(rounds)) > payload::MAX_SEQ {
            return Err("--burst-bytes / --size × --rounds must stay below 2^48".into());
        }
        let addrs = target_addrs(args)?;
        let prefix = login_prefix(args, readers + senders)?;
        let source_ips = source_ips(args, &addrs, None)?;
        Ok(BurstPlan {
            access: Access::new(args, addrs, prefix, source_ips)?,
            readers,
            senders,
            size,
            burst_bytes,
            lines,
            rounds,
            round_timeout: args.duration,
        })
    }

    /// Lines each reader gets per round.
    pub fn per_reader(&self) -> u64 {
        self.senders as u64 * self.lines
    }

    /// Limits of a default a-chat server that the plan goes past.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.access.target == Target::Achat {
            if self.readers > 64 {
                w.push(format!(
                    "{} readers are above the server's default max_recipients (64): expect errors",
                    self.readers
                ));
            }
            let names: usize = (0..self.readers)
                .map(|r| self.access.name(r).len() + 2)
                .sum();
            if names + self.size > 8192 {
                w.push(format!(
                    "lines of about {} bytes exceed the server's default max_line_bytes (8192)",
                    names + self.size
                ));
            }
        }
        w
    }
}

/// min, median and max (`None` if empty).
pub fn min_median_max(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    Some((s[0], median, s[n - 1]))
}

struct Conn {
    link: Link,
    /// Client index: readers are 0..R, senders R..R+S.
    client: usize,
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
    partial: Vec<u8>,
    confirmed: bool,
    closed: Option<String>,
    /// Readers: one per sender.
    checkers: Vec<SeqChecker>,
    got_round: u64,
    done_at: Option<Instant>,
    bytes: u64,
}

#[derive(Default)]
struct Counts {
    duplicates: u64,
    reordered: u64,
    misrouted: u64,
    malformed: u64,
    server_lines: u64,
    unheard: u64,
}

struct Burst<'a> {
    plan: &'a BurstPlan,
    epoll: Epoll,
    conns: Vec<Conn>,
    c: Counts,
    notes: Vec<String>,
    rbuf: Vec<u8>,
    /// When the current round's first write went out.
    t0: Option<Instant>,
}

const READ_BUF: usize = 256 * 1024;

/// Runs the bursts; `Ok(true)` if every line reached every reader in order.
pub fn run(
    args: &BenchArgs,
    senders: usize,
    burst_bytes: u64,
    rounds: u32,
) -> Result<bool, String> {
    if args.target == Target::Nats {
        return Err(
            "burst compares a-chat with Redis: --target nats is for direct, fanout and idle".into(),
        );
    }
    let plan = BurstPlan::new(args, senders, burst_bytes, rounds)?;
    ensure_fds((plan.readers + plan.senders) as u64, 1)?;
    let warnings = plan.warnings();
    for w in &warnings {
        eprintln!("a-chat bench: warning: {w}");
    }
    let mut b = Burst {
        plan: &plan,
        epoll: Epoll::new().map_err(|e| format!("epoll: {e}"))?,
        conns: Vec::new(),
        c: Counts::default(),
        notes: Vec::new(),
        rbuf: vec![0u8; READ_BUF],
        t0: None,
    };
    b.connect_all()?;
    let progress = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    progress(format!(
        "{} readers and {} senders logged in at {}",
        plan.readers,
        plan.senders,
        spread::addrs_text(&plan.access.addrs)
    ));
    let mut times: Vec<Option<Duration>> = Vec::new();
    for r in 0..plan.rounds {
        let t = b.round(u64::from(r));
        times.push(t);
        progress(match t {
            Some(t) => format!(
                "[round {}/{}] {}",
                r + 1,
                plan.rounds,
                fmt_ns(t.as_nanos() as u64)
            ),
            None => format!("[round {}/{}] did not complete", r + 1, plan.rounds),
        });
        if t.is_none() {
            break;
        }
    }
    let out = b.outcome(&times, warnings);
    if args.json {
        println!("{}", out.json(&plan));
    } else {
        print!("{}", out.text(&plan));
    }
    Ok(out.ok(&plan))
}

impl Burst<'_> {
    fn note(&mut self, n: String) {
        if self.notes.len() < 8 {
            self.notes.push(n);
        }
    }

    fn connect_all(&mut self) -> Result<(), String> {
        let p = self.plan;
        for client in 0..p.readers + p.senders {
            let reader = client < p.readers;
            let source = (p.access.source_ips > 0).then(|| {
                std::net::Ipv4Addr::new(
                    127,
                    0,
                    0,
                    1 + (client % p.access.source_ips as usize) as u8,
                )
            });
            let addr = p.access.addr_of(client);
            let stream = sys::connect(addr, source, p.access.connect_timeout)
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let link = Link::over(stream, p.access.tls.as_deref(), p.access.websocket, false)
                .map_err(|e| format!("TLS: {e}"))?;
            self.epoll
                .add(link.raw_fd(), client as u64)
                .map_err(|e| format!("epoll: {e}"))?;
            let name = p.access.name(client);
            // Redis senders only publish: they log in to nothing.
            let hello = match (p.access.target, reader) {
                (Target::Redis, false) => String::new(),
                _ => p.access.hello(&name),
            };
            self.conns.push(Conn {
                link,
                client,
                out: hello.into_bytes(),
                out_pos: 0,
                writable: true,
                partial: Vec::new(),
                confirmed: p.access.target == Target::Redis && !reader,
                closed: None,
                checkers: if reader {
                    vec![SeqChecker::new(); p.senders]
                } else {
                    Vec::new()
                },
                got_round: 0,
                done_at: None,
                bytes: 0,
            });
            self.flush(client);
        }
        let deadline = Instant::now() + p.access.connect_timeout;
        while !self.conns.iter().all(|c| c.confirmed) {
            if let Some(c) = self.conns.iter().find(|c| c.closed.is_some()) {
                return Err(format!(
                    "could not log in {}: {}",
                    p.access.name(c.client),
                    c.closed.as_deref().unwrap_or_default()
                ));
            }
            if Instant::now() >= deadline {
                let n = self.conns.iter().filter(|c| c.confirmed).count();
                return Err(format!(
                    "only {n} of {} logins confirmed within --connect-timeout",
                    self.conns.len()
                ));
            }
            self.poll(Duration::from_millis(50));
        }
        Ok(())
    }

    /// One round: every sender writes its burst at once; returns the time from
    /// the first write until every reader has all of it, or `None`.
    fn round(&mut self, r: u64) -> Option<Duration> {
        let p = self.plan;
        let names: Vec<String> = (0..p.readers).map(|i| p.access.name(i)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for j in 0..p.senders {
            let client = p.readers + j;
            let t: Template = match p.access.target {
                Target::Achat => wire::chat_template(&names, client as u32, p.size),
                Target::Redis | Target::Nats => wire::redis_template(&names, client as u32, p.size),
            };
            let c = &mut self.conns[client];
            c.out.reserve(t.bytes.len() * p.lines as usize);
            for k in 0..p.lines {
                t.append(&mut c.out, p.size, r * p.lines + k, 0);
            }
        }
        for c in &mut self.conns[..p.readers] {
            c.got_round = 0;
            c.done_at = None;
        }
        let t0 = Instant::now();
        self.t0 = Some(t0);
        for client in p.readers..p.readers + p.senders {
            self.flush(client);
        }
        let deadline = t0 + p.round_timeout;
        loop {
            let readers = &self.conns[..p.readers];
            if self.conns.iter().any(|c| c.closed.is_some()) {
                // Let the other readers finish what is in flight, for the counts.
                if readers
                    .iter()
                    .all(|c| c.closed.is_some() || c.done_at.is_some())
                    || Instant::now() >= deadline
                {
                    return None;
                }
            } else if readers.iter().all(|c| c.done_at.is_some()) {
                let end = readers.iter().filter_map(|c| c.done_at).max()?;
                return Some(end - t0);
            }
            let now = Instant::now();
            if now >= deadline {
                let got: Vec<String> = readers.iter().map(|c| c.got_round.to_string()).collect();
                self.note(format!(
                    "round {} not complete within --duration {}: readers got {} of {} lines",
                    r + 1,
                    humantime::format_duration(p.round_timeout),
                    got.join(", "),
                    p.per_reader()
                ));
                return None;
            }
            self.poll((deadline - now).min(Duration::from_millis(100)));
        }
    }

    fn poll(&mut self, timeout: Duration) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                self.note(format!("epoll_wait: {e}"));
                0
            }
        };
        for ev in &events[..n] {
            let (ci, flags) = (ev.u64 as usize, ev.events);
            if flags & sys::WRITABLE != 0 {
                self.conns[ci].writable = true;
                self.flush(ci);
            }
            if flags & sys::READABLE != 0 {
                self.read(ci, flags & sys::HANGUP != 0);
            }
        }
    }

    fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        if c.closed.is_none() {
            if let Err(e) = c.link.flush(&c.out, &mut c.out_pos, &mut c.writable) {
                return self.lost(ci, format!("write: {e}"));
            }
        }
        if c.out_pos == c.out.len() {
            c.out = Vec::new();
            c.out_pos = 0;
        }
    }

    fn lost(&mut self, ci: usize, why: String) {
        if self.conns[ci].closed.is_some() {
            return;
        }
        let p = self.plan;
        let name = p.access.name(ci);
        let n = if ci < p.readers {
            let when = self.t0.map_or(String::new(), |t| {
                format!(", {} into the round", fmt_ns(t.elapsed().as_nanos() as u64))
            });
            format!(
                "reader {name}: {why} (after {} of {} lines{when})",
                self.conns[ci].got_round,
                p.per_reader()
            )
        } else {
            format!("sender {name}: {why}")
        };
        self.note(n);
        self.conns[ci].closed = Some(why);
    }

    fn outcome(&self, times: &[Option<Duration>], warnings: Vec<String>) -> Outcome {
        let p = self.plan;
        let sent = p.lines * times.len() as u64;
        let readers = &self.conns[..p.readers];
        Outcome {
            rounds: times.iter().map(|t| t.map(|t| t.as_secs_f64())).collect(),
            lost: readers
                .iter()
                .flat_map(|c| c.checkers.iter())
                .map(|ch| ch.lost(sent))
                .sum(),
            bytes_min: readers.iter().map(|c| c.bytes).min().unwrap_or(0),
            disconnected: readers.iter().filter(|c| c.closed.is_some()).count(),
            senders_closed: self.conns[p.readers..]
                .iter()
                .filter(|c| c.closed.is_some())
                .count(),
            duplicates: self.c.duplicates,
            reordered: self.c.reordered,
            misrouted: self.c.misrouted,
            malformed: self.c.malformed,
            server_lines: self.c.server_lines,
            unheard: self.c.unheard,
            notes: self.notes.clone(),
            warnings,
        }
    }
}

//! `a-chat bench burst`: `--senders` clients each write a whole burst (lines of
//! `--size` bytes, `--burst-bytes` in all) addressed to every one of the
//! `--clients` readers, all at once, `--rounds` times. Readers read at full
//! speed. Every line must reach every reader, in order per sender (the payload
//! and sequence checker of the other workloads), and no reader may be cut off
//! (DESIGN §1, §4b: a client that reads at a normal pace is never cut off by a
//! burst). One epoll loop runs all connections.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::args::BenchArgs;
use super::checker::{Arrival, SeqChecker};
use super::payload;
use super::plan::{ensure_fds, login_prefix, source_ips, target_addr, Target};
use super::report::json_str;
use super::sys::{self, Epoll};
use super::wire::{self, ChatLine, Resp, Template};

/// What a burst run does; checked before any connect.
#[derive(Debug)]
pub struct BurstPlan {
    pub target: Target,
    pub addr: SocketAddr,
    pub readers: usize,
    pub senders: usize,
    pub size: usize,
    pub burst_bytes: u64,
    /// Lines per sender and round.
    pub lines: u64,
    pub rounds: u32,
    pub prefix: String,
    pub source_ips: u32,
    pub connect_timeout: Duration,
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
        let addr = target_addr(args)?;
        Ok(BurstPlan {
            target: args.target,
            addr,
            readers,
            senders,
            size,
            burst_bytes,
            lines,
            rounds,
            prefix: login_prefix(args, readers + senders)?,
            source_ips: source_ips(args, addr, None)?,
            connect_timeout: args.connect_timeout,
            round_timeout: args.duration,
        })
    }

    pub fn name(&self, client: usize) -> String {
        format!("{}{client}", self.prefix)
    }

    /// Lines each reader gets per round.
    pub fn per_reader(&self) -> u64 {
        self.senders as u64 * self.lines
    }

    /// Limits of a default a-chat server that the plan goes past.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.target == Target::Achat {
            if self.readers > 64 {
                w.push(format!(
                    "{} readers are above the server's default max_recipients (64): expect errors",
                    self.readers
                ));
            }
            let names: usize = (0..self.readers).map(|r| self.name(r).len() + 2).sum();
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
    stream: TcpStream,
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
}

const READ_BUF: usize = 256 * 1024;

/// Runs the bursts; `Ok(true)` if every line reached every reader in order.
pub fn run(
    args: &BenchArgs,
    senders: usize,
    burst_bytes: u64,
    rounds: u32,
) -> Result<bool, String> {
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
    };
    b.connect_all()?;
    let progress = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    progress(format!(
        "{} readers and {} senders logged in at {}",
        plan.readers, plan.senders, plan.addr
    ));
    let mut times: Vec<Option<Duration>> = Vec::new();
    for r in 0..plan.rounds {
        let t = b.round(u64::from(r));
        times.push(t);
        progress(match t {
            Some(t) => format!("[round {}/{}] {:.3} s", r + 1, plan.rounds, t.as_secs_f64()),
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
            let source = (p.source_ips > 0).then(|| {
                std::net::Ipv4Addr::new(127, 0, 0, 1 + (client % p.source_ips as usize) as u8)
            });
            let stream = sys::connect(p.addr, source, p.connect_timeout)
                .map_err(|e| format!("connect {}: {e}", p.addr))?;
            self.epoll
                .add(stream.as_raw_fd(), client as u64)
                .map_err(|e| format!("epoll: {e}"))?;
            let name = p.name(client);
            let hello = match (p.target, reader) {
                (Target::Achat, _) => format!("{name}\n{name}: ping\n"),
                (Target::Redis, true) => format!("SUBSCRIBE {name}\r\n"),
                (Target::Redis, false) => String::new(),
            };
            self.conns.push(Conn {
                stream,
                client,
                out: hello.into_bytes(),
                out_pos: 0,
                writable: true,
                partial: Vec::new(),
                confirmed: p.target == Target::Redis && !reader,
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
        let deadline = Instant::now() + p.connect_timeout;
        while !self.conns.iter().all(|c| c.confirmed) {
            if let Some(c) = self.conns.iter().find(|c| c.closed.is_some()) {
                return Err(format!(
                    "could not log in {}: {}",
                    p.name(c.client),
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
        let names: Vec<String> = (0..p.readers).map(|i| p.name(i)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for j in 0..p.senders {
            let client = p.readers + j;
            let t: Template = match p.target {
                Target::Achat => wire::chat_template(&names, client as u32, p.size),
                Target::Redis => wire::redis_template(&names, client as u32, p.size),
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
        while c.out_pos < c.out.len() && c.writable && c.closed.is_none() {
            match (&c.stream).write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(ci, format!("write: {e}")),
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
        let role = if ci < self.plan.readers {
            "reader"
        } else {
            "sender"
        };
        self.note(format!("{role} {}: {why}", self.plan.name(ci)));
        self.conns[ci].closed = Some(why);
    }

    fn read(&mut self, ci: usize, hangup: bool) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        loop {
            let c = &mut self.conns[ci];
            if c.closed.is_some() {
                break;
            }
            let plen = c.partial.len();
            if plen > rbuf.len() / 2 {
                self.c.malformed += 1;
                self.lost(ci, format!("incomplete input over {plen} bytes"));
                break;
            }
            rbuf[..plen].copy_from_slice(&c.partial);
            let room = rbuf.len() - plen;
            match (&c.stream).read(&mut rbuf[plen..]) {
                Ok(0) => {
                    self.lost(ci, "closed by the server (EOF)".into());
                    break;
                }
                Ok(n) => {
                    let total = plen + n;
                    let used = self.consume(ci, &rbuf[..total]);
                    let c = &mut self.conns[ci];
                    c.partial.clear();
                    c.partial.extend_from_slice(&rbuf[used..total]);
                    if n < room && !hangup {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(ci, format!("read: {e}"));
                    break;
                }
            }
        }
        self.rbuf = rbuf;
    }

    /// Handles every complete line / RESP value; returns the bytes used.
    fn consume(&mut self, ci: usize, data: &[u8]) -> usize {
        let mut pos = 0;
        match self.plan.target {
            Target::Achat => {
                while let Some(n) = wire::find_byte(&data[pos..], b'\n') {
                    self.on_line(ci, &data[pos..pos + n]);
                    pos += n + 1;
                }
            }
            Target::Redis => loop {
                match wire::parse_resp(&data[pos..]) {
                    Ok(Some((v, n))) => {
                        self.on_resp(ci, v, n as u64);
                        pos += n;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        self.c.malformed += 1;
                        self.lost(ci, "unparsable RESP".into());
                        return data.len();
                    }
                }
            },
        }
        pos
    }

    fn on_line(&mut self, ci: usize, line: &[u8]) {
        match wire::parse_chat_line(line) {
            ChatLine::From { login, text } if text == b"ping" => {
                if login == self.plan.name(ci).as_bytes() {
                    self.conns[ci].confirmed = true;
                }
            }
            ChatLine::From { login, text } if ci < self.plan.readers => {
                let from = wire::client_index(login, self.plan.prefix.as_bytes());
                self.on_payload(ci, text, from, line.len() as u64 + 1);
            }
            ChatLine::Error(_) | ChatLine::Notice(_) => {
                self.c.server_lines += 1;
                let l = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                self.lost(ci, format!("server said {l:?}"));
            }
            _ => {
                self.c.malformed += 1;
                let l = String::from_utf8_lossy(&line[..line.len().min(100)]).into_owned();
                self.note(format!("unexpected line to {}: {l}", self.plan.name(ci)));
            }
        }
    }

    fn on_resp(&mut self, ci: usize, v: Resp<'_>, len: u64) {
        let reader = ci < self.plan.readers;
        match v {
            Resp::Array {
                first: Some(b"subscribe"),
                ..
            } if reader => self.conns[ci].confirmed = true,
            Resp::Array {
                len: 3,
                first: Some(b"message"),
                last: Some(p),
            } if reader => self.on_payload(ci, p, None, len),
            Resp::Int(n) if !reader => {
                if n < 1 {
                    self.c.unheard += 1;
                }
            }
            Resp::Error(e) => {
                self.c.server_lines += 1;
                let e = String::from_utf8_lossy(e).into_owned();
                self.lost(ci, format!("server said -{e}"));
            }
            other => {
                self.c.malformed += 1;
                self.note(format!(
                    "unexpected reply to {}: {other:?}",
                    self.plan.name(ci)
                ));
            }
        }
    }

    fn on_payload(&mut self, ci: usize, text: &[u8], from: Option<u32>, bytes: u64) {
        let p = self.plan;
        let sender = payload::decode(text, p.size)
            .map(|d| (d.sender as usize, d.seq))
            .filter(|&(s, _)| (p.readers..p.readers + p.senders).contains(&s));
        let Some((sender, seq)) = sender else {
            self.c.malformed += 1;
            return;
        };
        if from.is_some_and(|f| f as usize != sender) {
            self.c.misrouted += 1;
            return;
        }
        let c = &mut self.conns[ci];
        c.bytes += bytes;
        match c.checkers[sender - p.readers].observe(seq) {
            Arrival::Duplicate => {
                self.c.duplicates += 1;
                return;
            }
            Arrival::Late => self.c.reordered += 1,
            _ => {}
        }
        c.got_round += 1;
        if c.got_round == p.per_reader() {
            c.done_at = Some(Instant::now());
        }
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

/// What the bursts measured.
pub struct Outcome {
    /// Seconds per round; `None` for a round that did not complete.
    pub rounds: Vec<Option<f64>>,
    pub lost: u64,
    /// Bytes received by the reader that got the fewest.
    pub bytes_min: u64,
    pub disconnected: usize,
    pub senders_closed: usize,
    pub duplicates: u64,
    pub reordered: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub server_lines: u64,
    pub unheard: u64,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn done(&self) -> Vec<f64> {
        self.rounds.iter().flatten().copied().collect()
    }

    pub fn ok(&self, plan: &BurstPlan) -> bool {
        self.rounds.len() == plan.rounds as usize
            && self.rounds.iter().all(Option::is_some)
            && self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.misrouted == 0
            && self.malformed == 0
            && self.server_lines == 0
            && self.unheard == 0
            && self.disconnected == 0
            && self.senders_closed == 0
    }

    pub fn text(&self, p: &BurstPlan) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "a-chat bench: burst against {} at {}: {} readers, {} senders × {} bytes ({} lines of {} bytes) to every reader, {} round{}",
            if p.target == Target::Achat { "achat" } else { "redis" },
            p.addr, p.readers, p.senders, p.burst_bytes, p.lines, p.size, p.rounds,
            if p.rounds == 1 { "" } else { "s" }
        );
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|t| t.map_or("incomplete".into(), |t| format!("{t:.3} s")))
            .collect();
        let _ = writeln!(o, "  rounds      {}", rounds.join(", "));
        if let Some((min, med, max)) = min_median_max(&self.done()) {
            let _ = writeln!(
                o,
                "  burst time  min {min:.3} s  median {med:.3} s  max {max:.3} s  (first send to last line at every reader)"
            );
        }
        let n = self.rounds.len().max(1) as f64;
        let _ = writeln!(
            o,
            "  per reader  {:.1} MiB per round ({} lines), {:.1} MiB in all (the reader that got least)",
            self.bytes_min as f64 / n / 1048576.0,
            p.per_reader(),
            self.bytes_min as f64 / 1048576.0
        );
        let _ = writeln!(
            o,
            "  checks      lost {}, duplicated {}, reordered {}, misrouted {}, malformed {}",
            self.lost, self.duplicates, self.reordered, self.misrouted, self.malformed
        );
        let _ = writeln!(
            o,
            "  readers     disconnected {} of {}; server error/notice lines {}; senders closed {}{}",
            self.disconnected,
            p.readers,
            self.server_lines,
            self.senders_closed,
            if self.unheard > 0 { format!("; publishes nobody heard {}", self.unheard) } else { String::new() }
        );
        for n in &self.notes {
            let _ = writeln!(o, "  note        {n}");
        }
        let _ = writeln!(
            o,
            "  result      {}",
            if self.ok(p) { "OK" } else { "FAILED" }
        );
        o
    }

    pub fn json(&self, p: &BurstPlan) -> String {
        let mmm = min_median_max(&self.done());
        let f = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.6}"));
        let list = |v: &[String]| v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",");
        let rounds: Vec<String> = self.rounds.iter().map(|t| f(*t)).collect();
        format!(
            "{{\"workload\":\"burst\",\"target\":{},\"addr\":{},\"readers\":{},\"senders\":{},\"size\":{},\
             \"burst_bytes\":{},\"lines_per_burst\":{},\"rounds\":{},\"round_s\":[{}],\"burst_s_min\":{},\
             \"burst_s_median\":{},\"burst_s_max\":{},\"lines_per_reader_per_round\":{},\
             \"bytes_per_reader\":{},\"lost\":{},\"duplicates\":{},\"reordered\":{},\"misrouted\":{},\
             \"malformed\":{},\"server_lines\":{},\"unheard_publishes\":{},\"readers_disconnected\":{},\
             \"senders_closed\":{},\"notes\":[{}],\"warnings\":[{}],\"ok\":{}}}",
            json_str(if p.target == Target::Achat { "achat" } else { "redis" }),
            json_str(&p.addr.to_string()),
            p.readers, p.senders, p.size, p.burst_bytes, p.lines, p.rounds,
            rounds.join(","),
            f(mmm.map(|m| m.0)), f(mmm.map(|m| m.1)), f(mmm.map(|m| m.2)),
            p.per_reader(), self.bytes_min, self.lost, self.duplicates, self.reordered,
            self.misrouted, self.malformed, self.server_lines, self.unheard,
            self.disconnected, self.senders_closed,
            list(&self.notes), list(&self.warnings), self.ok(p)
        )
    }
}

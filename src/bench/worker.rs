//! One bench worker thread: an edge-triggered epoll loop over its share of the
//! clients' connections. It writes many messages per write call (copies of a
//! template with the sequence number and timestamp patched in), parses every
//! complete line or RESP value of each read, checks sequences, records
//! latencies, and hands window credits back to the senders through atomics.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::checker::{Arrival, SeqChecker};
use super::histogram::Histogram;
use super::payload;
use super::sys::{self, Epoll, EventFd};
use super::wire::{self, ChatLine, Resp, Template};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// An a-chat server (its line protocol).
    Achat,
    /// A Redis server (SUBSCRIBE / PUBLISH), to compare on one machine.
    Redis,
}

#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Closed loop: each client keeps at most `inflight` messages unacknowledged.
    Closed { inflight: u64 },
    /// Open loop: each client sends on a fixed schedule, one message per interval.
    Open { interval_ns: f64 },
    /// Log in and hold the connections; send nothing.
    Idle,
}

/// What the run does; fixed before the workers start.
#[derive(Debug)]
pub struct Plan {
    pub target: Target,
    pub load: Load,
    pub clients: usize,
    pub fanout: usize,
    pub size: usize,
    pub messages: Option<u64>,
    pub prefix: String,
    pub addr: SocketAddr,
    /// Spread connections over 127.0.0.1..=127.0.0.N by binding first (0: don't).
    pub source_ips: u32,
    pub threads: usize,
    pub connect_timeout: Duration,
}

impl Plan {
    pub fn name(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i)
    }

    /// Client `i` sends every message to the `fanout` clients after it.
    pub fn recipients(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (1..=self.fanout).map(move |k| (i + k) % self.clients)
    }

    fn source(&self, conn_no: usize) -> Option<Ipv4Addr> {
        (self.source_ips > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (conn_no % self.source_ips as usize) as u8))
    }

    pub fn owner(&self, client: usize) -> usize {
        client % self.threads
    }
}

pub const LOGIN: u8 = 0;
pub const RUN: u8 = 1;
pub const DRAIN: u8 = 2;
pub const DONE: u8 = 3;

/// How another thread wakes a worker blocked in epoll.
pub struct Wake {
    fd: EventFd,
    sleeping: AtomicBool,
    dirty: AtomicBool,
}

impl Wake {
    pub fn new() -> io::Result<Self> {
        Ok(Wake {
            fd: EventFd::new()?,
            sleeping: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
        })
    }

    pub fn notify(&self) {
        self.dirty.store(true, SeqCst);
        if self.sleeping.load(SeqCst) {
            self.fd.wake();
        }
    }
}

/// State shared by the coordinator and the workers: counters and credits only.
pub struct Shared {
    pub epoch: Instant,
    pub phase: AtomicU8,
    pub run_start_ns: AtomicU64,
    /// Per client: deliveries of its messages seen by their recipients.
    pub acked: Vec<AtomicU64>,
    /// Per client: messages it has sent.
    pub sent: Vec<AtomicU64>,
    pub confirmed: AtomicUsize,
    /// Clients whose login failed (an error or a closed connection before confirmation).
    pub login_failed: AtomicUsize,
    pub opened: AtomicUsize,
    /// Connections open now (closed ones, by the server or on errors, leave).
    pub open_conns: AtomicUsize,
    pub connect_failed: AtomicUsize,
    pub workers_connected: AtomicUsize,
    pub delivered: AtomicU64,
    pub sent_msgs: AtomicU64,
    pub sent_deliveries: AtomicU64,
    pub senders_done: AtomicUsize,
    /// Workers that have seen the drain phase and send no more.
    pub stopped_sending: AtomicUsize,
    /// Server errors, closed connections and malformed input seen so far.
    pub trouble: AtomicU64,
    notes: Mutex<Vec<String>>,
    pub wakes: Vec<Wake>,
}

const MAX_NOTES: usize = 8;

impl Shared {
    pub fn new(clients: usize, threads: usize) -> io::Result<Self> {
        Ok(Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(LOGIN),
            run_start_ns: AtomicU64::new(0),
            acked: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            confirmed: AtomicUsize::new(0),
            login_failed: AtomicUsize::new(0),
            opened: AtomicUsize::new(0),
            open_conns: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            workers_connected: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            sent_msgs: AtomicU64::new(0),
            sent_deliveries: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            stopped_sending: AtomicUsize::new(0),
            trouble: AtomicU64::new(0),
            notes: Mutex::new(Vec::new()),
            wakes: (0..threads)
                .map(|_| Wake::new())
                .collect::<io::Result<_>>()?,
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Keeps the first few problem descriptions for the summary.
    pub fn note(&self, what: impl FnOnce() -> String) {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() < MAX_NOTES {
            n.push(what());
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, SeqCst);
        for w in &self.wakes {
            w.notify();
        }
    }
}

/// What one worker measured.
#[derive(Default)]
pub struct WorkerStats {
    pub hist: Histogram,
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub server_errors: u64,
    pub notices: u64,
    pub closed: u64,
    /// Redis PUBLISH replies of 0: nobody was subscribed.
    pub unheard: u64,
    /// Open loop: how late each message went out, against its schedule.
    pub lag: Histogram,
    /// (sender, checker) for every pair received by this worker's clients.
    pub pairs: Vec<(usize, SeqChecker)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Chat,
    Sub,
    Pub,
}

struct Conn {
    stream: TcpStream,
    client: usize,
    role: Role,
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
    partial: Vec<u8>,
    closed: bool,
}

struct Client {
    id: usize,
    send: Option<usize>,
    template: Template,
    seq: u64,
    done: bool,
    confirmed: bool,
    failed: bool,
    offset_ns: f64,
    checkers: Vec<SeqChecker>,
}

const WAKE_TOKEN: u64 = u64::MAX;
const READ_BUF: usize = 256 * 1024;
const BATCH_BYTES: usize = 256 * 1024;
const OPEN_BACKLOG: usize = 4 * 1024 * 1024;

struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    me: usize,
    epoll: Epoll,
    conns: Vec<Conn>,
    clients: Vec<Client>,
    stats: WorkerStats,
    credits: Vec<u64>,
    foreign: Vec<bool>,
    now_ns: u64,
    prefix: Vec<u8>,
    events: Vec<libc::epoll_event>,
    rbuf: Vec<u8>,
}

/// Runs worker `me` until the coordinator sets [`DONE`].
pub fn run(plan: Arc<Plan>, shared: Arc<Shared>, me: usize) -> WorkerStats {
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            shared.note(|| format!("epoll: {e}"));
            shared.connect_failed.fetch_add(1, SeqCst);
            shared.workers_connected.fetch_add(1, SeqCst);
            return WorkerStats::default();
        }
    };
    let mut w = Worker {
        credits: vec![0; plan.fanout.max(1)],
        foreign: vec![false; plan.threads],
        prefix: plan.prefix.clone().into_bytes(),
        plan,
        shared,
        me,
        epoll,
        conns: Vec::new(),
        clients: Vec::new(),
        stats: WorkerStats::default(),
        now_ns: 0,
        events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        rbuf: vec![0u8; READ_BUF],
    };
    if let Err(e) = w.epoll.add(w.shared.wakes[me].fd.raw(), WAKE_TOKEN) {
        w.shared.note(|| format!("epoll: {e}"));
    }
    if let Load::Open { .. } = w.plan.load {
        // Wake on schedule: the default 50 µs timer slack would show up as latency.
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects this thread only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    }
    w.connect_all();
    w.shared.workers_connected.fetch_add(1, SeqCst);
    w.event_loop();
    w.finish()
}

impl Worker {
    fn connect_all(&mut self) {
        let plan = self.plan.clone();
        let idle = matches!(plan.load, Load::Idle);
        for (nth, id) in (self.me..plan.clients).step_by(plan.threads).enumerate() {
            if self.shared.phase.load(SeqCst) == DONE {
                return;
            }
            if nth % 256 == 255 {
                // Take in the confirmations so far, so progress shows them.
                self.poll(Duration::ZERO);
            }
            let template = if idle {
                Template::default()
            } else {
                let names: Vec<String> = plan.recipients(id).map(|r| plan.name(r)).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                match plan.target {
                    Target::Achat => wire::chat_template(&names, id as u32, plan.size),
                    Target::Redis => wire::redis_template(&names, id as u32, plan.size),
                }
            };
            let offset_ns = match plan.load {
                Load::Open { interval_ns } => interval_ns * id as f64 / plan.clients as f64,
                _ => 0.0,
            };
            // The client exists before its connections, which refer to it.
            let cl = self.clients.len();
            self.clients.push(Client {
                id,
                send: None,
                template,
                seq: 0,
                done: false,
                confirmed: false,
                failed: false,
                offset_ns,
                checkers: if idle {
                    Vec::new()
                } else {
                    vec![SeqChecker::new(); plan.fanout]
                },
            });
            let name = plan.name(id);
            let opened = match plan.target {
                Target::Achat => self.open(cl, Role::Chat, format!("{name}\n{name}: ping\n")),
                Target::Redis => self
                    .open(cl, Role::Sub, format!("SUBSCRIBE {name}\r\n"))
                    .and_then(|sub| {
                        if idle {
                            Ok(sub)
                        } else {
                            self.open(cl, Role::Pub, String::new())
                        }
                    }),
            };
            match opened {
                Ok(conn) => self.clients[cl].send = (!idle).then_some(conn),
                Err(e) => {
                    // Counted as a failed connect, not as a login to wait for.
                    self.clients[cl].failed = true;
                    self.shared.connect_failed.fetch_add(1, SeqCst);
                    self.shared
                        .note(|| format!("connect {} for client {id}: {e}", plan.addr));
                    return;
                }
            }
            self.shared.opened.fetch_add(1, SeqCst);
        }
    }

    fn open(&mut self, cl: usize, role: Role, hello: String) -> io::Result<usize> {
        let conn_no = self.conns.len() * self.plan.threads + self.me;
        let stream = sys::connect(
            self.plan.addr,
            self.plan.source(conn_no),
            self.plan.connect_timeout,
        )?;
        let ci = self.conns.len();
        self.epoll.add(stream.as_raw_fd(), ci as u64)?;
        self.shared.open_conns.fetch_add(1, SeqCst);
        self.conns.push(Conn {
            stream,
            client: cl,
            role,
            out: hello.into_bytes(),
            out_pos: 0,
            writable: true,
            partial: Vec::new(),
            closed: false,
        });
        self.flush(ci);
        Ok(ci)
    }

    fn event_loop(&mut self) {
        let shared = self.shared.clone();
        let wake = &shared.wakes[self.me];
        let mut stopped_sending = false;
        loop {
            let phase = shared.phase.load(SeqCst);
            if phase >= DRAIN && !stopped_sending {
                // From here on this worker sends nothing: its sent counters are final.
                stopped_sending = true;
                shared.stopped_sending.fetch_add(1, SeqCst);
            }
            if phase == DONE {
                return;
            }
            self.now_ns = shared.now_ns();
            let mut timeout = Duration::from_millis(100);
            if phase == RUN {
                if let Some(next) = self.produce_all() {
                    timeout = Duration::from_nanos(next.saturating_sub(shared.now_ns()));
                }
            } else if phase == LOGIN {
                timeout = Duration::from_millis(20);
            }
            wake.sleeping.store(true, SeqCst);
            if wake.dirty.swap(false, SeqCst) {
                timeout = Duration::ZERO;
            }
            self.poll(timeout);
            wake.sleeping.store(false, SeqCst);
            wake.dirty.store(false, SeqCst);
        }
    }

    /// Waits up to `timeout` for socket events and handles them.
    fn poll(&mut self, timeout: Duration) {
        let mut events = std::mem::take(&mut self.events);
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                self.shared.note(|| format!("epoll_wait: {e}"));
                0
            }
        };
        self.now_ns = self.shared.now_ns();
        let mut rbuf = std::mem::take(&mut self.rbuf);
        for ev in &events[..n] {
            let (token, flags) = (ev.u64, ev.events);
            if token == WAKE_TOKEN {
                self.shared.wakes[self.me].fd.drain();
                continue;
            }
            let ci = token as usize;
            if flags & sys::WRITABLE != 0 {
                self.conns[ci].writable = true;
                self.flush(ci);
            }
            if flags & sys::READABLE != 0 {
                self.read_conn(ci, &mut rbuf, flags & sys::HANGUP != 0);
            }
        }
        self.rbuf = rbuf;
        self.events = events;
    }

    /// Tops up every sending client; returns the next scheduled send time (open loop).
    fn produce_all(&mut self) -> Option<u64> {
        let mut next: Option<u64> = None;
        for cl in 0..self.clients.len() {
            if let Some(t) = self.produce(cl) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    fn produce(&mut self, cl: usize) -> Option<u64> {
        let plan = &*self.plan;
        let shared = &*self.shared;
        let c = &mut self.clients[cl];
        let si = c.send?;
        if c.done || self.conns[si].closed {
            return None;
        }
        let k = plan.fanout as u64;
        let limit = plan.messages.unwrap_or(payload::MAX_SEQ + 1);
        let run_start = shared.run_start_ns.load(Relaxed) as f64;
        let conn = &mut self.conns[si];
        let (mut m, mut next_due) = match plan.load {
            Load::Idle => return None,
            Load::Closed { inflight } => {
                let outstanding = (c.seq * k).saturating_sub(shared.acked[c.id].load(Relaxed));
                ((inflight * k).saturating_sub(outstanding) / k, None)
            }
            Load::Open { interval_ns } => {
                if conn.out.len() - conn.out_pos > OPEN_BACKLOG {
                    (0, Some(self.now_ns + 1_000_000))
                } else {
                    let rel = self.now_ns as f64 - run_start - c.offset_ns;
                    let due = if rel < 0.0 {
                        0
                    } else {
                        (rel / interval_ns) as u64 + 1
                    };
                    (due.saturating_sub(c.seq), None)
                }
            }
        };
        let per_batch = (BATCH_BYTES / c.template.bytes.len().max(1)).max(1) as u64;
        m = m.min(limit - c.seq).min(per_batch);
        if m > 0 {
            if let Load::Closed { .. } = plan.load {
                // Stamp with the time of this write, not of the loop's start.
                self.now_ns = shared.now_ns();
            }
            let first = c.seq;
            for s in first..first + m {
                let ts = match plan.load {
                    Load::Open { interval_ns } => {
                        let sched = (run_start + c.offset_ns + s as f64 * interval_ns) as u64;
                        self.stats.lag.record(self.now_ns.saturating_sub(sched));
                        sched
                    }
                    _ => self.now_ns,
                };
                c.template.append(&mut conn.out, plan.size, s, ts);
            }
            c.seq += m;
            shared.sent[c.id].store(c.seq, Relaxed);
            shared.sent_msgs.fetch_add(m, Relaxed);
            shared.sent_deliveries.fetch_add(m * k, SeqCst);
        }
        if c.seq >= limit {
            c.done = true;
            shared.senders_done.fetch_add(1, SeqCst);
            next_due = None;
        } else if let Load::Open { interval_ns } = plan.load {
            if next_due.is_none() {
                next_due = Some((run_start + c.offset_ns + c.seq as f64 * interval_ns) as u64);
            }
        }
        if m > 0 {
            self.flush(si);
        }
        next_due
    }

    fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        let mut failed = None;
        while c.out_pos < c.out.len() && c.writable && !c.closed {
            match (&c.stream).write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        } else if c.out_pos > c.out.len() / 2 {
            c.out.drain(..c.out_pos);
            c.out_pos = 0;
        }
        if let Some(e) = failed {
            self.lost_conn(ci, format!("write: {e}"));
        }
    }

    fn lost_conn(&mut self, ci: usize, why: String) {
        if self.conns[ci].closed {
            return;
        }
        self.conns[ci].closed = true;
        self.shared.open_conns.fetch_sub(1, SeqCst);
        self.fail_login(self.conns[ci].client);
        if self.shared.phase.load(SeqCst) != DONE {
            self.stats.closed += 1;
            self.shared.trouble.fetch_add(1, Relaxed);
            let who = self.plan.name(self.clients[self.conns[ci].client].id);
            self.shared.note(|| format!("connection of {who}: {why}"));
        }
    }

    /// Reads until the socket is drained: until a short read, or with `hangup`
    /// (the peer closed: the end of the stream must be seen) until EOF or EAGAIN.
    fn read_conn(&mut self, ci: usize, rbuf: &mut [u8], hangup: bool) {
        loop {
            let conn = &mut self.conns[ci];
            if conn.closed {
                return;
            }
            let plen = conn.partial.len();
            if plen > rbuf.len() / 2 {
                self.stats.malformed += 1;
                self.lost_conn(ci, format!("incomplete input over {plen} bytes"));
                return;
            }
            rbuf[..plen].copy_from_slice(&conn.partial);
            let room = rbuf.len() - plen;
            match (&conn.stream).read(&mut rbuf[plen..]) {
                Ok(0) => {
                    self.lost_conn(ci, "closed by the server".into());
                    return;
                }
                Ok(n) => {
                    let total = plen + n;
                    let used = self.consume(ci, &rbuf[..total]);
                    let conn = &mut self.conns[ci];
                    conn.partial.clear();
                    conn.partial.extend_from_slice(&rbuf[used..total]);
                    if n < room && !hangup {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost_conn(ci, format!("read: {e}"));
                    return;
                }
            }
        }
    }

    /// Handles every complete line / RESP value in `data`; returns the bytes used.
    fn consume(&mut self, ci: usize, data: &[u8]) -> usize {
        let (cl, role) = (self.conns[ci].client, self.conns[ci].role);
        let before = self.stats.delivered;
        let mut pos = 0;
        match role {
            Role::Chat => {
                while let Some(n) = wire::find_byte(&data[pos..], b'\n') {
                    self.on_chat_line(cl, &data[pos..pos + n]);
                    pos += n + 1;
                }
            }
            Role::Sub | Role::Pub => loop {
                match wire::parse_resp(&data[pos..]) {
                    Ok(Some((v, n))) => {
                        self.on_resp(cl, role, v);
                        pos += n;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        self.stats.malformed += 1;
                        self.lost_conn(ci, "unparsable RESP".into());
                        return data.len();
                    }
                }
            },
        }
        let got = self.stats.delivered - before;
        if got > 0 {
            self.shared.delivered.fetch_add(got, SeqCst);
            self.return_credits(cl);
        }
        pos
    }

    fn trouble(&mut self, cl: usize, what: &str, line: &[u8]) {
        self.shared.trouble.fetch_add(1, Relaxed);
        let who = self.plan.name(self.clients[cl].id);
        let line = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        self.shared.note(|| format!("{what} to {who}: {line}"));
    }

    fn on_chat_line(&mut self, cl: usize, line: &[u8]) {
        match wire::parse_chat_line(line) {
            ChatLine::From { login, text } => {
                let from = wire::client_index(login, &self.prefix);
                if text == b"ping" {
                    if from == Some(self.clients[cl].id as u32) {
                        self.confirm(cl);
                    } else {
                        self.stats.malformed += 1;
                        self.trouble(cl, "unexpected ping", line);
                    }
                } else if from.is_none() {
                    self.stats.malformed += 1;
                    self.trouble(cl, "message from a stranger", line);
                } else {
                    self.on_payload(cl, text, from, line);
                }
            }
            ChatLine::Error(_) => {
                self.stats.server_errors += 1;
                self.fail_login(cl);
                self.trouble(cl, "server error", line);
            }
            ChatLine::Notice(_) => {
                self.stats.notices += 1;
                self.trouble(cl, "server notice", line);
            }
            ChatLine::Other(_) => {
                self.stats.malformed += 1;
                self.trouble(cl, "unexpected line", line);
            }
        }
    }

    fn on_resp(&mut self, cl: usize, role: Role, v: Resp<'_>) {
        match (role, v) {
            (
                Role::Sub,
                Resp::Array {
                    len: 3,
                    first: Some(b"message"),
                    last: Some(p),
                },
            ) => self.on_payload(cl, p, None, p),
            (
                Role::Sub,
                Resp::Array {
                    first: Some(b"subscribe"),
                    ..
                },
            ) => self.confirm(cl),
            (Role::Pub, Resp::Int(n)) => {
                if n == 0 {
                    self.stats.unheard += 1;
                }
            }
            (_, Resp::Error(e)) => {
                self.stats.server_errors += 1;
                self.fail_login(cl);
                self.trouble(cl, "server error", e);
            }
            (_, other) => {
                self.stats.malformed += 1;
                let s = format!("{other:?}");
                self.trouble(cl, "unexpected reply", s.as_bytes());
            }
        }
    }

    /// A client not yet confirmed will never be: the login phase stops waiting for it.
    fn fail_login(&mut self, cl: usize) {
        let c = &mut self.clients[cl];
        if !c.confirmed && !c.failed {
            c.failed = true;
            self.shared.login_failed.fetch_add(1, SeqCst);
        }
    }

    fn confirm(&mut self, cl: usize) {
        let c = &mut self.clients[cl];
        if !c.confirmed && !c.failed {
            c.confirmed = true;
            self.shared.confirmed.fetch_add(1, SeqCst);
        }
    }

    #[inline]
    fn on_payload(&mut self, cl: usize, text: &[u8], from: Option<u32>, line: &[u8]) {
        let n = self.plan.clients;
        let Some(d) = payload::decode(text, self.plan.size).filter(|d| (d.sender as usize) < n)
        else {
            self.stats.malformed += 1;
            self.trouble(cl, "malformed payload", line);
            return;
        };
        let c = &mut self.clients[cl];
        let sender = d.sender as usize;
        let k = (c.id + n - sender - 1) % n;
        if from.is_some_and(|f| f != d.sender) || k >= c.checkers.len() {
            self.stats.misrouted += 1;
            self.trouble(cl, "misrouted message", line);
            return;
        }
        match c.checkers[k].observe(d.seq) {
            Arrival::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            Arrival::Late => self.stats.reordered += 1,
            _ => {}
        }
        self.stats.delivered += 1;
        self.credits[k] += 1;
        self.stats.hist.record(self.now_ns.saturating_sub(d.ts_ns));
    }

    /// Credits the senders of what client `cl` just received, waking their
    /// workers if they live on other threads.
    fn return_credits(&mut self, cl: usize) {
        let n = self.plan.clients;
        let id = self.clients[cl].id;
        for k in 0..self.credits.len() {
            let got = std::mem::take(&mut self.credits[k]);
            if got == 0 {
                continue;
            }
            let sender = (id + n - 1 - k) % n;
            self.shared.acked[sender].fetch_add(got, SeqCst);
            let owner = self.plan.owner(sender);
            if owner != self.me {
                self.foreign[owner] = true;
            }
        }
        for w in 0..self.foreign.len() {
            if std::mem::take(&mut self.foreign[w]) {
                self.shared.wakes[w].notify();
            }
        }
    }

    fn finish(mut self) -> WorkerStats {
        let n = self.plan.clients;
        for c in &mut self.clients {
            for (k, ch) in c.checkers.drain(..).enumerate() {
                self.stats.pairs.push(((c.id + n - 1 - k) % n, ch));
            }
        }
        self.stats
    }
}

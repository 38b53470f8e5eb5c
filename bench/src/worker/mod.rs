//! One bench worker thread: an edge-triggered epoll loop over its share of the
//! clients' connections. It writes many messages per write call (copies of a
//! template with the sequence number and timestamp patched in), parses every
//! complete line or RESP value of each read, checks sequences, records
//! latencies, and hands window credits back to the senders through atomics.
//!
//! Each connection is a [`Link`]: a plain socket, or with `--tls` a rustls client
//! whose handshake runs in the same loop before the login goes out.
//!
//! This file holds the worker's state and its connection setup (connect, log
//! in); `send` runs the event loop and the senders, `receive` the readers and
//! the checks.

mod receive;
mod send;

use std::io;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use super::checker::SeqChecker;
use super::link::Link;
use super::plan::{Load, Plan, Target};
use super::shared::{Shared, WorkerStats, DONE};
use super::sys::{self, Epoll};
use super::wire::{self, Template};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Chat,
    Sub,
    Pub,
}

struct Conn {
    link: Link,
    client: usize,
    role: Role,
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
    partial: Vec<u8>,
    closed: bool,
    /// NATS: the last line was a `MSG` header, so the next is its payload.
    payload_next: bool,
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
        prefix: plan.access.prefix.clone().into_bytes(),
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
                let names: Vec<String> = plan.recipients(id).map(|r| plan.access.name(r)).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                match plan.access.target {
                    Target::Achat => wire::chat_template(&names, id as u32, plan.size),
                    Target::Redis => wire::redis_template(&names, id as u32, plan.size),
                    Target::Nats => wire::nats_template(&names, id as u32, plan.size),
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
            let hello = plan.access.hello(&plan.access.name(id));
            let opened = match plan.access.target {
                Target::Achat | Target::Nats => self.open(cl, Role::Chat, hello),
                Target::Redis => self.open(cl, Role::Sub, hello).and_then(|sub| {
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
                    self.shared.note(|| {
                        format!("connect {} for client {id}: {e}", plan.access.addr_of(id))
                    });
                    return;
                }
            }
            self.shared.opened.fetch_add(1, SeqCst);
        }
    }

    fn open(&mut self, cl: usize, role: Role, hello: String) -> io::Result<usize> {
        let conn_no = self.conns.len() * self.plan.threads + self.me;
        let stream = sys::connect(
            self.plan.access.addr_of(self.clients[cl].id),
            self.plan.access.source(conn_no),
            self.plan.access.connect_timeout,
        )?;
        let access = &self.plan.access;
        let binary = access.target == Target::Nats;
        let link = Link::over(stream, access.tls.as_deref(), access.websocket, binary)?;
        let ci = self.conns.len();
        self.epoll.add(link.raw_fd(), ci as u64)?;
        self.shared.open_conns.fetch_add(1, SeqCst);
        self.conns.push(Conn {
            link,
            client: cl,
            role,
            out: hello.into_bytes(),
            out_pos: 0,
            writable: true,
            partial: Vec::new(),
            closed: false,
            payload_next: false,
        });
        self.flush(ci);
        Ok(ci)
    }
}

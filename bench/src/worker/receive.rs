//! The worker's receiving side: what `input` needs to read each socket dry
//! and split lines or RESP values, confirming logins, and checking every
//! payload (sequence, route, latency) before crediting its sender.

use std::sync::atomic::Ordering::*;

use super::super::checker::Arrival;
use super::super::input::{self, Item, Reader};
use super::super::link::Link;
use super::super::payload;
use super::super::shared::WorkerStats;
use super::super::wire::{self, ChatLine, Resp};
use super::{Role, Target, Worker};

impl Reader for Worker {
    const EOF: &'static str = "closed by the server";

    fn is_closed(&self, ci: usize) -> bool {
        self.conns[ci].closed
    }

    fn input(&mut self, ci: usize) -> (&mut Link, &mut Vec<u8>) {
        let conn = &mut self.conns[ci];
        (&mut conn.link, &mut conn.partial)
    }

    /// Handles every complete line / RESP value in `data`, then credits the
    /// senders of what was delivered; returns the bytes used.
    fn consume(&mut self, ci: usize, data: &[u8]) -> usize {
        let (cl, role) = (self.conns[ci].client, self.conns[ci].role);
        let before = self.stats.delivered;
        let split = input::split(data, role != Role::Chat, |item| match item {
            Item::Line(line) if self.plan.access.target == Target::Nats => {
                self.on_nats_line(ci, cl, line)
            }
            Item::Line(line) => self.on_chat_line(cl, line),
            Item::Resp(v, _) => self.on_resp(cl, role, v),
        });
        let Ok(pos) = split else {
            self.stats.malformed += 1;
            self.lost_conn(ci, "unparsable RESP".into());
            return data.len();
        };
        let got = self.stats.delivered - before;
        if got > 0 {
            self.shared.delivered.fetch_add(got, SeqCst);
            self.return_credits(cl);
        }
        pos
    }

    fn malformed(&mut self) {
        self.stats.malformed += 1;
    }

    fn lost(&mut self, ci: usize, why: String) {
        self.lost_conn(ci, why);
    }
}

impl Worker {
    pub(super) fn trouble(&mut self, cl: usize, what: &str, line: &[u8]) {
        self.shared.trouble.fetch_add(1, Relaxed);
        let who = self.plan.access.name(self.clients[cl].id);
        let line = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        self.shared.note(|| format!("{what} to {who}: {line}"));
    }

    pub(super) fn on_chat_line(&mut self, cl: usize, line: &[u8]) {
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

    /// A NATS line: `MSG <subject> <sid> <size>` (its payload is the next line), the
    /// `PONG` that confirms the subscription, `INFO`, `+OK`, `PING` or `-ERR`.
    fn on_nats_line(&mut self, ci: usize, cl: usize, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if std::mem::take(&mut self.conns[ci].payload_next) {
            return self.on_payload(cl, line, None, line);
        }
        match line.split(|&b| b == b' ').next().unwrap_or_default() {
            b"MSG" => self.conns[ci].payload_next = true,
            b"PONG" => self.confirm(cl),
            b"INFO" | b"+OK" | b"PING" => {}
            b"-ERR" => {
                self.stats.server_errors += 1;
                self.fail_login(cl);
                self.trouble(cl, "server error", line);
            }
            _ => {
                self.stats.malformed += 1;
                self.trouble(cl, "unexpected line", line);
            }
        }
    }

    pub(super) fn on_resp(&mut self, cl: usize, role: Role, v: Resp<'_>) {
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
    pub(super) fn fail_login(&mut self, cl: usize) {
        let c = &mut self.clients[cl];
        if !c.confirmed && !c.failed {
            c.failed = true;
            self.shared.login_failed.fetch_add(1, SeqCst);
        }
    }

    pub(super) fn confirm(&mut self, cl: usize) {
        let c = &mut self.clients[cl];
        if !c.confirmed && !c.failed {
            c.confirmed = true;
            self.shared.confirmed.fetch_add(1, SeqCst);
        }
    }

    #[inline]
    pub(super) fn on_payload(&mut self, cl: usize, text: &[u8], from: Option<u32>, line: &[u8]) {
        let n = self.plan.clients;
        let Some(d) = payload::decode(text, self.plan.size).filter(|d| (d.sender as usize) < n)
        else {
            self.stats.malformed += 1;
            self.trouble(cl, "malformed payload", line);
            return;
        };
        let c = &mut self.clients[cl];
        let sender = d.sender as usize;
        let slot = self.plan.route.slot((c.id + n - sender - 1) % n);
        let k = match slot {
            Some(k) if k < c.checkers.len() && from.is_none_or(|f| f == d.sender) => k,
            _ => {
                self.stats.misrouted += 1;
                self.trouble(cl, "misrouted message", line);
                return;
            }
        };
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
    pub(super) fn return_credits(&mut self, cl: usize) {
        let n = self.plan.clients;
        let id = self.clients[cl].id;
        for k in 0..self.credits.len() {
            let got = std::mem::take(&mut self.credits[k]);
            if got == 0 {
                continue;
            }
            let sender = self.plan.route.sender(id, k, n);
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

    pub(super) fn finish(mut self) -> WorkerStats {
        let n = self.plan.clients;
        for c in &mut self.clients {
            for (k, ch) in c.checkers.drain(..).enumerate() {
                self.stats
                    .pairs
                    .push((self.plan.route.sender(c.id, k, n), ch));
            }
        }
        self.stats
    }
}

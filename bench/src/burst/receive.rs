//! The readers' side of a burst run: what `input` needs to read each socket
//! dry and split lines or RESP values, and checking every payload's sender
//! and sequence.

use std::time::Instant;

use super::super::checker::Arrival;
use super::super::input::{self, Item, Reader};
use super::super::link::Link;
use super::super::payload;
use super::super::plan::Target;
use super::super::wire::{self, ChatLine, Resp};
use super::Burst;

impl Reader for Burst<'_> {
    const EOF: &'static str = "closed by the server (EOF)";

    fn is_closed(&self, ci: usize) -> bool {
        self.conns[ci].closed.is_some()
    }

    fn input(&mut self, ci: usize) -> (&mut Link, &mut Vec<u8>) {
        let c = &mut self.conns[ci];
        (&mut c.link, &mut c.partial)
    }

    /// Handles every complete line / RESP value; returns the bytes used.
    fn consume(&mut self, ci: usize, data: &[u8]) -> usize {
        let resp = self.plan.access.target == Target::Redis;
        let split = input::split(data, resp, |item| match item {
            Item::Line(line) => self.on_line(ci, line),
            Item::Resp(v, n) => self.on_resp(ci, v, n as u64),
        });
        split.unwrap_or_else(|()| {
            self.c.malformed += 1;
            self.lost(ci, "unparsable RESP".into());
            data.len()
        })
    }

    fn malformed(&mut self) {
        self.c.malformed += 1;
    }

    fn lost(&mut self, ci: usize, why: String) {
        Burst::lost(self, ci, why);
    }
}

impl Burst<'_> {
    pub(super) fn read(&mut self, ci: usize, hangup: bool) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        input::read_dry(self, ci, &mut rbuf, hangup);
        self.rbuf = rbuf;
    }

    pub(super) fn on_line(&mut self, ci: usize, line: &[u8]) {
        match wire::parse_chat_line(line) {
            ChatLine::From { login, text } if text == b"ping" => {
                if login == self.plan.access.name(ci).as_bytes() {
                    self.conns[ci].confirmed = true;
                }
            }
            ChatLine::From { login, text } if ci < self.plan.readers => {
                let from = wire::client_index(login, self.plan.access.prefix.as_bytes());
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
                self.note(format!(
                    "unexpected line to {}: {l}",
                    self.plan.access.name(ci)
                ));
            }
        }
    }

    pub(super) fn on_resp(&mut self, ci: usize, v: Resp<'_>, len: u64) {
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
                    self.plan.access.name(ci)
                ));
            }
        }
    }

    pub(super) fn on_payload(&mut self, ci: usize, text: &[u8], from: Option<u32>, bytes: u64) {
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
}

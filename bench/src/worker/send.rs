//! The worker's event loop and its sending side: the phases, epoll waits,
//! topping up each sender (closed or open loop) and flushing its buffer.

use std::sync::atomic::Ordering::*;
use std::time::Duration;

use super::super::input;
use super::super::payload;
use super::super::plan::Load;
use super::super::shared::{DONE, DRAIN, LOGIN, RUN};
use super::super::sys;
use super::{Worker, BATCH_BYTES, OPEN_BACKLOG, WAKE_TOKEN};

impl Worker {
    pub(super) fn event_loop(&mut self) {
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
    pub(super) fn poll(&mut self, timeout: Duration) {
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
                input::read_dry(self, ci, &mut rbuf, flags & sys::HANGUP != 0);
            }
        }
        self.rbuf = rbuf;
        self.events = events;
    }

    /// Tops up every sending client; returns the next scheduled send time (open loop).
    pub(super) fn produce_all(&mut self) -> Option<u64> {
        let mut next: Option<u64> = None;
        for cl in 0..self.clients.len() {
            if let Some(t) = self.produce(cl) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    pub(super) fn produce(&mut self, cl: usize) -> Option<u64> {
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

    pub(super) fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        let mut failed = None;
        if !c.closed {
            failed = c.link.flush(&c.out, &mut c.out_pos, &mut c.writable).err();
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

    pub(super) fn lost_conn(&mut self, ci: usize, why: String) {
        if self.conns[ci].closed {
            return;
        }
        self.conns[ci].closed = true;
        self.shared.open_conns.fetch_sub(1, SeqCst);
        self.fail_login(self.conns[ci].client);
        if self.shared.phase.load(SeqCst) != DONE {
            self.stats.closed += 1;
            self.shared.trouble.fetch_add(1, Relaxed);
            let who = self
                .plan
                .access
                .name(self.clients[self.conns[ci].client].id);
            self.shared.note(|| format!("connection of {who}: {why}"));
        }
    }
}

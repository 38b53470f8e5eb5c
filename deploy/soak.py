#!/usr/bin/env python3
"""deploy/soak.py: the client side of deploy/soak.sh (Python 3.11, standard library only).

Two commands:
  soak.py free-ports N
      prints N distinct free TCP ports on 127.0.0.1 (each bound to port 0, read, closed)
  soak.py run --pid PID --chat-port P --admin-port A --duration SECS --result FILE
      runs the churn against the daemon PID listening on 127.0.0.1:P (admin on A), prints
      progress lines, and writes the failure reasons it found to FILE, one per line (an
      empty file means every check it owns passed). soak.sh adds the daemon's exit status.

The run, all on 127.0.0.1:
  1. warm-up: churn (below, without the steady pairs) for a tenth of the duration
     (3 s to 30 s), then stop it and wait for the daemon's descriptors to settle;
     baseline = the daemon's open descriptors and RSS at that point
  2. main phase until the duration is over (counted from the start of the warm-up):
       churn workers, each running one short-lived client after another:
         chat    log in, send lines to itself and to 0-3 other live logins, wait for each
                 line to come back to itself, read everything, close cleanly
         reset   the same, but closes with SO_LINGER 0 (a reset) in the middle
         silent  connects and never logs in: expects `error: login timeout`, then EOF
       non-reader slots: a client logs in with a tiny receive buffer and stops reading;
         a flooder sends it ~1 KB lines until the daemon answers `no such user` (it was
         cut off as a slow consumer); then the non-reader reads to see the EOF
       steady pairs: two readers that send each other (and themselves) numbered lines for
         the whole phase and read everything; every line must arrive once and in order
     a progress line every 10 s, at half time and at the end: elapsed, daemon RSS, open
     descriptors, achat_outbound_queued_bytes from GET /metrics, churn counts
  3. stop: the churn ends, the steady pairs wait for their last lines, close, and the
     daemon's descriptors must come back to the baseline (a bounded wait, polling)
Checks written to FILE: descriptors back to the baseline (within 2), RSS flat over the
second half, nothing lost, duplicated or reordered between the steady readers. RSS is
sampled four times a second; "flat" compares its floor (the lowest sample) over the last
tenth of the run with its floor over the tenth before half time: within 2 % (runs under
60 s: 2 % or 2 MiB). Floors, not single samples, because a non-reader may hold up to
outbound_queue_hard_bytes at the moment of any one sample, and a leak raises the floor
while a queue that comes and goes does not.
"""

import argparse
import os
import socket
import sys
import threading
import time
import urllib.request

from soak_clients import FLOOD_RATES, STATS, churn_worker, non_reader_slot, say
from soak_steady import finish_steady, steady_pairs

FD_TOLERANCE = 2
RSS_GROWTH_LIMIT = 0.02  # of the half-time RSS
# Runs under LOOSE_BELOW s: this much absolute growth is fine too. In a 30 s run the
# allocator is still reaching its plateau (about 10.6 MiB for this load, reached after some
# 100 s): the floor grew by 0.1-1.0 MiB over the second half with no leak, while a daemon
# built to leak 1.5 KiB per connection failed with +3.1 MiB.
RSS_LOOSE_BYTES = 2 << 20
LOOSE_BELOW = 60
PROGRESS_EVERY = 10.0
RSS_SAMPLE_EVERY = 0.25  # seconds between RSS samples for the growth check
SETTLE_TIMEOUT = 30.0  # longest wait for the descriptors to come back


class Daemon:
    def __init__(self, pid, admin_port):
        self.pid = pid
        self.admin_port = admin_port
        self.hz = os.sysconf("SC_CLK_TCK")
        self.last_cpu = (time.monotonic(), self.cpu_ticks())

    def cpu_ticks(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            return None

    def cpu_percent(self):
        """Percent of one core used since the previous call."""
        now, ticks = time.monotonic(), self.cpu_ticks()
        then, before = self.last_cpu
        self.last_cpu = (now, ticks)
        if ticks is None or before is None or now <= then:
            return "n/a"
        return f"{100.0 * (ticks - before) / self.hz / (now - then):.0f}%"

    def alive(self):
        return os.path.exists(f"/proc/{self.pid}/status")

    def rss_kib(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None

    def metrics(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=2) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            name = key.split("{", 1)[0]
            try:
                values[name] = values.get(name, 0) + float(value)
            except ValueError:
                pass
        return values


def mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f}MiB"


def progress(daemon, t0, tag=""):
    fds = daemon.fds()  # before the admin request, which holds a descriptor of its own
    rss = daemon.rss_kib()
    cpu = daemon.cpu_percent()
    m = daemon.metrics()
    queued = m.get("achat_outbound_queued_bytes")
    queued = "n/a" if queued is None else str(int(queued))
    slow = m.get("achat_slow_consumers_total")
    slow = "n/a" if slow is None else str(int(slow))
    s = STATS.snapshot()
    say(
        f"t={time.monotonic() - t0:.0f}s{tag} rss={mib(rss)} fds={'n/a' if fds is None else fds} cpu={cpu} "
        f"queued_bytes={queued} "
        f"conns={s['connections']} logins={s['logins']} sent={s['sent']} recv={s['received']} "
        f"resets={s['resets']} login_timeouts={s['login_timeouts']} "
        f"flooded={s['flood_bytes'] >> 20}MiB slow_cut={s['slow_cut']} (daemon: {slow}) "
        f"unexpected={s['unexpected']}"
    )
    return rss, fds


def settle(daemon, target, timeout):
    """Polls until the daemon's descriptors are within the tolerance of target."""
    deadline = time.monotonic() + timeout
    fds = daemon.fds()
    while time.monotonic() < deadline:
        fds = daemon.fds()
        if fds is None or abs(fds - target) <= FD_TOLERANCE:
            return fds
        time.sleep(0.2)
    return fds


def settle_stable(daemon, timeout, quiet=1.5):
    """Polls until the descriptor count has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = daemon.fds(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        fds = daemon.fds()
        if fds != last:
            last, since = fds, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


class RssSampler:
    """Samples the daemon's RSS in a thread of its own, for floors over time windows."""

    def __init__(self, daemon, t0):
        self.daemon = daemon
        self.t0 = t0
        self.samples = []  # (seconds since t0, KiB)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            kib = self.daemon.rss_kib()
            if kib is not None:
                self.samples.append((time.monotonic() - self.t0, kib))
            self.stop.wait(RSS_SAMPLE_EVERY)

    def halt(self):
        self.stop.set()
        self.thread.join(2)

    def floor(self, start, end):
        """The lowest sample taken between start and end (seconds since t0), and their count."""
        window = [kib for t, kib in self.samples if start <= t <= end]
        return (min(window) if window else None), len(window)


class Churn:
    def __init__(self, port, workers, slots):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=churn_worker, args=(port, self.stop), daemon=True) for _ in range(workers)]
        self.threads += [
            threading.Thread(target=non_reader_slot, args=(port, self.stop, FLOOD_RATES[min(i, 1)]), daemon=True)
            for i in range(slots)
        ]
        for t in self.threads:
            t.start()

    def halt(self, timeout=20):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return sum(t.is_alive() for t in self.threads)


def run(args):
    daemon = Daemon(args.pid, args.admin_port)
    duration = args.duration
    loose = duration < LOOSE_BELOW
    warmup = min(max(duration * 0.1, 5.0), 30.0)
    t0 = time.monotonic()
    end = t0 + duration
    half = t0 + duration / 2
    reasons = []
    start_fds = daemon.fds()
    say(
        f"churn: {args.workers} workers, {args.non_readers} non-reader slots, "
        f"{args.pairs} steady pairs; warm-up {warmup:.0f} s, daemon fds at start {start_fds}"
    )

    # 1. Warm-up, then the baseline.
    churn = Churn(args.port, args.workers, args.non_readers)
    time.sleep(warmup)
    stuck = churn.halt()
    if stuck:
        reasons.append(f"{stuck} client threads did not stop after the warm-up")
    settle_stable(daemon, 15)
    base_rss, base_fds = progress(daemon, t0, " warm-up done, baseline")

    # 2. The main phase.
    half = max(half, time.monotonic())  # a very short run: half time comes at once
    readers = steady_pairs(args.port, args.pairs)
    churn = Churn(args.port, args.workers, args.non_readers)
    sampler = RssSampler(daemon, t0)
    t_main = time.monotonic() - t0
    next_tick = t0 + PROGRESS_EVERY * (int((time.monotonic() - t0) // PROGRESS_EVERY) + 1)
    half_done = False
    while time.monotonic() < end:
        if not daemon.alive():
            reasons.append("the daemon died during the churn")
            break
        wake = min(next_tick, end) if half_done else min(next_tick, half, end)
        time.sleep(max(0.0, wake - time.monotonic()))
        now = time.monotonic()
        if not half_done and now >= half:
            half_done = True
            progress(daemon, t0, " (half time)")
            while next_tick <= now + 1:
                next_tick += PROGRESS_EVERY  # no second line for the same moment
        elif now >= next_tick and now < end:
            progress(daemon, t0)
            next_tick += PROGRESS_EVERY
    alive = daemon.alive()
    if alive:
        progress(daemon, t0, " (end of churn)")
    sampler.halt()

    # 3. Stop, check the readers, wait for the descriptors.
    stuck = churn.halt()
    if stuck:
        reasons.append(f"{stuck} client threads did not stop")
    if alive:
        reasons += finish_steady(readers)
    else:
        for r in readers:
            r.stop_sending.set()
            r.done_reading.set()
            r.client.close()

    s = STATS.snapshot()
    say(
        f"churn total: {s['connections']} connections, {s['logins']} logins, {s['sent']} lines sent, "
        f"{s['received']} received, {s['resets']} resets, {s['login_timeouts']} login timeouts, "
        f"{s['slow_cut']} non-readers cut off ({s['slow_not_cut']} not; "
        f"{s['flood_bytes'] / max(1, s['slow_cut'] + s['slow_not_cut']) / 1024:.0f} KiB sent to each), "
        f"{s['no_such_user']} `no such user` (recipient left), {s['unexpected']} unexpected"
    )
    for kind, detail in STATS.problems[:10]:
        say(f"  unexpected: {kind}: {detail}")

    if alive:
        t_settle = time.monotonic()
        fds = settle(daemon, base_fds, SETTLE_TIMEOUT)
        rss, _ = progress(daemon, t0, " (after the churn)")
        if fds is None:
            reasons.append("the daemon died after the churn")
        elif abs(fds - base_fds) > FD_TOLERANCE:
            reasons.append(f"fds {fds} not back to the baseline {base_fds} within {SETTLE_TIMEOUT:.0f} s")
        else:
            say(f"fds back to {fds} (baseline {base_fds}) after {time.monotonic() - t_settle:.1f} s")
        say(f"rss: baseline {mib(base_rss)}, after the churn {mib(rss)}")
        window = max(duration * 0.1, 3.0)
        # A very short run reaches half time before the main phase starts: its first
        # samples stand in for half time.
        t_half, t_end = max(half - t0, t_main + 1.0), end - t0
        h, nh = sampler.floor(max(t_main, t_half - window), t_half)
        e, ne = sampler.floor(t_end - window, t_end)
        if h is None or e is None:
            reasons.append("no RSS samples before half time or before the end")
        else:
            growth = e - h
            pct = 100.0 * growth / h if h else 0.0
            ok = growth < RSS_GROWTH_LIMIT * h or (loose and growth * 1024 < RSS_LOOSE_BYTES)
            rule = f"under {RSS_GROWTH_LIMIT:.0%}"
            if loose:
                rule += f" or under {RSS_LOOSE_BYTES >> 20} MiB (a run under {LOOSE_BELOW} s: looser, warm-up dominates)"
            peak = max(kib for _, kib in sampler.samples)
            say(
                f"rss floor over the second half: {mib(h)} in the {window:.0f} s before half time ({nh} samples) -> "
                f"{mib(e)} in the last {window:.0f} s ({ne} samples): {pct:+.2f} %, {growth:+d} KiB; "
                f"peak {mib(peak)}; limit {rule}"
            )
            if not ok:
                reasons.append(f"RSS floor grew {pct:+.2f} % ({growth:+d} KiB) over the second half")
    elif "the daemon died during the churn" not in reasons:
        reasons.append("the daemon died during the churn")

    with open(args.result, "w") as f:
        for r in reasons:
            f.write(r + "\n")
    return 0


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fp = sub.add_parser("free-ports")
    fp.add_argument("n", type=int)
    r = sub.add_parser("run")
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--chat-port", dest="port", type=int, required=True)
    r.add_argument("--admin-port", type=int, required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--result", required=True)
    r.add_argument("--workers", type=int, default=48)
    r.add_argument("--non-readers", type=int, default=3)
    r.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    if args.command == "free-ports":
        free_ports(args.n)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

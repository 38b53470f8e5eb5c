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
import random
import socket
import struct
import sys
import threading
import time
import urllib.request

PREFIX = "[soak]"
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
LOGIN_TIMEOUT = 2.0  # the daemon's login_timeout (soak.sh writes it)
IO_TIMEOUT = 10.0  # longest wait for one expected line
SETTLE_TIMEOUT = 30.0  # longest wait for the descriptors to come back
STEADY_FINAL_WAIT = 15.0  # longest wait for the steady readers' last lines


def say(*parts):
    print(PREFIX, *parts, flush=True)


# ---------------------------------------------------------------------------------------
# Counters shared by every client thread.


class Stats:
    NAMES = (
        "connections",
        "logins",
        "sent",
        "received",
        "resets",
        "login_timeouts",
        "slow_cut",
        "slow_not_cut",
        "no_such_user",
        "flood_bytes",
        "unexpected",
        "connect_errors",
    )

    def __init__(self):
        self.lock = threading.Lock()
        for name in self.NAMES:
            setattr(self, name, 0)
        self.problems = []  # (kind, detail), the first few of each kind are kept

    def add(self, name, n=1):
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def problem(self, kind, detail):
        with self.lock:
            self.unexpected += 1
            if sum(1 for k, _ in self.problems if k == kind) < 3:
                self.problems.append((kind, detail))

    def snapshot(self):
        with self.lock:
            return {name: getattr(self, name) for name in self.NAMES}


STATS = Stats()


class Live:
    """Logins that are live right now, to pick recipients from."""

    def __init__(self):
        self.lock = threading.Lock()
        self.names = []
        self.index = {}

    def add(self, name):
        with self.lock:
            self.index[name] = len(self.names)
            self.names.append(name)

    def remove(self, name):
        with self.lock:
            i = self.index.pop(name, None)
            if i is None:
                return
            last = self.names.pop()
            if i < len(self.names):
                self.names[i] = last
                self.index[last] = i

    def pick(self, k, exclude):
        with self.lock:
            if not self.names:
                return []
            chosen = random.sample(self.names, min(k, len(self.names)))
        return [n for n in chosen if n != exclude]


LIVE = Live()


class Names:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def next(self, prefix):
        # Letters then digits and `_`: no two names share a confusable skeleton.
        with self.lock:
            self.n += 1
            return f"{prefix}_{self.n}"


NAMES = Names()


# ---------------------------------------------------------------------------------------
# A line-oriented client connection.


class Closed(Exception):
    pass


class Client:
    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(IO_TIMEOUT)
        try:
            self.sock.connect(("127.0.0.1", port))
        except OSError:
            self.sock.close()
            STATS.add("connect_errors")
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        STATS.add("connections")

    def send(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def readline(self, timeout=IO_TIMEOUT):
        """One line without its newline; Closed at EOF or reset; socket.timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no line")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError) as e:
                raise Closed("reset") from e
            if not data:
                raise Closed("eof")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def drain_to_eof(self, timeout):
        """Reads and discards until EOF (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False

    def close_cleanly(self, timeout=5.0):
        """Half-close, read what is left until the daemon closes too, close."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.drain_to_eof(timeout)
        except OSError:
            pass
        self.sock.close()

    def reset(self):
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()
        STATS.add("resets")

    def close(self):
        self.sock.close()


def login(client, name):
    """Logs in and checks that the login is live with a line to itself."""
    client.send(name)
    client.send(f"{name}: hello")
    STATS.add("sent")
    expected = f"from {name}: hello"
    while True:
        line = client.readline()
        STATS.add("received")
        if line == expected:
            STATS.add("logins")
            return
        if line.startswith("error: "):
            raise Closed(f"login {name}: {line}")


# ---------------------------------------------------------------------------------------
# Churn clients.


def chat_client(port, stop, reset_at=None):
    name = NAMES.next("c")
    client = Client(port)
    try:
        login(client, name)
    except (Closed, OSError) as e:
        STATS.problem("churn login", f"{name}: {e}")
        client.close()
        return
    LIVE.add(name)
    try:
        rounds = random.randint(3, 15)
        for i in range(rounds):
            if stop.is_set():
                break
            targets = [name] + LIVE.pick(random.randint(0, 3), name)
            random.shuffle(targets)
            text = f"churn {i} " + "x" * random.randint(1, 200)  # the daemon trims text
            client.send(f"{', '.join(targets)}: {text}")
            STATS.add("sent")
            if reset_at == i:
                LIVE.remove(name)
                client.reset()
                return
            expected = f"from {name}: {text}"
            while True:
                line = client.readline()
                STATS.add("received")
                if line == expected:
                    break
                if line.startswith(f"from {name}: "):
                    STATS.problem("churn order", f"{name} wanted {expected[:40]!r}, got {line[:40]!r}")
                    break
                if line.startswith("error: no such user"):
                    STATS.add("no_such_user")  # a recipient left meanwhile
                elif not line.startswith("from "):
                    STATS.problem("churn line", f"{name}: {line[:80]}")
            time.sleep(random.uniform(0, 0.05))
        LIVE.remove(name)
        client.close_cleanly()
    except socket.timeout:
        LIVE.remove(name)
        STATS.problem("churn timeout", f"{name}: no echo within {IO_TIMEOUT:.0f} s")
        client.close()
    except (Closed, OSError) as e:
        LIVE.remove(name)
        STATS.problem("churn closed", f"{name}: {e}")
        client.close()


def silent_client(port, stop):
    """Never logs in: the daemon must answer `error: login timeout` and close."""
    client = Client(port)
    deadline = time.monotonic() + LOGIN_TIMEOUT + 5
    try:
        while not stop.is_set():
            try:
                line = client.readline(timeout=0.5)
            except socket.timeout:
                if time.monotonic() > deadline:
                    STATS.problem("login timeout", "no answer within login_timeout + 5 s")
                    return
                continue
            if line == "error: login timeout":
                STATS.add("login_timeouts")
                if not client.drain_to_eof(5):
                    STATS.problem("login timeout", "no close after `error: login timeout`")
                return
            STATS.problem("login timeout", f"unexpected line {line[:80]!r}")
            return
    except (Closed, OSError) as e:
        STATS.problem("login timeout", f"closed without the error line ({e})")
    finally:
        client.close()


def churn_worker(port, stop):
    while not stop.is_set():
        r = random.random()
        try:
            if r < 0.75:
                chat_client(port, stop)
            elif r < 0.90:
                chat_client(port, stop, reset_at=random.randint(0, 3))
            else:
                silent_client(port, stop)
        except OSError as e:
            STATS.problem("connect", str(e))
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Non-readers and their flooders.

FLOOD_LINE = "y" * 1000
# Bytes/s per flooder: the first slot floods fast (its non-reader passes
# outbound_queue_hard_bytes and is cut at once), the others slowly (theirs stay over
# outbound_queue_bytes until slow_consumer_grace is over). The daemon's peak memory for
# these queues is then about the same in every round, which keeps the RSS check fair.
FLOOD_RATES = (4 << 20, 256 << 10)
FLOOD_BUDGET = 64 << 20  # bytes per non-reader at most
FLOOD_BATCH = 16  # lines per write


def non_reader_slot(port, stop, rate):
    while not stop.is_set():
        try:
            non_reader_round(port, stop, rate)
        except OSError as e:
            STATS.problem("non-reader", str(e))
        stop.wait(random.uniform(0.2, 1.0))


def non_reader_round(port, stop, rate):
    slow_name = NAMES.next("nr")
    flood_name = NAMES.next("f")
    slow = Client(port, rcvbuf=4096)
    flood = None
    try:
        login(slow, slow_name)  # then it never reads again, until the end of the round
        flood = Client(port)
        login(flood, flood_name)
        flood.sock.setblocking(False)
        batch = (f"{slow_name}: {FLOOD_LINE}\n" * FLOOD_BATCH).encode()
        sent = 0
        started = time.monotonic()
        cut = False
        pending = b""
        inbuf = b""
        while not stop.is_set() and sent < FLOOD_BUDGET and not cut:
            # Read what the daemon says to the flooder (its errors), without blocking.
            try:
                while True:
                    data = flood.sock.recv(65536)
                    if not data:
                        raise Closed("flooder closed by the daemon")
                    inbuf += data
            except (BlockingIOError, InterruptedError):
                pass
            while b"\n" in inbuf:
                line, inbuf = inbuf.split(b"\n", 1)
                STATS.add("received")
                text = line.decode("utf-8", "replace")
                if text == f'error: no such user "{slow_name}"':
                    cut = True
                elif not text.startswith("from "):
                    STATS.problem("flooder line", text[:80])
            if cut:
                break
            # Write at FLOOD_RATE at most.
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                stop.wait(min(ahead, 0.05))
                continue
            if not pending:
                pending = batch
            try:
                n = flood.sock.send(pending)
            except (BlockingIOError, InterruptedError):
                stop.wait(0.01)
                continue
            pending = pending[n:]
            sent += n
        STATS.add("flood_bytes", sent)
        if stop.is_set():
            return
        # The non-reader now reads: what the daemon had sent it, then the EOF of the cut.
        if slow.drain_to_eof(10):
            STATS.add("slow_cut")
        else:
            STATS.add("slow_not_cut")
            say(f"note: non-reader {slow_name} was not cut off after {sent >> 10} KiB sent to it")
        flood.sock.setblocking(True)
        flood.close_cleanly()
        flood = None
    except (Closed, socket.timeout) as e:
        STATS.problem("non-reader", f"{slow_name}: {e}")
    finally:
        slow.close()
        if flood is not None:
            flood.close()


# ---------------------------------------------------------------------------------------
# Steady pairs: numbered lines that must all arrive, once and in order.


class Steady:
    RATE = 25  # lines/s per reader

    def __init__(self, port, name):
        self.name = name
        self.partner = None
        self.client = Client(port)
        self.sent = 0  # lines sent, each to the partner and to itself
        self.next = {}  # sender -> next sequence number expected
        self.lost = 0
        self.dup = 0
        self.errors = []
        self.stop_sending = threading.Event()
        self.done_reading = threading.Event()
        self.lock = threading.Lock()

    def start(self):
        self.next = {self.name: 0, self.partner.name: 0}
        self.reader = threading.Thread(target=self.read_loop, daemon=True)
        self.sender = threading.Thread(target=self.send_loop, daemon=True)
        self.reader.start()
        self.sender.start()

    def send_loop(self):
        started = time.monotonic()
        try:
            while not self.stop_sending.is_set():
                due = started + self.sent / self.RATE
                wait = due - time.monotonic()
                if wait > 0:
                    self.stop_sending.wait(wait)
                    continue
                pad = "z" * random.randint(0, 100)
                self.client.send(f"{self.partner.name}, {self.name}: seq {self.sent} {pad}")
                with self.lock:
                    self.sent += 1
                STATS.add("sent")
        except OSError as e:
            self.errors.append(f"{self.name}: send failed: {e}")

    def read_loop(self):
        try:
            while not self.done_reading.is_set():
                try:
                    line = self.client.readline(timeout=0.5)
                except socket.timeout:
                    continue
                STATS.add("received")
                self.check(line)
        except (Closed, OSError) as e:
            if not self.done_reading.is_set():
                self.errors.append(f"{self.name}: connection lost: {e}")

    def check(self, line):
        if not line.startswith("from "):
            if len(self.errors) < 5:
                self.errors.append(f"{self.name} got {line[:80]!r}")
            return
        sender, _, text = line[5:].partition(": ")
        if sender not in self.next:
            return  # a churn client wrote to this reader
        if not text.startswith("seq "):
            self.errors.append(f"{self.name}: bad line from {sender}: {line[:80]!r}")
            return
        n = int(text.split(" ", 2)[1])
        with self.lock:
            want = self.next[sender]
            if n == want:
                self.next[sender] = n + 1
            elif n > want:
                self.lost += n - want
                self.next[sender] = n + 1
                if len(self.errors) < 5:
                    self.errors.append(f"{self.name}: from {sender}: got seq {n}, wanted {want}")
            else:
                self.dup += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{self.name}: from {sender}: seq {n} again or late (next {want})")

    def caught_up(self):
        with self.lock:
            return all(self.next[s.name] >= s.sent for s in (self, self.partner))


def steady_pairs(port, pairs):
    readers = []
    for p in range(pairs):
        a = Steady(port, NAMES.next("sa"))
        b = Steady(port, NAMES.next("sb"))
        a.partner, b.partner = b, a
        for r in (a, b):
            login(r.client, r.name)
            LIVE.add(r.name)  # churn clients write to them too; their checks skip those lines
        readers += [a, b]
    for r in readers:
        r.start()
    return readers


def finish_steady(readers):
    """Stops sending, waits for the last lines, closes; returns failure reasons."""
    for r in readers:
        LIVE.remove(r.name)
        r.stop_sending.set()
    for r in readers:
        r.sender.join(5)
    deadline = time.monotonic() + STEADY_FINAL_WAIT
    while time.monotonic() < deadline and not all(r.caught_up() for r in readers):
        time.sleep(0.1)
    for r in readers:
        r.done_reading.set()
    for r in readers:
        r.reader.join(2)
        r.client.close_cleanly(timeout=3)
    reasons = []
    sent = sum(2 * r.sent for r in readers)
    lost = sum(r.lost for r in readers)
    dup = sum(r.dup for r in readers)
    missing = 0
    for r in readers:
        with r.lock:
            for s in (r, r.partner):
                missing += max(0, s.sent - r.next[s.name])
    errors = [e for r in readers for e in r.errors]
    say(
        f"steady readers: {len(readers)} readers, {sent} lines expected, "
        f"lost {lost + missing}, duplicated or reordered {dup}"
    )
    for e in errors[:10]:
        say(f"  steady: {e}")
    if lost + missing:
        reasons.append(f"{lost + missing} of {sent} steady lines lost")
    if dup:
        reasons.append(f"{dup} steady lines duplicated or out of order")
    if errors and not (lost + missing or dup):
        reasons.append(f"steady readers saw errors: {errors[0]}")
    return reasons


# ---------------------------------------------------------------------------------------
# The daemon, seen from outside.


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

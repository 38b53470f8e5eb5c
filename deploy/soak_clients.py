"""deploy/soak_clients.py: the clients of deploy/soak.py's churn (Python 3.11, standard
library only): chatting pairs, silent and resetting clients, non-readers flooded by
others, steady pairs counted line by line, and the counters they share. soak.py runs them
and judges the daemon by what they saw.
"""

import random
import socket
import struct
import threading
import time

PREFIX = "[soak]"
LOGIN_TIMEOUT = 2.0  # the daemon's login_timeout (soak.sh writes it)
IO_TIMEOUT = 10.0  # longest wait for one expected line


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

"""deploy/soak_steady.py: the steady pairs of deploy/soak.py's churn (Python 3.11,
standard library only): pairs that chat at a steady pace through the whole run, every
line numbered, so that a lost, doubled or reordered line is seen.
"""

import random
import socket
import threading
import time

from soak_clients import Client, Closed, LIVE, NAMES, STATS, login, say

STEADY_FINAL_WAIT = 15.0  # longest wait for the steady readers' last lines


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

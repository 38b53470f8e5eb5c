#!/usr/bin/env python3
"""deploy/heavy-floods.py: the floods of deploy/heavy-floods.sh, one per command, each
running until it is killed (SIGTERM/SIGINT) and printing its progress on stderr once a
second. Loopback addresses only.

  hold ADDR N                   open N TCP connections to ADDR and hold them (no login)
  connections ADMIN N           N admin clients, each pipelining 100 requests of
                                GET /connections?limit=1000 at a time, again and again
  handshakes TLSADDR N          N threads making full TLS handshakes (no resumption), one
                                after another, each connection closed once it is up
  hellos TLSADDR N ANNOUNCED SENT
                                N connections that each send the first SENT bytes of a
                                ClientHello of ANNOUNCED bytes (in 16 KiB records), and hold
"""

import signal
import socket
import ssl
import sys
import threading
import time

STOP = threading.Event()
COUNT = [0]
LOCK = threading.Lock()


def count(n=1):
    with LOCK:
        COUNT[0] += n


def addr(text):
    host, port = text.rsplit(":", 1)
    assert host.startswith("127.") or host == "::1", "loopback only"
    return host, int(port)


def progress(what):
    last, started = 0, time.time()
    while not STOP.wait(1.0):
        now = COUNT[0]
        print(f"[{time.time() - started:4.0f}s] {what}: {now} ({now - last}/s)",
              file=sys.stderr, flush=True)
        last = now


def hold(target, n):
    held = []
    for _ in range(n):
        try:
            held.append(socket.create_connection(target, timeout=5))
            count()
        except OSError:
            pass
    STOP.wait()


def pipeline(admin):
    request = b"GET /connections?limit=1000 HTTP/1.1\r\nHost: a\r\n\r\n" * 100
    while not STOP.is_set():
        try:
            with socket.create_connection(admin, timeout=5) as s:
                s.sendall(request)
                while not STOP.is_set():
                    data = s.recv(1 << 16)
                    if not data:
                        break
                    count(data.count(b"HTTP/1.1 200"))
        except OSError:
            time.sleep(0.01)


def handshakes(target):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while not STOP.is_set():
        try:
            with socket.create_connection(target, timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                    count()
        except OSError:
            time.sleep(0.01)


def hellos(target, n, announced, sent):
    # The handshake message (type 1, 24-bit length, then the body) cut into TLS records
    # of at most 16 KiB each, as a client with a ClientHello that large sends it.
    message = (bytes([1]) + announced.to_bytes(3, "big") + bytes([3, 3])).ljust(
        4 + announced, b"\x5a")
    hello = b""
    for at in range(0, len(message), 16384):
        part = message[at:at + 16384]
        hello += bytes([22, 3, 1]) + len(part).to_bytes(2, "big") + part
    hello = hello[:sent]
    held = []
    for _ in range(n):
        try:
            s = socket.create_connection(target, timeout=5)
            s.sendall(hello)
            held.append(s)
            count()
        except OSError:
            pass
    STOP.wait()


def main():
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "hold":
        jobs, what = [lambda: hold(addr(args[0]), int(args[1]))], "connections held"
    elif cmd == "connections":
        jobs = [lambda: pipeline(addr(args[0]))] * int(args[1])
        what = "/connections answers"
    elif cmd == "handshakes":
        jobs, what = [lambda: handshakes(addr(args[0]))] * int(args[1]), "TLS handshakes"
    elif cmd == "hellos":
        n, announced, sent = (int(a) for a in args[1:4])
        jobs = [lambda: hellos(addr(args[0]), n, announced, sent)]
        what = "half-sent ClientHellos held"
    else:
        sys.exit(__doc__)
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    progress(what)


if __name__ == "__main__":
    main()

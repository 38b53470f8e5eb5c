#!/usr/bin/env python3
"""deploy/cluster-e2e.py: the clients of deploy/cluster-e2e.sh (Python 3.11, standard library
only, asyncio).

    cluster-e2e.py run --addr 127.0.0.1:PORT --admin n1=127.0.0.1:PORT ... --work DIR
                       --result FILE [--haproxy-socket PATH] [--clients 300] [--lease 2]
                       [--slack 2] [--send-seconds 14] [--kill-after 5]

It plays the users of a-chat cluster that sits behind a load balancer (ADDR, HAProxy), all on
loopback:
  1. one after the other, every client connects through the balancer and logs in with its
     own name (c000, c001, ...), then sends itself `hello N` and waits for it to come back:
     that is how a client knows its login was granted. GET /connections on each node's
     admin port then says which node holds which login.
  2. sending: client i writes one line every 100 ms, `c(i+1), c(i+7): s SEQ`, SEQ counting
     up from 0 per client; every client records the SEQs it receives from each sender.
     With round-robin balancing over three nodes, client i is on node i mod 3 and every
     one of those lines crosses nodes (the pairs line of the verdict counts them).
  3. KILL_AFTER seconds into the sending, the driver writes DIR/kill-request; the script
     SIGKILLs one node and writes DIR/killed (`NODE EPOCH-SECONDS`, the time just before the
     signal). Clients whose connection ends log in again through the balancer with the
     SAME name, retrying every 100 ms while the answer is `error: login "..." is taken` (the
     dead node's lease still holds the name). Nobody sends while logged out.
  4. after SEND_SECONDS the sending stops; the driver waits until every line between
     clients that never lost their connection has arrived and the traffic has been quiet
     for a second (at most FINAL_WAIT seconds), then closes every client.
A progress line every second (live clients, reconnects, lines sent and delivered, refused
re-logins, the balancer's view of each node). The checks, written to FILE one failure
reason per line (an empty file means everything passed):
  - every client logged in at the start; the killed node held some of them;
  - the clients of the killed node, and only they, lost their connection, once;
  - each of them logged in again within LEASE + SLACK seconds of the kill;
  - for every (sender, recipient) pair where both stayed connected the whole run: the
    SEQs received are exactly the SEQs sent (nothing lost, nothing duplicated, in order);
  - for pairs where one side logged in again: no SEQ twice, in order, none never sent;
  - no `error:` line other than `no such user` / `could not deliver` about a recipient
    that was logged out at the time;
  - every client a node lists in GET /connections at the end has the peer address and
    port the client itself connected from (the balancer's PROXY header reached the node).
"""

import argparse
import asyncio
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.request

TICK = 0.01  # the sending loop's step: each client sends every SEND_EVERY, spread over steps
SEND_EVERY = 0.1
RETRY = 0.1  # pause between two login attempts
LOGIN_TIMEOUT = 15.0  # longest wait for the first logins of every client
FINAL_WAIT = 15.0  # longest wait for the last lines after the sending stops
QUIET = 1.0  # the traffic must be quiet this long before the final count
KILLED_WAIT = 5.0  # longest wait for the script to report the kill

FROM_LINE = re.compile(r"^from (\S+): s (\d+)$")
LAME_DUCK_NOTICE = "notice: server going away, reconnect to another"
UNDELIVERABLE = re.compile(r'^error: (?:no such user|could not deliver to) "([^"]*)"')


from cluster_e2e_verdict import say, verdict  # beside this file




class Taken(Exception):
    """The balancer's node answered `error: login "..." is taken`."""


class Retry(Exception):
    """The attempt failed in another way (closed, timed out, an unexpected answer)."""


class Client:
    def __init__(self, idx, name):
        self.idx = idx
        self.name = name
        self.recipients = []
        self.writer = None
        self.live = False
        self.seq = 0  # lines 0 .. seq-1 were written
        self.recv = {}  # sender name -> SEQs received, in arrival order
        self.node = None  # the node holding its first login
        self.node_after = None  # the node holding it at the end
        self.first_login = None  # wall-clock time
        self.drops = []  # wall-clock times the connection was lost
        self.relogins = []  # wall-clock times of logins after a drop
        self.told = []  # wall-clock times of lame duck notices
        self.taken = 0  # `is taken` answers while logging in again
        self.failed_attempts = 0  # connects or logins that failed otherwise
        self.attempts = 0
        self.undeliverable = {}  # recipient -> count of no such user / could not deliver
        self.undeliverable_times = []  # (wall time, recipient)
        self.unexpected = []  # lines that fit nothing above (the first few)
        self.local = None  # "127.0.0.1:PORT" of its current connection, as it sees it
        self.peer_seen = None  # the peer its node's GET /connections names, at the end


class Run:
    def __init__(self, args):
        self.args = args
        host, _, port = args.addr.rpartition(":")
        self.host, self.port = host, int(port)
        self.admins = dict(a.split("=", 1) for a in args.admin)
        self.clients = [Client(i, f"c{i:03d}") for i in range(args.clients)]
        self.by_name = {c.name: c for c in self.clients}
        n = len(self.clients)
        for c in self.clients:
            c.recipients = [self.clients[(c.idx + 1) % n], self.clients[(c.idx + 7) % n]]
        self.stopping = False
        self.sending = False
        self.sent = 0
        self.delivered = 0
        self.t0 = time.monotonic()
        self.send_started = None  # wall-clock time
        self.kill_time = None  # wall-clock time
        self.killed_node = None
        self.phase = "login"
        self.haproxy = ""

    def elapsed(self):
        return time.monotonic() - self.t0


# ---------------------------------------------------------------------------------------
# One client's connection: log in, read, log in again after a drop.


def handle_line(run, c, text):
    m = FROM_LINE.match(text)
    if m:
        c.recv.setdefault(m.group(1), []).append(int(m.group(2)))
        run.delivered += 1
        return
    m = UNDELIVERABLE.match(text)
    if m:
        who = m.group(1)
        c.undeliverable[who] = c.undeliverable.get(who, 0) + 1
        c.undeliverable_times.append((time.time(), who))
        return
    if text.startswith(f"from {c.name}: hello "):
        return  # the echo of an earlier attempt's hello
    if text == LAME_DUCK_NOTICE and run.args.stop == "lame":
        c.told.append(time.time())
        return
    if len(c.unexpected) < 3:
        c.unexpected.append(text[:120])


async def connect_and_login(run, c):
    c.attempts += 1
    tag = f"hello {c.attempts}"
    reader, writer = await asyncio.wait_for(asyncio.open_connection(run.host, run.port), 2.0)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = writer.get_extra_info("sockname")[:2]
        c.local = f"{host}:{port}"
        writer.write(f"{c.name}\n{c.name}: {tag}\n".encode())
        deadline = time.monotonic() + 3.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Retry("no answer to the login")
            line = await asyncio.wait_for(reader.readline(), left)
            if not line:
                raise Retry("closed before the login was confirmed")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == f"from {c.name}: {tag}":
                return reader, writer
            if text.startswith("error: login ") and text.endswith(" is taken"):
                raise Taken()
            if text.startswith("error: ") and not UNDELIVERABLE.match(text):
                raise Retry(text)
            handle_line(run, c, text)  # others may write to it before the echo comes
    except BaseException:
        writer.close()
        raise


async def read_loop(run, c, reader):
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            handle_line(run, c, line.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return


async def session(run, c):
    while not run.stopping:
        try:
            reader, writer = await connect_and_login(run, c)
        except Taken:
            if c.first_login is None and len(c.unexpected) < 3:
                c.unexpected.append("its first login was refused as taken")
            c.taken += 1
            await asyncio.sleep(RETRY)
            continue
        except (OSError, asyncio.TimeoutError, Retry) as e:
            c.failed_attempts += 1
            if isinstance(e, Retry) and str(e).startswith("error:") and len(c.unexpected) < 3:
                c.unexpected.append(f"login answered {str(e)[:100]!r}")
            await asyncio.sleep(RETRY)
            continue
        now = time.time()
        if c.first_login is None:
            c.first_login = now
        else:
            c.relogins.append(now)
        c.writer = writer
        c.live = True
        await read_loop(run, c, reader)
        c.live = False
        c.writer = None
        writer.close()
        if run.stopping:
            return
        c.drops.append(time.time())


# ---------------------------------------------------------------------------------------
# Sending, progress, the nodes and the balancer seen from outside.


async def send_loop(run, until):
    loop = asyncio.get_running_loop()
    slots = round(SEND_EVERY / TICK)
    start = loop.time()
    k = 0
    while loop.time() < until and not run.stopping:
        for c in run.clients[k % slots :: slots]:
            if c.live and c.writer is not None:
                r1, r2 = c.recipients
                c.writer.write(f"{r1.name}, {r2.name}: s {c.seq}\n".encode())
                c.seq += 1
                run.sent += 1
        k += 1
        await asyncio.sleep(max(0.0, start + k * TICK - loop.time()))


def http_get_json(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=2) as r:
        return json.loads(r.read().decode())


async def map_logins(run, field):
    """Sets c.<field> to the node that holds c's login, from GET /connections on each node."""
    for node, addr in run.admins.items():
        if node == run.killed_node:
            continue
        try:
            doc = await asyncio.to_thread(http_get_json, addr, "/connections?limit=1000")
        except (OSError, ValueError) as e:
            say(f"GET /connections on {node} ({addr}) failed: {e}")
            continue
        for conn in doc.get("connections", []):
            c = run.by_name.get(conn.get("login"))
            if c is not None:
                setattr(c, field, node)
                c.peer_seen = conn.get("peer")


async def haproxy_state(path):
    """`n1:UP n2:DOWN ...` from HAProxy's stats socket, or '' when there is none."""
    if not path:
        return ""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 0.5)
        writer.write(b"show stat\n")
        data = await asyncio.wait_for(reader.read(), 0.5)
        writer.close()
    except (OSError, asyncio.TimeoutError):
        return "haproxy: n/a"
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("# "):
        return "haproxy: n/a"
    cols = lines[0][2:].split(",")
    try:
        px, sv, st = cols.index("pxname"), cols.index("svname"), cols.index("status")
    except ValueError:
        return "haproxy: n/a"
    states = []
    for line in lines[1:]:
        f = line.split(",")
        if len(f) > st and f[px] == "nodes" and f[sv] not in ("BACKEND", "FRONTEND"):
            states.append(f"{f[sv]}:{f[st].split(' ')[0]}")
    return "haproxy " + " ".join(states)


def progress_line(run):
    live = sum(c.live for c in run.clients)
    down = sum(1 for c in run.clients if c.drops and not c.live)
    back = sum(1 for c in run.clients if c.relogins)
    taken = sum(c.taken for c in run.clients)
    undeliv = sum(sum(c.undeliverable.values()) for c in run.clients)
    failed = sum(c.failed_attempts for c in run.clients)
    return (
        f"t={run.elapsed():5.1f}s {run.phase:<9} live {live}/{len(run.clients)} "
        f"down {down} back {back} | sent {run.sent} delivered {run.delivered} | "
        f"taken {taken} failed logins {failed} undeliverable {undeliv} | {run.haproxy}"
    )


async def progress_loop(run):
    while True:
        run.haproxy = await haproxy_state(run.args.haproxy_socket)
        say(progress_line(run))
        await asyncio.sleep(1.0)


async def request_kill(run):
    """Asks the script for the kill and waits for its answer: the node and the time."""
    work = run.args.work
    killed = os.path.join(work, "killed")
    with open(os.path.join(work, "kill-request"), "w") as f:
        f.write(f"{time.time():.6f}\n")
    deadline = time.monotonic() + KILLED_WAIT
    while time.monotonic() < deadline:
        try:
            with open(killed) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            node, when = text.split()
            run.killed_node, run.kill_time = node, float(when)
            how = "put in lame duck mode (SIGQUIT)" if run.args.stop == "lame" else "killed (SIGKILL)"
            say(f"{node} was {how} at t={run.kill_time - run.wall0:.2f}s; its clients log in again")
            return True
        await asyncio.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------
# The verdict.


def stable_complete(run):
    stable = [c for c in run.clients if not c.drops and c.first_login is not None]
    names = {c.name for c in stable}
    for s in stable:
        for r in s.recipients:
            if r.name in names and len(r.recv.get(s.name, ())) < s.seq:
                return False
    return True


# ---------------------------------------------------------------------------------------


async def run_main(args):
    run = Run(args)
    run.wall0 = time.time()
    reasons = []
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # writes to a dead socket: expected
    say(
        f"{len(run.clients)} clients through {args.addr}; each sends a line every {SEND_EVERY * 1000:.0f} ms "
        f"to (i+1) and (i+7); kill after {args.kill_after:g}s of sending, "
        f"{args.send_seconds:g}s in all; lease {args.lease:g}s + slack {args.slack:g}s"
    )
    progress = asyncio.create_task(progress_loop(run))

    # 1. Every client logs in, one after the other: the balancer's round robin then puts
    # client i on node i mod 3, and both of its recipients on the other two nodes.
    sessions = []
    deadline = time.monotonic() + LOGIN_TIMEOUT
    for c in run.clients:
        sessions.append(asyncio.create_task(session(run, c)))
        while c.first_login is None and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
    while time.monotonic() < deadline and not all(c.first_login for c in run.clients):
        await asyncio.sleep(0.05)
    missing = [c for c in run.clients if c.first_login is None]
    if missing:
        reasons.append(f"{len(missing)} clients could not log in within {LOGIN_TIMEOUT:g}s ({missing[0].name})")
    await map_logins(run, "node")
    spread = {}
    for c in run.clients:
        spread[c.node] = spread.get(c.node, 0) + 1
    say(
        f"{len(run.clients) - len(missing)} clients logged in in {run.elapsed():.1f}s; "
        f"per node: {', '.join(f'{k}: {v}' for k, v in sorted(spread.items(), key=str))}"
    )

    # 2, 3. Sending, and the kill in the middle.
    run.phase = "sending"
    run.send_started = time.time()
    loop = asyncio.get_running_loop()
    until = loop.time() + args.send_seconds
    sender = asyncio.create_task(send_loop(run, until))
    if args.kill_after >= 0:
        await asyncio.sleep(args.kill_after)
        if not await request_kill(run):
            reasons.append(f"the script did not report the kill within {KILLED_WAIT:g}s")
        else:
            run.phase = "killed"
    await sender

    # 4. The last lines.
    run.phase = "final"
    drains = [asyncio.create_task(c.writer.drain()) for c in run.clients if c.writer is not None]
    if drains:
        await asyncio.wait(drains, timeout=2.0)  # every line written has left the client
        for t in drains:
            t.cancel()
    say(f"sending stopped after {args.send_seconds:g}s: {run.sent} lines; waiting for the last deliveries")
    t_final = time.monotonic()
    last, quiet_since = run.delivered, time.monotonic()
    while time.monotonic() - t_final < FINAL_WAIT:
        await asyncio.sleep(0.1)
        if run.delivered != last:
            last, quiet_since = run.delivered, time.monotonic()
        if stable_complete(run) and time.monotonic() - quiet_since >= QUIET:
            break
    waited = time.monotonic() - t_final
    if not stable_complete(run):
        say(f"lines between clients that stayed connected still missing after {waited:.1f}s")
    else:
        say(f"all lines between clients that stayed connected arrived ({waited:.1f}s incl. {QUIET:g}s quiet)")
    await map_logins(run, "node_after")

    run.stopping = True
    progress.cancel()
    run.haproxy = await haproxy_state(args.haproxy_socket)
    say(progress_line(run))
    for c in run.clients:
        if c.writer is not None:
            c.writer.close()
    await asyncio.wait(sessions, timeout=5)
    for t in sessions:
        t.cancel()

    verdict(run, reasons)
    say(
        f"counts: clients {len(run.clients)}, lines sent {run.sent}, delivered {run.delivered}, "
        f"pairs checked {run.pairs_exact} exact + {run.pairs_loose} reconnected, "
        f"reconnects {run.reconnected}, worst re-login {run.worst_relogin:.2f}s"
    )
    with open(args.result, "w") as f:
        for r in reasons:
            f.write(r + "\n")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--addr", required=True, help="the balancer, 127.0.0.1:PORT")
    r.add_argument("--admin", action="append", default=[], help="NODE=127.0.0.1:PORT, once per node")
    r.add_argument("--work", required=True, help="the folder of the kill handshake")
    r.add_argument("--result", required=True)
    r.add_argument("--haproxy-socket", default="")
    r.add_argument("--clients", type=int, default=300)
    r.add_argument("--lease", type=float, default=2.0)
    r.add_argument("--slack", type=float, default=2.0)
    r.add_argument("--send-seconds", type=float, default=14.0)
    r.add_argument("--kill-after", type=float, default=5.0, help="negative: no kill")
    r.add_argument("--stop", choices=["kill", "lame"], default="kill",
                   help="how the node is stopped: SIGKILL, or lame duck mode (SIGQUIT)")
    r.add_argument("--relogin-limit", type=float, default=None,
                   help="seconds after the stop by which its clients must be back (default lease + slack)")
    r.add_argument("--spread", type=float, default=0.0,
                   help="lame duck: [shutdown] lame_duck_duration, over which the closes are spread")
    r.add_argument("--delay", type=float, default=0.0,
                   help="lame duck: [shutdown] drain_delay, before the first close")
    args = parser.parse_args()
    return asyncio.run(run_main(args))


if __name__ == "__main__":
    sys.exit(main())

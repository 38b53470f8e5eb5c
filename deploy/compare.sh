#!/usr/bin/env bash
# deploy/compare.sh: a-chat against Redis pub/sub, side by side on this machine, in one
# sitting, with the same load generator (`a-chat bench`, which also speaks Redis
# SUBSCRIBE/PUBLISH) and the same workloads.
#
# Steps (each prints its progress on stderr):
#   1. build the release binary (cargo build --release), unless A_CHAT_BIN is given
#   2. install redis-server, perf and strace with apt-get if one is missing
#   3. start a-chat (max_connections = 19000, [log] level = "info", on a free loopback port)
#      and redis-server (no persistence, maxclients 19000), both with RLIMIT_NOFILE 20000
#   4. measure, for each target, RUNS times (the targets take turns run by run):
#        direct      100 clients, 64-byte messages, 64 in flight per client: deliveries/s,
#                    server CPU per delivery (the bench's --pid: /proc/PID/stat deltas)
#        fanout 10   each message names 10 recipients: deliveries/s
#        syscalls    direct, a fixed number of messages (-n), the server's system calls
#                    counted by `perf stat -e 'syscalls:sys_enter_*' -p PID` (or by
#                    `strace -c -f -p PID` where perf tracepoints do not work), divided
#                    by the deliveries
#        rate 20k    open loop at 20000 messages/s: latency p50 / p99
#        burst       2 readers reading at full speed, 30 senders each firing 1 MiB of
#                    2048-byte lines at both at once, 5 rounds: median burst time (first
#                    send to last line at every reader), and whether a reader was cut off
#        idle 10k    10000 logged-in idle connections on a fresh server: RSS per connection
#        storm 10k   10000 clients connect and log in at once (up to 2048 connects in
#                    flight) on a fresh server: time until all are logged in, connect-to-
#                    login p99, and the kernel's ListenOverflows delta (/proc/net/netstat,
#                    whole machine); a-chat at its listen_backlog default, Redis at its
#                    tcp-backlog default (511)
#   5. once per target: idle 19000 on a fresh server: the largest count held
#   6. print a markdown table: medians and spreads (min–max) of the runs
#   7. draw the sitting (deploy/plot_sitting.py: SVGs in RESULTS/plots) when gnuplot is installed
# All traffic stays on 127.0.0.1. Every run is bounded (a few seconds; a storm at most
# 10 s, a burst round at most 10 s); the whole script takes about 2½ minutes once the
# binary is built, about 3 with BASELINE (191 s on 2 cores). Every process it starts is
# stopped on exit (by its PID). Raw results (one JSON object per run, server logs, syscall counts, the load
# average before each run) go to the results folder.
#
# Environment:
#   A_CHAT_BIN=PATH     use this a-chat binary instead of building one
#   BASELINE=PATH       also measure this other a-chat binary (e.g. a build of an older
#                       commit), as a third column in the same sitting: before/after
#                       figures for a change (adds about half the time again)
#   RESULTS=DIR         results folder (default: target/compare/<date>-<time>)
#   RUNS=N              runs per measurement (default 3)
#   DURATION=3s         length of each timed run (direct, fanout, rate)
#   SYSCALL_MSGS=N      messages per client in the syscall-count run (default 5000;
#                       500 when strace has to do the counting, as it slows the server)
#   IDLE=N              connections of the idle memory run (default 10000)
#   STORM=N             clients of the storm run (default 10000)
#   BURST_ROUNDS=N      bursts per burst run (default 5)
#   MAX_CONNS=N         connections of the "largest count held" run (default 19000)
#   SYSCALL_COUNTER=strace  count system calls with strace even where perf works
#   SKIP_INSTALL=1      do not run apt-get
# Exit status: 0 when every run of a-chat and Redis passed the bench's checks (no loss,
# duplicates, reordering, reader cut off; every storm client logged in in time), 1
# otherwise, 2 when the comparison could not start. A BASELINE binary's failed runs are
# counted in the table but do not change the status: an older build may well have the
# defect a change fixed.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-3s}"
IDLE="${IDLE:-10000}"
STORM="${STORM:-10000}"
BURST_ROUNDS="${BURST_ROUNDS:-5}"
MAX_CONNS="${MAX_CONNS:-19000}"
NOFILE=20000
RESULTS="${RESULTS:-$ROOT/target/compare/$(date +%Y%m%d-%H%M%S)}"
STARTED=$SECONDS
PIDS=()
WRAP=()
FAILED=0

say() { printf '[compare %3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { say "error: $*"; exit 2; }

trap stop_tracked EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. the binary
release_binary
BASELINE="${BASELINE:-}"
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "no a-chat binary at BASELINE=$BASELINE"
# The servers measured: a label each, the protocol the bench speaks to it, and for a-chat
# the binary. The labels take turns run by run.
TARGETS=(achat)
[ -n "$BASELINE" ] && TARGETS+=(baseline)
TARGETS+=(redis)
declare -A PROTO=([achat]=achat [baseline]=achat [redis]=redis)
declare -A SERVER_BIN=([achat]="$BIN" [baseline]="$BASELINE")

# ---------------------------------------------------------------- 2. the tools
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v perf >/dev/null || missing+=(linux-perf)
command -v strace >/dev/null || missing+=(strace)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    install_missing "${missing[@]}"
else
    say "step 2: redis-server, perf, strace and python3 are installed"
fi
command -v redis-server >/dev/null || die "redis-server is still missing"

# Syscall counter: perf tracepoints if they work here, else strace.
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
COUNTER=strace
if [ -n "${SYSCALL_COUNTER:-}" ]; then
    COUNTER="$SYSCALL_COUNTER"
elif perf stat -x, -e raw_syscalls:sys_enter -o "$RESULTS/perf-check.txt" true >/dev/null 2>&1 &&
    grep -q '^[0-9]*,,raw_syscalls:sys_enter' "$RESULTS/perf-check.txt"; then
    COUNTER=perf
fi
command -v "$COUNTER" >/dev/null || die "neither perf tracepoints nor strace are usable"
SYSCALL_MSGS="${SYSCALL_MSGS:-$([ "$COUNTER" = perf ] && echo 5000 || echo 500)}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
HARD_NOFILE="$(ulimit -Hn)"
[ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt "$NOFILE" ] && NOFILE="$HARD_NOFILE"

# versions: what machine.txt lists after the kernel (see machine_txt): memory, OS, the builds
# measured and the settings of this sitting.
# shellcheck disable=SC2317,SC2329  # run through machine_txt
versions() {
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    grep -qw hypervisor /proc/cpuinfo && echo "virtual machine: yes (hypervisor flag)"
    # shellcheck disable=SC1091
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    echo "a-chat: $("$BIN" --version) ($BIN)"
    [ -n "$BASELINE" ] && echo "a-chat baseline: $("$BASELINE" --version) ($BASELINE)"
    echo "a-chat commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "redis: $(redis-server --version)"
    echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
    echo "syscall counter: $COUNTER"
    echo "perf instructions: $(perf stat -x, -e instructions true 2>&1 | grep -o '<not supported>\|^[0-9]*' | head -1)"
}
machine_txt versions

# ---------------------------------------------------------------- 3. the servers
SERVER_PID=""
SERVER_ADDR=""

# start_achat BIN NAME: a fresh a-chat on a free loopback port (port 0, read from its log).
start_achat() {
    cat >"$RESULTS/a-chat.toml" <<'EOF'
[server]
listen = "127.0.0.1:0"
max_connections = 19000

[limits]
# a-chat bench measures the server at full speed, not the per-client rate limit
messages_per_second = 0

[log]
level = "info"
EOF
    launch_achat "$1" "$2"
}

# start_redis NAME: a fresh redis-server on a free loopback port, no persistence.
start_redis() { launch_redis "$1" --port; }

# start TARGET NAME: a fresh server of that target.
start() {
    if [ "${PROTO[$1]}" = redis ]; then
        start_redis "$2"
    else
        start_achat "${SERVER_BIN[$1]}" "$1-$2"
    fi
}

# bench STEP TARGET RUN ADDR PID ARGS...: one run of a-chat bench, its JSON in the results.
bench() {
    local step="$1" target="$2" run="$3" addr="$4" pid="$5"
    shift 5
    bench_run "$step" "$target" "$run" "${WRAP[@]}" "$BIN" bench --target "${PROTO[$target]}" \
        --addr "$addr" --pid "$pid" --json -q "$@" || [ "$target" = baseline ] || FAILED=1
}

# What a run's progress line says of it (see bench_run).
SUMMARY_PY="$(cat <<'EOF'
w = d["workload"]
ms = lambda v: "—" if v is None else f"{v * 1000:.0f} ms"
if w == "storm":
    parts = [f'{d["logged_in"]}/{d["clients"]} logged in, all in {ms(d.get("all_logged_in_s"))}',
             f'connect-to-login p50 {l.get("p50", 0)/1e6:.0f} ms p99 {l.get("p99", 0)/1e6:.0f} ms',
             f'ListenOverflows +{d.get("TcpExtListenOverflows")} SynRetrans +{d.get("TcpExtTCPSynRetrans")}']
elif w == "burst":
    if d.get("burst_s_median") is None:
        parts = ["no round completed"]
    else:
        parts = [f'burst median {ms(d["burst_s_median"])} ({ms(d["burst_s_min"])}–{ms(d["burst_s_max"])})']
    parts.append(f'readers cut off: {d.get("readers_disconnected")}')
elif w == "idle":
    parts = [f'{d["confirmed"]} logged in']
else:
    parts = timed()
if d.get("server_cpu_ns_per_delivery") is not None:
    parts.append(f'server {d["server_cpu_ns_per_delivery"]/1000:.2f} µs/delivery')
if d.get("server_rss_kib_per_conn") is not None:
    parts.append(f'{d["server_rss_kib_per_conn"]:.2f} KiB/conn')
if d["ok"]:
    parts.append("checks ok")
else:
    why = [f"{k.replace('_', ' ')} {d[k]}" for k in ("lost", "duplicates", "reordered", "closed",
           "readers_disconnected", "senders_closed", "failed", "timed_out") if d.get(k)]
    parts.append(f'CHECKS FAILED ({", ".join(why) or "see the JSON"})')
print(", ".join(parts))
EOF
)"

# The system calls counted one by one besides the total (raw_syscalls:sys_enter). Each
# tracepoint costs perf time to switch on and off (all 700 of syscalls:sys_enter_* take
# about 15 s here), so only the ones a chat server spends its calls on.
SYSCALL_EVENTS=raw_syscalls:sys_enter
for s in read readv recvfrom recvmsg write writev sendto sendmsg epoll_wait epoll_pwait \
    epoll_ctl futex sched_yield timerfd_settime; do
    SYSCALL_EVENTS="$SYSCALL_EVENTS,syscalls:sys_enter_$s"
done

# count_syscalls TARGET RUN: direct with -n SYSCALL_MSGS while perf or strace counts the
# server's system calls. perf counts for exactly as long as the bench runs (`perf stat -p
# PID -- bench ...`); strace is attached before the bench starts and detached after it.
# shellcheck disable=SC2329  # run through each_run
count_syscalls() {
    local target="$1" run="$2" cpid
    local out="$RESULTS/syscalls-$target-$run.txt"
    if [ "$COUNTER" = perf ]; then
        WRAP=(perf stat -x ',' -e "$SYSCALL_EVENTS" -p "${PID[$target]}" -o "$out" --)
        bench syscalls "$target" "$run" "${ADDR[$target]}" "${PID[$target]}" direct \
            -n "$SYSCALL_MSGS" -d 30s
        WRAP=()
        return
    fi
    strace -c -f -p "${PID[$target]}" -o "$out" 2>/dev/null &
    cpid=$!
    PIDS+=("$cpid")
    sleep 1 # attaching takes a moment
    bench syscalls "$target" "$run" "${ADDR[$target]}" "${PID[$target]}" direct \
        -n "$SYSCALL_MSGS" -d 30s
    # strace detaches and writes its summary on SIGTERM (a background job ignores SIGINT).
    stop_pid TERM "$cpid"
    forget_pid "$cpid"
}

# ---------------------------------------------------------------- 4. the runs
# shellcheck disable=SC2119  # no note after the addresses: both servers are plain TCP
start_long_lived

say "step 4a: direct, 100 clients, 64-byte messages, 64 in flight, $DURATION, $RUNS runs each"
# A first short run warms both servers up (threads, allocator), and is not counted.
for t in "${TARGETS[@]}"; do
    "$BIN" bench --target "${PROTO[$t]}" --addr "${ADDR[$t]}" -q -d 1s direct >/dev/null 2>&1
done
each_run bench_on direct -d "$DURATION" direct

say "step 4b: fanout 10, $DURATION, $RUNS runs each"
each_run bench_on fanout -d "$DURATION" fanout 10

say "step 4c: system calls per delivery (direct, -n $SYSCALL_MSGS per client, counted by $COUNTER), $RUNS runs each"
each_run count_syscalls

say "step 4d: latency at a fixed 20000 messages/s (open loop), $DURATION, $RUNS runs each"
each_run bench_on rate -d "$DURATION" rate 20000

say "step 4e: bursts, 2 readers, 30 senders x 1 MiB of 2048-byte lines, $BURST_ROUNDS rounds, $RUNS runs each"
# A reader cut off (an error:/notice: line or EOF) fails the run: that is what the bursts
# test. -d bounds one round.
each_run bench_on burst -d 10s burst --senders 30 --burst-bytes 1MiB --rounds "$BURST_ROUNDS"

stop_long_lived

say "step 4f: RSS per idle logged-in connection, $IDLE connections, a fresh server each run"
each_run bench_fresh idle -d 1s idle "$IDLE"

say "step 4g: reconnect storm, $STORM clients at once, a fresh server each run, $RUNS runs each"
# A fresh server each run, so that no earlier connection is still being closed or
# counted. The bench's own file limit was raised above (ulimit -n), the servers' is NOFILE.
each_run bench_fresh storm --connect-timeout 10s storm "$STORM" --concurrency 2048

say "step 5: the largest connection count held: idle $MAX_CONNS (servers' RLIMIT_NOFILE $NOFILE)"
for t in "${TARGETS[@]}"; do
    start "$t" max
    bench max "$t" 1 "$SERVER_ADDR" "$SERVER_PID" -d 1s idle "$MAX_CONNS"
    stop_server
done

# ---------------------------------------------------------------- 6. the table
say "step 6: the table (raw results in $RESULTS)"
python3 - "$RESULTS" "$COUNTER" "$IDLE" "$MAX_CONNS" "$STORM" "$BURST_ROUNDS" "${TARGETS[@]}" \
    <<'EOF' | tee "$RESULTS/table.md"
import glob, json, os, statistics, sys

res, counter, idle, most, storm, rounds = sys.argv[1:7]
targets = sys.argv[7:]
title = {"achat": "a-chat", "baseline": "a-chat baseline", "redis": "Redis"}

def runs(step, target):
    out = []
    for f in sorted(glob.glob(f"{res}/{step}-{target}-*.json")):
        try:
            out.append(json.load(open(f)))
        except Exception:
            pass
    return out

def syscall_counts(target):
    """One dict per run: syscall name (or "total") -> calls per delivered message."""
    out = []
    for f in sorted(glob.glob(f"{res}/syscalls-{target}-*.txt")):
        run = f.rsplit("-", 1)[1].split(".")[0]
        try:
            d = json.load(open(f"{res}/syscalls-{target}-{run}.json"))
        except Exception:
            continue
        if not d.get("delivered"):
            continue
        counts = {}
        for line in open(f):
            if counter == "perf":
                p = line.strip().split(",")
                if len(p) > 2 and p[0].isdigit():
                    if p[2] == "raw_syscalls:sys_enter":
                        counts["total"] = int(p[0])
                    elif p[2].startswith("syscalls:sys_enter_"):
                        counts[p[2][len("syscalls:sys_enter_"):]] = int(p[0])
            else:
                p = line.split()
                if len(p) > 4 and p[0][0].isdigit() and p[3].isdigit():
                    counts["total" if p[-1] == "total" else p[-1]] = int(p[3])
        if "total" in counts:
            out.append({k: v / d["delivered"] for k, v in counts.items()})
    return out

def syscalls(target):
    return [c["total"] for c in syscall_counts(target)]

def fmt(vals, f):
    if not vals:
        return "—"
    m = statistics.median(vals)
    if len(vals) == 1:
        return f(m)
    return f"{f(m)} ({f(min(vals))}–{f(max(vals))})"

def ratio(a, b):
    if not a or not b:
        return ""
    x, y = statistics.median(a), statistics.median(b)
    if not y or not x:
        return ""
    return f"{x / y:.2f}×"

def col(step, target, key):
    return [key(d) for d in runs(step, target) if key(d) is not None]

k = lambda v: f"{v / 1000:.0f}k"
us = lambda v: f"{v / 1000:.2f}"
ms = lambda v: f"{v / 1e6:.2f}"
f2 = lambda v: f"{v:.3f}"
f1 = lambda v: f"{v:.2f}"

rows = [
    ("direct, 100 clients, 64 B, 64 in flight: deliveries/s", "direct", lambda d: d["delivered_per_s"], k),
    ("fan-out to 10 recipients: deliveries/s", "fanout", lambda d: d["delivered_per_s"], k),
    ("server CPU per delivered message (direct), µs", "direct", lambda d: d.get("server_cpu_ns_per_delivery"), us),
    ("server CPU per delivered message (fan-out 10), µs", "fanout", lambda d: d.get("server_cpu_ns_per_delivery"), us),
    (f"syscalls per delivered message (direct, counted by {counter})", None, None, f2),
    ("latency at 20k msgs/s, p50, ms", "rate", lambda d: d["latency_ns"]["p50"], ms),
    ("latency at 20k msgs/s, p99, ms", "rate", lambda d: d["latency_ns"]["p99"], ms),
    (f"RSS per idle logged-in connection ({idle} held), KiB", "idle", lambda d: d.get("server_rss_kib_per_conn"), f1),
    (f"logged-in connections held (of {most} tried)", "max", lambda d: d["confirmed"], str),
    (f"storm, {storm} clients at once (fresh server): time until all logged in, s", "storm",
     lambda d: d.get("all_logged_in_s"), f1),
    ("storm: connect-to-login p99, ms", "storm", lambda d: (d.get("latency_ns") or {}).get("p99"),
     lambda v: f"{v / 1e6:.0f}"),
    ("storm: kernel ListenOverflows during the run (whole machine)", "storm",
     lambda d: d.get("TcpExtListenOverflows"), lambda v: f"{v:.0f}"),
    (f"burst, 2 readers, 30 senders × 1 MiB, {rounds} rounds: median burst time, ms", "burst",
     lambda d: d["burst_s_median"] * 1000 if d.get("burst_s_median") is not None else None,
     lambda v: f"{v:.0f}"),
    ("burst: runs in which a reader was cut off", "cutoff", None, None),
    ("bench CPU per delivery (direct), µs", "direct", lambda d: d.get("bench_cpu_ns_per_delivery"), us),
]
print("| measure | " + " | ".join(f"{title[t]} median (min–max)" for t in targets)
      + " | a-chat / Redis |")
print("| --- |" + " --- |" * (len(targets) + 1))
for name, step, key, f in rows:
    if step == "cutoff":
        def cut(t):
            rs = runs("burst", t)
            n = sum(1 for d in rs if d.get("readers_disconnected"))
            return f"{n}/{len(rs)}" if rs else "—"
        print(f"| {name} | " + " | ".join(cut(t) for t in targets) + " | |")
        continue
    cols = {t: syscalls(t) if step is None else col(step, t, key) for t in targets}
    print(f"| {name} | " + " | ".join(fmt(cols[t], f) for t in targets)
          + f" | {ratio(cols['achat'], cols['redis'])} |")

loads = {}
checks = {}
for line in open(f"{res}/runs.txt").read().splitlines()[1:]:
    step, target, run, load, rc = line.split()
    loads.setdefault(target, []).append(float(load))
    ok, n = checks.get(target, (0, 0))
    checks[target] = (ok + (rc == "0"), n + 1)
print("| runs passing the checks (no loss, duplicates, reordering, reader cut off; all storm clients logged in) | "
      + " | ".join("%d/%d" % checks.get(t, (0, 0)) for t in targets) + " | |")
print("| 1-min load average before the runs | "
      + " | ".join(fmt(loads.get(t, []), f1) for t in targets) + " | |")

# Which system calls, per delivered message (direct), medians of the runs.
mix = {t: syscall_counts(t) for t in targets}
def med(t, n):
    v = [c.get(n, 0) for c in mix[t]]
    return statistics.median(v) if v else 0
names = sorted({n for t in targets for c in mix[t] for n in c if n != "total"})
names = [n for n in names if any(med(t, n) >= 0.0005 for t in targets)]
names.sort(key=lambda n: -sum(med(t, n) for t in targets))
if names:
    print()
    print(f"System calls per delivered message (direct, {counter}, medians):")
    print()
    print("| syscall | " + " | ".join(title[t] for t in targets) + " |")
    print("| --- |" + " --- |" * len(targets))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{med(t, n):.4f}" for t in targets) + " |")
    if counter == "perf":
        # perf switches the counters on one after another, so the named ones can add up
        # to a hair more than the total: "other" is clamped at 0.
        print("| other | " + " | ".join(
            f"{max(0.0, med(t, 'total') - sum(med(t, n) for n in names)):.4f}" for t in targets) + " |")
EOF

say "step 7: the pictures (gnuplot; BENCHMARKS.md shows the ones of its top sitting)"
if command -v gnuplot >/dev/null; then
    python3 "$ROOT/deploy/plot_sitting.py" "$RESULTS" "$RESULTS/plots" || say "the pictures could not all be drawn"
else
    say "gnuplot is not installed (apt-get install gnuplot-nox): no pictures"
fi

say "done in $((SECONDS - STARTED)) s; raw results in $RESULTS"
exit "$FAILED"

#!/usr/bin/env bash
# deploy/compare-tls.sh: a-chat with TLS against Redis with TLS, side by side on this
# machine, in one sitting, with the same load generator (`a-chat bench --tls`, whose every
# connection makes a full TLS handshake, no session resumption, before it logs in).
#
# Steps (each prints its progress on stderr):
#   1. build the release binary (cargo build --release), unless A_CHAT_BIN is given
#   2. make a throw-away CA and a server certificate for IP 127.0.0.1 with openssl
#      (ECDSA P-256), in the results folder
#   3. start a-chat with only a TLS listener ([server] listen = [], [tls] listen on a free
#      loopback port, max_connections 19000) and redis-server with only a TLS port
#      (--port 0 --tls-port, --tls-auth-clients no, no persistence, maxclients 19000),
#      both with RLIMIT_NOFILE 20000; both negotiate TLS 1.3 with the bench
#   4. measure, for each target, RUNS times (the targets take turns run by run):
#        direct      100 clients, 64-byte messages, 64 in flight: deliveries/s and server
#                    CPU per delivery (the bench's --pid: /proc/PID/stat deltas)
#        fanout 10   each message names 10 recipients: deliveries/s, server CPU/delivery
#        rate 20k    open loop at 20000 messages/s: latency p50 / p99
#        idle        IDLE (10000) logged-in idle TLS connections on a fresh server: RSS per
#                    connection (the handshake's transient memory included, as it stays)
#        storm       STORM (10000) clients connect, handshake and log in at once (up to
#                    2048 in flight) on a fresh server: TLS handshakes plus logins per
#                    second (all of them over the time until the last was in), p99
#   5. print a markdown table: medians and spreads (min–max), a-chat / Redis, and the goals
#      (throughput and CPU at or better than Redis-with-TLS on both workloads, memory per
#      idle TLS connection below Redis's) marked met or not
# All traffic stays on 127.0.0.1. Every run is bounded (a few seconds; a storm at most
# STORM_TIMEOUT). Every process it starts is stopped on exit (by its PID). Raw results
# (one JSON object per run, server logs, the load average before each run) go to the
# results folder. The bench does the client side of every handshake and every record on the
# same cores as the server: on 2 cores its TLS work caps what either server can show.
#
# Environment:
#   A_CHAT_BIN=PATH     use this a-chat binary instead of building one
#   RESULTS=DIR         results folder (default: target/compare-tls/<date>-<time>)
#   RUNS=N              runs per measurement (default 3)
#   DURATION=3s         length of each timed run (direct, fanout, rate)
#   IDLE=N              connections of the idle memory run (default 10000)
#   STORM=N             clients of the storm run (default 10000)
#   STORM_TIMEOUT=60s   the most a storm may take (--connect-timeout)
#   SKIP_INSTALL=1      do not run apt-get (redis-server must then be installed)
# Exit status: 0 when every run passed the bench's checks, 1 otherwise, 2 when the
# comparison could not start.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-3s}"
IDLE="${IDLE:-10000}"
STORM="${STORM:-10000}"
STORM_TIMEOUT="${STORM_TIMEOUT:-60s}"
NOFILE=20000
RESULTS="${RESULTS:-$ROOT/target/compare-tls/$(date +%Y%m%d-%H%M%S)}"
STARTED=$SECONDS
PIDS=()
FAILED=0
TARGETS=(achat redis)

say() { printf '[compare-tls %3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { say "error: $*"; exit 2; }
stop() { stop_pid INT "$1"; }
trap stop_tracked EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. the binary
release_binary
command -v redis-server >/dev/null || install_missing redis-server
for tool in openssl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
HARD_NOFILE="$(ulimit -Hn)"
[ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt "$NOFILE" ] && NOFILE="$HARD_NOFILE"

# ---------------------------------------------------------------- 2. the certificates
say "step 2: a CA and a server certificate for 127.0.0.1 (ECDSA P-256)"
C="$RESULTS/certs"
mkdir -p "$C"
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -keyout "$C/ca.key" -out "$C/ca.pem" -subj "/CN=a-chat compare-tls CA" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$C/server.key" -out "$C/server.csr" -subj "/CN=127.0.0.1" &&
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
            >"$C/ext.cnf" &&
        openssl x509 -req -in "$C/server.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" \
            -CAcreateserial -days 7 -extfile "$C/ext.cnf" -out "$C/server.pem"
} >"$C/openssl.log" 2>&1 || die "openssl failed; see $C/openssl.log"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel: $(uname -r)"
    echo "a-chat: $("$BIN" --version) ($BIN)"
    echo "a-chat commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "redis: $(redis-server --version)"
    echo "openssl: $(openssl version)"
    echo "nofile (servers): $NOFILE"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS/machine.txt"
sed 's/^/    /' "$RESULTS/machine.txt" >&2
echo "step target run load1 rc" >"$RESULTS/runs.txt"

# ---------------------------------------------------------------- 3. the servers
SERVER_PID=""
SERVER_ADDR=""


# start_achat NAME: a fresh a-chat with one TLS listener on a free loopback port.
start_achat() {
    local name="$1" i port=""
    cat >"$RESULTS/a-chat.toml" <<EOF
[server]
listen = []
max_connections = 19000

[log]
level = "info"

[tls]
listen = ["127.0.0.1:0"]
cert = "$C/server.pem"
key = "$C/server.key"
EOF
    (ulimit -n "$NOFILE" && exec "$BIN" server --config "$RESULTS/a-chat.toml") \
        >"$RESULTS/a-chat-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    port="$(listening_port "$RESULTS/a-chat-$name.log" "$SERVER_PID")"
    [ -n "$port" ] || die "a-chat did not start; see $RESULTS/a-chat-$name.log"
    SERVER_ADDR="127.0.0.1:$port"
}

# start_redis NAME: a fresh redis-server with only a TLS port, no persistence.
start_redis() {
    local name="$1" i port
    port="$(free_port)"
    (ulimit -n "$NOFILE" && exec redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
        --tls-cert-file "$C/server.pem" --tls-key-file "$C/server.key" \
        --tls-ca-cert-file "$C/ca.pem" --tls-auth-clients no \
        --protected-mode no --save '' --appendonly no --maxclients 19000) \
        >"$RESULTS/redis-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 100; i++)); do
        grep -q 'Ready to accept connections' "$RESULTS/redis-$name.log" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q 'Ready to accept connections' "$RESULTS/redis-$name.log" ||
        die "redis-server did not start; see $RESULTS/redis-$name.log"
    SERVER_ADDR="127.0.0.1:$port"
}

start() { if [ "$1" = redis ]; then start_redis "$2"; else start_achat "$2"; fi; }
stop_server() {
    stop "$SERVER_PID"
    forget_pid "$SERVER_PID"
    SERVER_PID=""
}

# bench STEP TARGET RUN ADDR PID ARGS...: one run of a-chat bench --tls, its JSON kept.
bench() {
    local step="$1" target="$2" run="$3" addr="$4" pid="$5" rc=0 load summary
    shift 5
    load="$(load1)"
    local out="$RESULTS/$step-$target-$run.json"
    "$BIN" bench --tls --ca "$C/ca.pem" --target "$target" --addr "$addr" --pid "$pid" \
        --json -q "$@" >"$out" 2>"$RESULTS/$step-$target-$run.err" || rc=$?
    echo "$step $target $run $load $rc" >>"$RESULTS/runs.txt"
    [ "$rc" -eq 0 ] || FAILED=1
    summary="$(python3 - "$out" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("no result"); sys.exit()
l = d.get("latency_ns") or {}
if d["workload"] == "storm":
    parts = [f'{d["logged_in"]}/{d["clients"]} in, {d.get("logins_per_s")} handshakes+logins/s',
             f'p99 {l.get("p99", 0)/1e6:.0f} ms', f'{d.get("tls")}']
elif d["workload"] == "idle":
    parts = [f'{d["confirmed"]} logged in, {d.get("server_rss_kib_per_conn")} KiB/conn']
else:
    parts = [f'{d["delivered_per_s"]/1000:.0f}k deliveries/s',
             f'p50 {l["p50"]/1e6:.2f} ms p99 {l["p99"]/1e6:.2f} ms']
    if d.get("server_cpu_ns_per_delivery") is not None:
        parts.append(f'server {d["server_cpu_ns_per_delivery"]/1000:.2f} µs/delivery')
parts.append("checks ok" if d["ok"] else "CHECKS FAILED")
print(", ".join(parts))
EOF
)"
    [ "$rc" -eq 0 ] || summary="$summary [bench exit $rc, see $RESULTS/$step-$target-$run.err]"
    say "  $step $target run $run (load $load): $summary"
}

# ---------------------------------------------------------------- 4. the runs
declare -A ADDR PID
for t in "${TARGETS[@]}"; do
    start "$t" main
    ADDR[$t]="$SERVER_ADDR"
    PID[$t]="$SERVER_PID"
    say "step 3: $t: pid ${PID[$t]} on ${ADDR[$t]} (TLS only)"
done
for t in "${TARGETS[@]}"; do # warm-up, not counted
    "$BIN" bench --tls --ca "$C/ca.pem" --target "$t" --addr "${ADDR[$t]}" -q -d 1s direct \
        >/dev/null 2>&1
done
steps=("direct|-d $DURATION direct" "fanout|-d $DURATION fanout 10" "rate|-d $DURATION rate 20000")
for s in "${steps[@]}"; do
    name="${s%%|*}"
    read -ra args <<<"${s#*|}"
    say "step 4: $name (${args[*]}), $RUNS runs each"
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${TARGETS[@]}"; do
            bench "$name" "$t" "$r" "${ADDR[$t]}" "${PID[$t]}" "${args[@]}"
        done
    done
done
for t in "${TARGETS[@]}"; do
    stop "${PID[$t]}"
    forget_pid "${PID[$t]}"
done

say "step 4: RSS per idle TLS connection, $IDLE connections, a fresh server each run"
for ((r = 1; r <= RUNS; r++)); do
    for t in "${TARGETS[@]}"; do
        start "$t" "idle-$r"
        bench idle "$t" "$r" "$SERVER_ADDR" "$SERVER_PID" -d 1s --connect-timeout 30s idle "$IDLE"
        stop_server
    done
done

say "step 4: TLS storm, $STORM clients at once, a fresh server each run"
for ((r = 1; r <= RUNS; r++)); do
    for t in "${TARGETS[@]}"; do
        start "$t" "storm-$r"
        bench storm "$t" "$r" "$SERVER_ADDR" "$SERVER_PID" --connect-timeout "$STORM_TIMEOUT" \
            storm "$STORM" --concurrency 2048
        stop_server
    done
done

# ---------------------------------------------------------------- 5. the table
say "step 5: the table (raw results in $RESULTS)"
python3 - "$RESULTS" "$IDLE" "$STORM" <<'EOF' | tee "$RESULTS/table.md"
import glob, json, statistics, sys

res, idle, storm = sys.argv[1:4]

def col(step, target, key):
    out = []
    for f in sorted(glob.glob(f"{res}/{step}-{target}-*.json")):
        try:
            v = key(json.load(open(f)))
        except Exception:
            continue
        if v is not None:
            out.append(v)
    return out

def fmt(vals, f):
    if not vals:
        return "—"
    m = statistics.median(vals)
    return f(m) if len(vals) == 1 else f"{f(m)} ({f(min(vals))}–{f(max(vals))})"

k = lambda v: f"{v / 1000:.0f}k"
us = lambda v: f"{v / 1000:.2f}"
ms = lambda v: f"{v / 1e6:.2f}"
f1 = lambda v: f"{v:.1f}"
n0 = lambda v: f"{v:.0f}"
# (measure, step, key, format, goal: "higher"/"lower" is better for a-chat, or None)
rows = [
    ("direct, 100 clients, 64 B, 64 in flight: deliveries/s", "direct",
     lambda d: d["delivered_per_s"], k, "higher"),
    ("fan-out to 10 recipients: deliveries/s", "fanout", lambda d: d["delivered_per_s"], k, "higher"),
    ("server CPU per delivery (direct), µs", "direct",
     lambda d: d.get("server_cpu_ns_per_delivery"), us, "lower"),
    ("server CPU per delivery (fan-out 10), µs", "fanout",
     lambda d: d.get("server_cpu_ns_per_delivery"), us, "lower"),
    ("latency at 20k msgs/s, p50, ms", "rate", lambda d: d["latency_ns"]["p50"], ms, None),
    ("latency at 20k msgs/s, p99, ms", "rate", lambda d: d["latency_ns"]["p99"], ms, None),
    (f"RSS per idle TLS connection ({idle} held, fresh server), KiB", "idle",
     lambda d: d.get("server_rss_kib_per_conn"), f1, "lower"),
    (f"storm, {storm} at once: TLS handshakes plus logins per second", "storm",
     lambda d: d.get("logins_per_s"), n0, None),
    ("storm: connect-to-login p99, ms", "storm",
     lambda d: (d.get("latency_ns") or {}).get("p99"), lambda v: f"{v / 1e6:.0f}", None),
    ("bench CPU per delivery (direct), µs", "direct",
     lambda d: d.get("bench_cpu_ns_per_delivery"), us, None),
]
print("| measure (both over TLS 1.3) | a-chat median (min–max) | Redis median (min–max) "
      "| a-chat / Redis | goal |")
print("| --- | --- | --- | --- | --- |")
for name, step, key, f, goal in rows:
    a, r = col(step, "achat", key), col(step, "redis", key)
    ratio = verdict = ""
    if a and r and statistics.median(r):
        x, y = statistics.median(a), statistics.median(r)
        ratio = f"{x / y:.2f}×"
        if goal == "higher":
            verdict = "met" if x >= y else "NOT met"
        elif goal == "lower":
            verdict = "met" if x < y or (x == y and "CPU" in name) else "NOT met"
    print(f"| {name} | {fmt(a, f)} | {fmt(r, f)} | {ratio} | {verdict} |")
loads, checks = {}, {}
for line in open(f"{res}/runs.txt").read().splitlines()[1:]:
    step, target, run, load, rc = line.split()
    loads.setdefault(target, []).append(float(load))
    ok, n = checks.get(target, (0, 0))
    checks[target] = (ok + (rc == "0"), n + 1)
print("| runs passing the checks | " + " | ".join(
    "%d/%d" % checks.get(t, (0, 0)) for t in ("achat", "redis")) + " | | |")
print("| 1-min load average before the runs | " + " | ".join(
    fmt(loads.get(t, []), lambda v: f"{v:.2f}") for t in ("achat", "redis")) + " | | |")
EOF

say "done in $((SECONDS - STARTED)) s; raw results in $RESULTS"
exit "$FAILED"

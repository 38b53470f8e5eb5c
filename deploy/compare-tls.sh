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

# versions: what machine.txt lists after the machine (see machine_txt): the builds measured
# and the settings of this sitting.
# shellcheck disable=SC2317,SC2329  # run through machine_txt
versions() {
    echo "a-chat: $("$BIN" --version) ($BIN)"
    echo "a-chat commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "redis: $(redis-server --version)"
    echo "openssl: $(openssl version)"
}
machine_txt versions

# ---------------------------------------------------------------- 3. the servers
SERVER_PID=""
SERVER_ADDR=""

# start_achat NAME: a fresh a-chat with one TLS listener on a free loopback port.
start_achat() {
    cat >"$RESULTS/a-chat.toml" <<EOF
[server]
listen = []
max_connections = 19000

[limits]
# a-chat bench measures the server at full speed, not the per-client rate limit
messages_per_second = 0

[log]
level = "info"

[tls]
listen = ["127.0.0.1:0"]
cert = "$C/server.pem"
key = "$C/server.key"
EOF
    launch_achat "$BIN" "$1"
}

# start_redis NAME: a fresh redis-server with only a TLS port, no persistence.
start_redis() {
    launch_redis "$1" --tls-port --port 0 \
        --tls-cert-file "$C/server.pem" --tls-key-file "$C/server.key" \
        --tls-ca-cert-file "$C/ca.pem" --tls-auth-clients no
}

# shellcheck disable=SC2317,SC2329  # run through lib.sh's start_long_lived and bench_fresh
start() { if [ "$1" = redis ]; then start_redis "$2"; else start_achat "$2"; fi; }

# bench STEP TARGET RUN ADDR PID ARGS...: one run of a-chat bench --tls, its JSON kept.
# shellcheck disable=SC2317,SC2329  # run through lib.sh's bench_on and bench_fresh
bench() {
    local step="$1" target="$2" run="$3" addr="$4" pid="$5"
    shift 5
    bench_run "$step" "$target" "$run" "$BIN" bench --tls --ca "$C/ca.pem" --target "$target" \
        --addr "$addr" --pid "$pid" --json -q "$@" || FAILED=1
}

# What a run's progress line says of it (see bench_run).
SUMMARY_PY="$(cat <<'EOF'
if d["workload"] == "storm":
    parts = [f'{d["logged_in"]}/{d["clients"]} in, {d.get("logins_per_s")} handshakes+logins/s',
             f'p99 {l.get("p99", 0)/1e6:.0f} ms', f'{d.get("tls")}']
elif d["workload"] == "idle":
    parts = [f'{d["confirmed"]} logged in, {d.get("server_rss_kib_per_conn")} KiB/conn']
else:
    parts = timed()
    if d.get("server_cpu_ns_per_delivery") is not None:
        parts.append(f'server {d["server_cpu_ns_per_delivery"]/1000:.2f} µs/delivery')
parts.append("checks ok" if d["ok"] else "CHECKS FAILED")
print(", ".join(parts))
EOF
)"

# ---------------------------------------------------------------- 4. the runs
start_long_lived "(TLS only)"
for t in "${TARGETS[@]}"; do # warm-up, not counted
    "$BIN" bench --tls --ca "$C/ca.pem" --target "$t" --addr "${ADDR[$t]}" -q -d 1s direct \
        >/dev/null 2>&1
done
steps=("direct|-d $DURATION direct" "fanout|-d $DURATION fanout 10" "rate|-d $DURATION rate 20000")
for s in "${steps[@]}"; do
    name="${s%%|*}"
    read -ra args <<<"${s#*|}"
    say "step 4: $name (${args[*]}), $RUNS runs each"
    each_run bench_on "$name" "${args[@]}"
done
stop_long_lived

say "step 4: RSS per idle TLS connection, $IDLE connections, a fresh server each run"
each_run bench_fresh idle -d 1s --connect-timeout 30s idle "$IDLE"

say "step 4: TLS storm, $STORM clients at once, a fresh server each run"
each_run bench_fresh storm --connect-timeout "$STORM_TIMEOUT" storm "$STORM" --concurrency 2048

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

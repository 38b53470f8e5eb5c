#!/usr/bin/env bash
# deploy/compare-cluster.sh: three a-chat nodes sharing one login namespace through Redis,
# against one a-chat node and against Redis pub/sub alone, side by side on this machine,
# in one sitting, with the same load generator (`a-chat bench --json -q`, which also
# speaks Redis SUBSCRIBE/PUBLISH) and the same workloads.
#
# Steps (each prints its progress on stderr):
#   1. build the release binary (cargo build --release), unless A_CHAT_BIN is given
#   2. install redis-server and python3 with apt-get if one is missing
#   3. wait (at most LOAD_WAIT, 600 s) until the 1-minute load average is below LOAD_MAX
#      (1.0), printing it every 30 s: the figures mean little while something else runs
#   4. start the three targets, each on free loopback ports, all with RLIMIT_NOFILE 20000:
#        redis     one redis-server (no persistence, maxclients 19000), measured alone
#        node      one a-chat node, no [cluster] (max_connections 19000, [log] level
#                  "warn", [admin] listen for /readyz)
#        cluster   a second redis-server (as above) and three a-chat nodes n1..n3 with
#                  [cluster] redis = that server, lease 10s, each as `node` above
#   5. measure, RUNS times, the targets taking turns run by run:
#        direct      100 clients, 64-byte messages, 64 in flight per client: deliveries/s,
#                    latency, server CPU per delivery (the bench's --pid, summed over the
#                    nodes). The cluster run gives the bench the three addresses (client i
#                    on node i mod 3; direct rounds 100 clients up to 102 so that every
#                    delivery crosses nodes: its JSON's cross_node_share must be 1)
#        fanout 10   each message names 10 recipients; the cluster runs `fanout 10
#                    --cross-node` (the 10 recipients are on the other two nodes)
#        direct 256  direct at --inflight 256, Redis and the cluster only: a longer path
#                    needs a wider window to fill it, and this row shows how much
#      For every cluster run, also Redis's CPU (/proc/PID/stat, from before the bench
#      starts to after it ends, so its login and drain are included) and each node's
#      achat_cluster_* counters from /metrics before and after: deliveries per publish.
#   6. print a markdown table: medians and spreads (min–max) of the runs, and whether the
#      cluster's direct deliveries/s reach Redis pub/sub's own (the scale-out goal)
# All traffic stays on 127.0.0.1. Every run is bounded (DURATION plus the bench's 5 s
# grace at most). Every process the script starts is stopped on exit (by its PID). Raw
# results (one JSON object per run, the cluster counters of each run, server logs, the
# load average before each run) go to the results folder. The whole script takes about
# 90 s once the binary is built and the machine is quiet.
#
# Everything shares this machine's cores: on 2 cores, the three nodes, their Redis and the
# bench compete for the same two, so the cluster's figures are what the cluster's whole
# path costs on one machine, not what three machines would do.
#
# Environment:
#   A_CHAT_BIN=PATH     use this a-chat binary instead of building one
#   RESULTS=DIR         results folder (default: target/compare-cluster/<date>-<time>)
#   RUNS=N              runs per measurement (default 3)
#   DURATION=3s         length of each timed run
#   LOAD_MAX=1.0        the 1-minute load average to wait for before the sitting
#   LOAD_WAIT=600       the most seconds to wait for it (then the sitting runs anyway,
#                       and machine.txt says at what load)
#   SKIP_INSTALL=1      do not run apt-get (redis-server must then be installed)
# Exit status: 0 when every run passed the bench's checks (no loss, duplicates,
# reordering, misrouting, server errors) and every cluster run crossed nodes with every
# delivery, 1 otherwise, 2 when the comparison could not start.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-3s}"
LOAD_MAX="${LOAD_MAX:-1.0}"
LOAD_WAIT="${LOAD_WAIT:-600}"
NODES=3
NOFILE=20000
RESULTS="${RESULTS:-$ROOT/target/compare-cluster/$(date +%Y%m%d-%H%M%S)}"
STARTED=$SECONDS
PIDS=()
FAILED=0
TARGETS=(redis node cluster)

say() { printf '[compare-cluster %3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { say "error: $*"; exit 2; }

trap stop_tracked EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. the binary
release_binary

# ---------------------------------------------------------------- 2. the tools
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    install_missing "${missing[@]}"
else
    say "step 2: redis-server and python3 are installed"
fi
command -v redis-server >/dev/null || die "redis-server is still missing"
command -v python3 >/dev/null || die "python3 is still missing"
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
HARD_NOFILE="$(ulimit -Hn)"
[ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt "$NOFILE" ] && NOFILE="$HARD_NOFILE"
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- 3. a quiet machine
# busiest N: the N processes using the most CPU over the last half second (top's second
# frame; its first, and ps, give averages over each process's life).
busiest() {
    top -bn2 -d0.5 -o %CPU 2>/dev/null |
        awk -v n="$1" 'f == 2 && n-- > 0 { printf "%s (%s%%) ", $12, $9 } /^ *PID/ { f++ }'
}
say "step 3: waiting (at most ${LOAD_WAIT} s) for the 1-minute load average to fall below $LOAD_MAX"
WAIT_START=$SECONDS
while :; do
    load="$(load1)"
    if awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }'; then
        say "step 3: load average $load, below $LOAD_MAX after $((SECONDS - WAIT_START)) s"
        break
    fi
    if [ $((SECONDS - WAIT_START)) -ge "$LOAD_WAIT" ]; then
        say "step 3: load average still $load after $LOAD_WAIT s: the sitting runs anyway; its figures share the cores with whatever else runs"
        say "    the busiest processes now: $(busiest 3)"
        break
    fi
    if [ $(((SECONDS - WAIT_START) % 30)) -lt 5 ]; then
        say "    load average $load after $((SECONDS - WAIT_START)) s; busiest now: $(busiest 2)"
    fi
    sleep 5
done

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel: $(uname -r)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    grep -qw hypervisor /proc/cpuinfo && echo "virtual machine: yes (hypervisor flag)"
    # shellcheck disable=SC1091
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    echo "a-chat: $("$BIN" --version) ($BIN)"
    echo "a-chat commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "redis: $(redis-server --version)"
    echo "nofile (servers): $NOFILE"
    echo "load wait: $((SECONDS - WAIT_START)) s, for load1 < $LOAD_MAX"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS/machine.txt"
sed 's/^/    /' "$RESULTS/machine.txt" >&2
echo "step target run load1 rc" >"$RESULTS/runs.txt"

# ---------------------------------------------------------------- 4. the servers
# shellcheck disable=SC2317,SC2329  # run through wait_until
# answers PORT REQUEST EXPECTED: the first line PORT answers to REQUEST starts with EXPECTED.
answers() {
    local port="$1" request="$2" expected="$3" line
    line="$( {
        exec 3<>"/dev/tcp/127.0.0.1/$port" && printf '%b' "$request" >&3 && IFS= read -r -t 1 l <&3
        printf '%s' "${l:-}"
    } 2>/dev/null)" || true
    [[ "$line" == "$expected"* ]]
}

# wait_until WHAT PID CHECK...: polls CHECK every 100 ms until it succeeds; dies if PID
# exits first or 10 s pass.
wait_until() {
    local what="$1" pid="$2" log="$3" i
    shift 3
    for ((i = 0; i < 100; i++)); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    show "$log"
    die "$what did not start (see $log)"
}

# start_redis NAME: a fresh redis-server on a free loopback port, no persistence; sets
# REDIS_PID and REDIS_PORT.
start_redis() {
    local name="$1"
    REDIS_PORT="$(free_port)"
    (ulimit -n "$NOFILE" && exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --protected-mode no --save '' --appendonly no --maxclients 19000) \
        >"$RESULTS/redis-$name.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_until "redis-server ($name)" "$REDIS_PID" "$RESULTS/redis-$name.log" \
        answers "$REDIS_PORT" 'PING\r\n' '+PONG'
}

# start_node NAME [REDIS_URL]: a fresh a-chat node on free loopback ports (chat and admin),
# in the cluster of REDIS_URL if given; sets NODE_PID, NODE_PORT and NODE_ADMIN. Ready
# when /readyz answers 200 (for a cluster node: joined, subscribed and snapshotted).
start_node() {
    local name="$1" redis="${2:-}" conf="$RESULTS/$1.toml"
    NODE_PORT="$(free_port)"
    NODE_ADMIN="$(free_port)"
    {
        cat <<EOF
# a-chat node $name of deploy/compare-cluster.sh
[server]
listen = "127.0.0.1:$NODE_PORT"
max_connections = 19000

[limits]
# a-chat bench measures the server at full speed, not the per-client rate limit
messages_per_second = 0

[log]
level = "warn"

[admin]
listen = "127.0.0.1:$NODE_ADMIN"
EOF
        if [ -n "$redis" ]; then
            cat <<EOF

[cluster]
redis = "$redis"
node_id = "$name"
lease = "10s"
EOF
        fi
    } >"$conf"
    "$BIN" check-config --quiet "$conf" >"$RESULTS/$name.check" 2>&1 ||
        { show "$RESULTS/$name.check"; die "node $name: its configuration fails check-config"; }
    (ulimit -n "$NOFILE" && exec "$BIN" server --config "$conf") >"$RESULTS/$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_until "a-chat node $name (/readyz)" "$NODE_PID" "$RESULTS/$name.log" \
        answers "$NODE_ADMIN" 'GET /readyz HTTP/1.0\r\n\r\n' 'HTTP/1.1 200'
}

# The bench's target options of each target: its protocol, its addresses, its PIDs.
declare -A OPTS
start_redis alone
OPTS[redis]="--target redis --addr 127.0.0.1:$REDIS_PORT --pid $REDIS_PID"
say "step 4: redis (alone): pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"

start_node single
OPTS[node]="--addr 127.0.0.1:$NODE_PORT --pid $NODE_PID"
say "step 4: node (one a-chat, no cluster): pid $NODE_PID on 127.0.0.1:$NODE_PORT"

start_redis cluster
CLUSTER_REDIS_PID="$REDIS_PID"
CLUSTER_REDIS="redis://127.0.0.1:$REDIS_PORT/"
say "step 4: cluster: redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
OPTS[cluster]=""
ADMINS=()
for ((n = 1; n <= NODES; n++)); do
    start_node "n$n" "$CLUSTER_REDIS"
    OPTS[cluster]="${OPTS[cluster]} --addr 127.0.0.1:$NODE_PORT --pid $NODE_PID"
    ADMINS+=("$NODE_ADMIN")
    say "step 4: cluster: node n$n pid $NODE_PID on 127.0.0.1:$NODE_PORT, admin 127.0.0.1:$NODE_ADMIN, /readyz 200"
done
echo "cluster admin ports: ${ADMINS[*]}" >>"$RESULTS/machine.txt"

# ---------------------------------------------------------------- 5. the runs
# cluster_state FILE: the cluster Redis's CPU ticks and each node's achat_cluster_*
# counters, as one JSON object.
cluster_state() {
    python3 - "$1" "$CLUSTER_REDIS_PID" "$CLK_TCK" "${ADMINS[@]}" <<'EOF'
import json, sys, urllib.request
out, pid, tck, admins = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
state = {"redis_cpu_s": (int(stat[11]) + int(stat[12])) / tck, "nodes": []}
for port in admins:
    counters = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception as e:
        counters["error"] = str(e)
        text = ""
    for line in text.splitlines():
        if line.startswith("achat_cluster_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                counters[name] = float(value)
            except ValueError:
                pass
    state["nodes"].append(counters)
json.dump(state, open(out, "w"))
EOF
}

# bench STEP TARGET RUN BENCH-ARGS...: one run of a-chat bench, its JSON in the results.
bench() {
    local step="$1" target="$2" run="$3" rc=0 load summary
    shift 3
    local out="$RESULTS/$step-$target-$run"
    load="$(load1)"
    [ "$target" = cluster ] && cluster_state "$out.before.json"
    # shellcheck disable=SC2086  # OPTS holds several options
    "$BIN" bench ${OPTS[$target]} --json -q "$@" >"$out.json" 2>"$out.err" || rc=$?
    [ "$target" = cluster ] && cluster_state "$out.after.json"
    echo "$step $target $run $load $rc" >>"$RESULTS/runs.txt"
    [ "$rc" -eq 0 ] || FAILED=1
    summary="$(python3 - "$out" "$target" <<'EOF'
import json, sys
out, target = sys.argv[1:3]
try:
    d = json.load(open(out + ".json"))
except Exception:
    print("no result"); sys.exit()
l = d.get("latency_ns") or {}
parts = [f'{d["delivered_per_s"]/1000:.0f}k deliveries/s',
         f'p50 {l["p50"]/1e6:.2f} ms p99 {l["p99"]/1e6:.2f} ms']
if d.get("server_cpu_ns_per_delivery") is not None:
    parts.append(f'server {d["server_cpu_ns_per_delivery"]/1000:.2f} µs/delivery')
if target == "cluster":
    try:
        a, b = json.load(open(out + ".before.json")), json.load(open(out + ".after.json"))
        pub = sum(y.get("achat_cluster_publishes_total", 0) - x.get("achat_cluster_publishes_total", 0)
                  for x, y in zip(a["nodes"], b["nodes"]))
        dout = sum(y.get('achat_cluster_deliveries_total{direction="out"}', 0)
                   - x.get('achat_cluster_deliveries_total{direction="out"}', 0)
                   for x, y in zip(a["nodes"], b["nodes"]))
        rcpu = b["redis_cpu_s"] - a["redis_cpu_s"]
        if d.get("delivered"):
            parts.append(f'+ Redis {rcpu * 1e6 / d["delivered"]:.2f} µs/delivery')
        if pub:
            parts.append(f'{dout / pub:.0f} deliveries/publish ({pub:.0f} publishes)')
    except Exception as e:
        parts.append(f"no cluster counters ({e})")
    parts.append(f'cross-node share {d.get("cross_node_share")}')
if d["ok"]:
    parts.append("checks ok")
else:
    why = [f"{k.replace('_', ' ')} {d[k]}" for k in ("lost", "duplicates", "reordered", "misrouted",
           "server_errors", "closed", "connect_failed") if d.get(k)]
    parts.append(f'CHECKS FAILED ({", ".join(why) or "see the JSON"})')
print(", ".join(parts))
EOF
)"
    [ "$rc" -eq 0 ] || summary="$summary [bench exit $rc, see $out.err]"
    if [ "$target" = cluster ] && ! python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1])).get("cross_node_share") != 1)' "$out.json" 2>/dev/null; then
        FAILED=1
        summary="$summary [NOT EVERY DELIVERY CROSSED NODES]"
    fi
    say "  $step $target run $run (load $load): $summary"
}

# each_run STEP WHICH-TARGETS -- BENCH-ARGS...: RUNS runs for each target, taking turns;
# the cluster's fan-out gets --cross-node.
each_run() {
    local step="$1" r t
    local -a targets=()
    shift
    while [ "$1" != -- ]; do targets+=("$1"); shift; done
    shift
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${targets[@]}"; do
            if [ "$t" = cluster ] && [ "${*: -2:1}" = fanout ]; then
                bench "$step" "$t" "$r" "$@" --cross-node
            else
                bench "$step" "$t" "$r" "$@"
            fi
        done
    done
}

say "step 5: warming up each target (1 s direct, not counted)"
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    "$BIN" bench ${OPTS[$t]} -q -d 1s direct >/dev/null 2>"$RESULTS/warmup-$t.err" ||
        say "  warm-up of $t failed (see $RESULTS/warmup-$t.err)"
done

say "step 5a: direct, 100 clients, 64-byte messages, 64 in flight, $DURATION, $RUNS runs each"
each_run direct "${TARGETS[@]}" -- -d "$DURATION" direct
say "step 5b: fanout 10 (the cluster: --cross-node), $DURATION, $RUNS runs each"
each_run fanout "${TARGETS[@]}" -- -d "$DURATION" fanout 10
say "step 5c: direct at --inflight 256, Redis and the cluster, $DURATION, $RUNS runs each"
each_run direct256 redis cluster -- -d "$DURATION" --inflight 256 direct

# ---------------------------------------------------------------- 6. the table
say "step 6: the table (raw results in $RESULTS)"
python3 - "$RESULTS" <<'EOF' | tee "$RESULTS/table.md"
import glob, json, statistics, sys

res = sys.argv[1]
targets = ["redis", "node", "cluster"]
title = {"redis": "Redis pub/sub alone", "node": "a-chat, one node",
         "cluster": "a-chat, 3 nodes + Redis"}
OUT = 'achat_cluster_deliveries_total{direction="out"}'

def runs(step, target):
    out = []
    for f in sorted(glob.glob(f"{res}/{step}-{target}-*.json")):
        if f.endswith((".before.json", ".after.json")):
            continue
        try:
            d = json.load(open(f))
        except Exception:
            continue
        base = f[:-len(".json")]
        try:
            a, b = json.load(open(base + ".before.json")), json.load(open(base + ".after.json"))
            d["_redis_cpu_s"] = b["redis_cpu_s"] - a["redis_cpu_s"]
            delta = lambda k: sum(y.get(k, 0) - x.get(k, 0) for x, y in zip(a["nodes"], b["nodes"]))
            d["_publishes"] = delta("achat_cluster_publishes_total")
            d["_deliveries_out"] = delta(OUT)
            d["_dropped"] = sum(delta(k) for k in b["nodes"][0] if k.startswith("achat_cluster_dropped_total"))
        except Exception:
            pass
        out.append(d)
    return out

def fmt(vals, f):
    if not vals:
        return "—"
    m = statistics.median(vals)
    if len(vals) == 1:
        return f(m)
    return f"{f(m)} ({f(min(vals))}–{f(max(vals))})"

def col(step, target, key):
    vals = []
    for d in runs(step, target):
        try:
            v = key(d)
        except (KeyError, TypeError, ZeroDivisionError):
            v = None
        if v is not None:
            vals.append(v)
    return vals

def ratio(a, b):
    if not a or not b:
        return ""
    x, y = statistics.median(a), statistics.median(b)
    return f"{x / y:.2f}×" if x and y else ""

k = lambda v: f"{v / 1000:.0f}k"
us = lambda v: f"{v / 1000:.2f}"
ms = lambda v: f"{v / 1e6:.2f}"
n0 = lambda v: f"{v:.0f}"
f2 = lambda v: f"{v:.2f}"

rate = lambda d: d["delivered_per_s"]
cpu = lambda d: d.get("server_cpu_ns_per_delivery")
redis_cpu = lambda d: d["_redis_cpu_s"] * 1e9 / d["delivered"] if "_redis_cpu_s" in d else None
both_cpu = lambda d: (d["server_cpu_ns_per_delivery"] + redis_cpu(d)
                      if "_redis_cpu_s" in d and d.get("server_cpu_ns_per_delivery") is not None else None)
per_pub = lambda d: d["_deliveries_out"] / d["_publishes"] if d.get("_publishes") else None
share = lambda d: d.get("cross_node_share") if d.get("addresses", 1) > 1 else None
drops = lambda d: d["_dropped"] if "_dropped" in d else None
clients = lambda d: d.get("clients")

rows = [
    ("direct, 100 clients, 64 B, 64 in flight: deliveries/s", "direct", rate, k, True),
    ("fan-out to 10 recipients (cluster: --cross-node): deliveries/s", "fanout", rate, k, True),
    ("direct at --inflight 256: deliveries/s", "direct256", rate, k, True),
    ("direct, 64 in flight: latency p50, ms", "direct", lambda d: d["latency_ns"]["p50"], ms, True),
    ("direct, 64 in flight: latency p99, ms", "direct", lambda d: d["latency_ns"]["p99"], ms, True),
    ("direct at --inflight 256: latency p50, ms", "direct256", lambda d: d["latency_ns"]["p50"], ms, True),
    ("server CPU per delivery, direct, µs (a-chat: the nodes' sum)", "direct", cpu, us, True),
    ("server CPU per delivery, fan-out 10, µs (a-chat: the nodes' sum)", "fanout", cpu, us, True),
    ("cluster: its Redis's CPU per delivery, direct, µs (whole bench run)", "direct", redis_cpu, us, False),
    ("cluster: its Redis's CPU per delivery, fan-out 10, µs (whole bench run)", "fanout", redis_cpu, us, False),
    ("cluster: nodes + Redis CPU per delivery, direct, µs", "direct", both_cpu, us, False),
    ("cluster: nodes + Redis CPU per delivery, fan-out 10, µs", "fanout", both_cpu, us, False),
    ("cluster: deliveries per publish (achat_cluster_*), direct", "direct", per_pub, n0, False),
    ("cluster: deliveries per publish, fan-out 10", "fanout", per_pub, n0, False),
    ("cluster: deliveries per publish, direct at --inflight 256", "direct256", per_pub, n0, False),
    ("share of deliveries crossing nodes (bench's cross_node_share), direct", "direct", share, f2, False),
    ("share of deliveries crossing nodes, fan-out 10", "fanout", share, f2, False),
    ("cluster: cross-node deliveries dropped (achat_cluster_dropped_total), direct", "direct", drops, n0, False),
    ("cluster: cross-node deliveries dropped, fan-out 10", "fanout", drops, n0, False),
    ("clients (direct; the cluster's rounded up to a multiple of 3)", "direct", clients, n0, False),
    ("bench CPU per delivery, direct, µs", "direct", lambda d: d.get("bench_cpu_ns_per_delivery"), us, True),
]
print("| measure | " + " | ".join(f"{title[t]} median (min–max)" for t in targets)
      + " | cluster / Redis |")
print("| --- |" + " --- |" * (len(targets) + 1))
for name, step, key, f, both in rows:
    cols = {t: col(step, t, key) for t in targets}
    print(f"| {name} | " + " | ".join(fmt(cols[t], f) for t in targets)
          + f" | {ratio(cols['cluster'], cols['redis']) if both else ''} |")

loads, checks = {}, {}
for line in open(f"{res}/runs.txt").read().splitlines()[1:]:
    step, target, run, load, rc = line.split()
    loads.setdefault(target, []).append(float(load))
    ok, n = checks.get(target, (0, 0))
    checks[target] = (ok + (rc == "0"), n + 1)
print("| runs passing the checks, all steps (no loss, duplicates, reordering, misrouting, server errors) | "
      + " | ".join("%d/%d" % checks.get(t, (0, 0)) for t in targets) + " | |")
print("| 1-min load average before the runs | "
      + " | ".join(fmt(loads.get(t, []), f2) for t in targets) + " | |")

# The scale-out goal: the cluster's cross-node direct deliveries/s at or above Redis
# pub/sub's own direct figure, nothing lost.
print()
for step, what in (("direct", "64 in flight (the default)"), ("direct256", "--inflight 256")):
    c, r = col(step, "cluster", rate), col(step, "redis", rate)
    lost = sum(1 for d in runs(step, "cluster") if not d.get("ok") or d.get("cross_node_share") != 1)
    if not c or not r:
        print(f"Goal at {what}: not measured.")
        continue
    mc, mr = statistics.median(c), statistics.median(r)
    met = mc >= mr and lost == 0
    print(f"Goal at {what}: cluster direct (every delivery crossing nodes) {mc / 1000:.0f}k/s "
          f"against Redis pub/sub direct {mr / 1000:.0f}k/s ({mc / mr:.2f}×), "
          f"{len(c) - lost}/{len(c)} cluster runs clean: {'met' if met else 'NOT met'}.")
EOF

say "done in $((SECONDS - STARTED)) s; raw results in $RESULTS"
exit "$FAILED"

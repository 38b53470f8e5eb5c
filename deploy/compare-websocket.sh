#!/usr/bin/env bash
# deploy/compare-websocket.sh: a-chat against NATS, over TCP and over WebSocket, side by
# side on this machine in one sitting, with the same load generator (`a-chat bench`, which
# also speaks NATS: --target nats) and the same workloads:
#   direct      100 clients, 64-byte messages, 64 in flight per client
#   fanout 10   each message to 10 recipients (NATS: 10 PUBs)
#   idle 2000   RSS per idle logged-in (subscribed) connection, a fresh server
# for each of a-chat tcp, a-chat ws, NATS tcp and NATS ws, RUNS times in turns; then a
# markdown table of medians and spreads (min-max): deliveries/s and server CPU per
# delivery (the bench's --pid). Each run checks every payload (loss, duplicates, order).
#
# a-chat runs with [websocket] listen beside [server] listen; NATS (Debian's nats-server)
# with `websocket { no_tls: true }` beside its client port, GOMAXPROCS as it chooses
# (both cores here), a-chat with its defaults (one chat thread).
# All traffic stays on 127.0.0.1; every process started is stopped on exit. About a
# minute with the defaults.
#
# Environment:
#   A_CHAT_BIN=PATH   the a-chat binary (default: target/release/a-chat, built if missing)
#   RUNS=N            runs per measurement (default 3)
#   DURATION=3s       length of each timed run
#   RESULTS=DIR       raw results (default: target/compare-websocket/<date>-<time>)
#   SKIP_INSTALL=1    do not apt-get nats-server when it is missing
# Exit status: 0 when every run passed the bench's checks, 1 otherwise, 2 when the
# comparison could not start.

set -uo pipefail
say() { printf '[compare-websocket %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "$*"; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
cd "$ROOT"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-3s}"
RESULTS="${RESULTS:-target/compare-websocket/$(date +%Y%m%d-%H%M%S)}"
release_binary
command -v nats-server >/dev/null || install_missing nats-server
command -v nats-server >/dev/null || die "nats-server is missing"
mkdir -p "$RESULTS"
PIDS=()
trap stop_tracked EXIT
trap 'exit 130' INT TERM

# wait_port PORT: waits (5 s at most) until something accepts connections on PORT.
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on port $1"
}

# start_servers: a fresh a-chat and a fresh NATS; sets ACHAT_PID, ACHAT_TCP, ACHAT_WS,
# NATS_PID, NATS_TCP, NATS_WS.
start_servers() {
    ACHAT_TCP=$(free_port); ACHAT_WS=$(free_port)
    cat >"$RESULTS/a-chat.toml" <<EOF
[server]
listen = "127.0.0.1:$ACHAT_TCP"
[websocket]
listen = "127.0.0.1:$ACHAT_WS"
[limits]
messages_per_second = 0
[log]
level = "warn"
EOF
    "$BIN" server --config "$RESULTS/a-chat.toml" 2>>"$RESULTS/a-chat.log" &
    ACHAT_PID=$!; PIDS+=("$ACHAT_PID")
    NATS_TCP=$(free_port); NATS_WS=$(free_port)
    cat >"$RESULTS/nats.conf" <<EOF
port: $NATS_TCP
host: 127.0.0.1
websocket {
  host: 127.0.0.1
  port: $NATS_WS
  no_tls: true
}
EOF
    nats-server -c "$RESULTS/nats.conf" >>"$RESULTS/nats.log" 2>&1 &
    NATS_PID=$!; PIDS+=("$NATS_PID")
    for p in "$ACHAT_TCP" "$ACHAT_WS" "$NATS_TCP" "$NATS_WS"; do wait_port "$p"; done
}
stop_servers() {
    stop_pid TERM "$ACHAT_PID"; stop_pid TERM "$NATS_PID"
    forget_pid "$ACHAT_PID"; forget_pid "$NATS_PID"
}

FAILED=0
# run NAME LOAD...: one bench run of each of the four columns, in turns (with FRESH=1,
# each on servers started for it; otherwise on the servers running).
run() {
    local name="$1"; shift
    local col target transport addr pid
    for col in achat-tcp achat-ws nats-tcp nats-ws; do
        target=${col%-*} transport=${col#*-}
        [ -n "${FRESH:-}" ] && start_servers
        case "$col" in
            achat-tcp) addr=$ACHAT_TCP pid=$ACHAT_PID ;;
            achat-ws)  addr=$ACHAT_WS  pid=$ACHAT_PID ;;
            nats-tcp)  addr=$NATS_TCP  pid=$NATS_PID ;;
            nats-ws)   addr=$NATS_WS   pid=$NATS_PID ;;
        esac
        local out="$RESULTS/$name-$col-$RUN.json"
        if ! "$BIN" bench --target "$target" --transport "$transport" --addr "127.0.0.1:$addr" \
            --pid "$pid" --json -q "$@" >"$out" 2>>"$RESULTS/bench.log"; then
            FAILED=1
            say "  $col: FAILED (see $out)"
        else
            say "  $col: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('%.0f deliveries/s, %.1f KiB per idle connection, checks ok: %s' % (d['delivered_per_s'], d['server_rss_kib_per_conn'] or 0, d['ok']))" "$out")"
        fi
        if [ -n "${FRESH:-}" ]; then stop_servers; fi
    done
}

for RUN in $(seq "$RUNS"); do
    say "run $RUN of $RUNS: direct, $DURATION"
    start_servers; run direct -d "$DURATION" direct; stop_servers
    say "run $RUN of $RUNS: fanout 10, $DURATION"
    start_servers; run fanout -d "$DURATION" fanout 10; stop_servers
    say "run $RUN of $RUNS: idle 2000, a fresh server for each"
    FRESH=1 run idle -d 1s idle 2000
done

say "the table (raw results in $RESULTS)"
python3 - "$RESULTS" <<'PY'
import glob, json, statistics, sys
res = sys.argv[1]
cols = ["achat-tcp", "achat-ws", "nats-tcp", "nats-ws"]
titles = ["a-chat TCP", "a-chat WebSocket", "NATS TCP", "NATS WebSocket"]
def values(step, col, key):
    out = []
    for f in sorted(glob.glob(f"{res}/{step}-{col}-*.json")):
        try:
            v = key(json.load(open(f)))
        except Exception:
            v = None
        if v is not None:
            out.append(v)
    return out
def cell(vs, fmt):
    if not vs:
        return "—"
    m = statistics.median(vs)
    return fmt(m) + (f" ({fmt(min(vs))}–{fmt(max(vs))})" if len(vs) > 1 else "")
mdel = lambda x: f"{x/1e6:.2f} M"
ns = lambda x: f"{x/1000:.2f} µs"
kib = lambda x: f"{x:.1f} KiB"
rows = [
    ("direct: deliveries/s", "direct", lambda d: d["delivered_per_s"], mdel),
    ("direct: server CPU per delivery", "direct", lambda d: d["server_cpu_ns_per_delivery"], ns),
    ("fanout 10: deliveries/s", "fanout", lambda d: d["delivered_per_s"], mdel),
    ("fanout 10: server CPU per delivery", "fanout", lambda d: d["server_cpu_ns_per_delivery"], ns),
    ("idle 2000: RSS per connection", "idle", lambda d: d["server_rss_kib_per_conn"], kib),
]
print("| workload | " + " | ".join(titles) + " |")
print("| --- |" + " --- |" * len(cols))
for name, step, key, fmt in rows:
    print(f"| {name} | " + " | ".join(cell(values(step, c, key), fmt) for c in cols) + " |")
PY
exit "$FAILED"

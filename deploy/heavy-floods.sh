#!/usr/bin/env bash
# deploy/heavy-floods.sh: a chat's latency while outsiders make a-chat do heavy work, in
# one sitting, for one or two builds (e.g. before and after a change) taking turns.
#
# The chat: `a-chat bench --prefix u -c 20 -d $DURATION rate 2000` (20 logged-in clients,
# 2000 messages/s, open loop: latency counts from the scheduled send), started a second
# into each flood, on a fresh daemon each run; with `--password pw` for the sighup flood,
# the only one whose daemon authenticates logins (elsewhere the memory that password
# checks leave behind would hide the flood's). The floods:
#   none         nothing (the baseline)
#   sighup       SIGHUP every 50 ms, with most users hashed with strong settings (m=256 MiB,
#                t=3): each reload hashes a new dummy with them
#   connections  5000 open connections, and 32 admin clients pipelining
#                GET /connections?limit=1000 (100 requests at a time each)
#   handshakes   8 threads making full TLS handshakes against an RSA-2048 certificate
#   hellos       6000 connections, each with 60 KiB of a 61 KiB ClientHello, held
#   hellos16     6000 connections, each with 15 KiB of a 16 KiB ClientHello, held
# For each run: the chat's p50, p99 and max, whether it lost anything, the flood's rate,
# and the daemon's RSS before the flood and at its largest during it.
#
# Steps (each prints its progress on stderr):
#   1. the binaries: A_CHAT_BIN (default: a release build of this tree, made now) and, if
#      given, A_CHAT_BASELINE_BIN (measured the same way, the two taking turns)
#   2. a self-signed RSA-2048 certificate for 127.0.0.1 (openssl) and the users file: 20
#      bench users `u0`..`u19` with password `pw` (a-chat passwd, default settings), and 21
#      users whose hashes name m=262144,t=3 (the default line with its parameters changed:
#      nobody can log in with them, but the daemon's dummy hash takes their settings)
#   3. RUNS runs of every flood for every build; raw results in the results folder
#   4. a markdown table: median and range of each figure per flood and build
# Every process it starts is stopped on exit (by its PID). All traffic stays on 127.0.0.1.
#
# Environment: A_CHAT_BIN, A_CHAT_BASELINE_BIN (see above), RUNS (3), DURATION (5s),
# FLOOD_NICE (0; 39: the flood generators at the lowest priority, see below),
# FLOODS ("none sighup connections handshakes hellos hellos16"), RESULTS (default
# target/heavy-floods/<date>-<time>).
# On a machine shared with other work, run the whole sitting at a higher priority, e.g.
# `nice -n -10 deploy/heavy-floods.sh` as root (a-chat's own lowered threads, nice 10, stay
# below everything).
# Exit status: 0 when every chat run lost nothing, 1 otherwise, 2 when it could not start.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
FLOODS="${FLOODS:-none sighup connections handshakes hellos hellos16}"
RESULTS="${RESULTS:-$ROOT/target/heavy-floods/$(date +%Y%m%d-%H%M%S)}"
FLOOD_PY="$ROOT/deploy/heavy-floods.py"
# The flood generators stand for outsiders on other machines: with FLOOD_NICE=39 they run
# at the lowest priority, so that what the chat's latency shows is the daemon's own
# work, not two cores shared with the generators (0 keeps the sitting's priority).
FLOOD_NICE="${FLOOD_NICE:-0}"
NOFILE=20000
STARTED=$SECONDS
PIDS=()
FAILED=0

say() { printf '[heavy-floods %3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { say "error: $*"; exit 2; }
trap stop_tracked EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. the binaries
release_binary
declare -A BINS=([after]="$BIN")
BUILDS=(after)
if [ -n "${A_CHAT_BASELINE_BIN:-}" ]; then
    [ -x "$A_CHAT_BASELINE_BIN" ] || die "no a-chat binary at $A_CHAT_BASELINE_BIN"
    BINS[before]="$A_CHAT_BASELINE_BIN"
    BUILDS=(before after)
fi
for tool in openssl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
HARD_NOFILE="$(ulimit -Hn)"
[ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt "$NOFILE" ] && NOFILE="$HARD_NOFILE"

# ---------------------------------------------------------------- 2. certificate, users
say "step 2: an RSA-2048 certificate for 127.0.0.1 and the users file"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$RESULTS/rsa.key" -out "$RESULTS/rsa.pem" \
    >"$RESULTS/openssl.log" 2>&1 || die "openssl failed; see $RESULTS/openssl.log"
{
    echo "[users]"
    line="$(echo pw | "$BIN" passwd u0)" || die "a-chat passwd failed"
    hash="${line#*= }"
    for i in $(seq 0 19); do echo "u$i = $hash"; done
    strong="${hash/m=19456,t=2,/m=262144,t=3,}"
    for i in $(seq 0 20); do echo "strong$i = $strong"; done
} >"$RESULTS/users.toml"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), nproc $(nproc), $(uname -r)"
    for b in "${BUILDS[@]}"; do echo "$b: ${BINS[$b]} ($("${BINS[$b]}" --version))"; done
    echo "commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt" >&2

# ---------------------------------------------------------------- 3. the runs
# start_daemon BUILD NAME AUTH: a fresh daemon with plaintext, TLS and admin listeners,
# and the users file when AUTH is 1.
start_daemon() {
    local auth=""
    [ "$3" = 1 ] && auth="[auth]
users_file = \"$RESULTS/users.toml\"
max_failures_per_ip = 100000"

    CHAT="127.0.0.1:$(free_port)" TLS="127.0.0.1:$(free_port)" ADMIN="127.0.0.1:$(free_port)"
    cat >"$RESULTS/a-chat.toml" <<EOF
[server]
listen = "$CHAT"
max_connections = 19000
[limits]
login_timeout = "60s"
# the pair chats at 2000 msg/s, past the default per-client rate
messages_per_second = 0
$auth
[admin]
listen = "$ADMIN"
[tls]
listen = ["$TLS"]
cert = "$RESULTS/rsa.pem"
key = "$RESULTS/rsa.key"
EOF
    launch_achat "${BINS[$1]}" "$2"
}

# rss_watch PID FILE: writes the largest VmRSS (KiB) of PID to FILE every 100 ms.
rss_watch() {
    local max=0 now
    while kill -0 "$1" 2>/dev/null; do
        now="$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null)"
        [ -n "$now" ] && [ "$now" -gt "$max" ] && max="$now" && echo "$max" >"$2"
        sleep 0.1
    done
}

# start_flood KIND PID LOG: starts the flood (its PIDs in FLOOD_PIDS).
start_flood() {
    local pid="$2" log="$3"
    FLOOD_PIDS=()
    case "$1" in
    none) ;;
    sighup)
        (while kill -HUP "$pid" 2>/dev/null; do sleep 0.05; done) &
        FLOOD_PIDS+=($!)
        ;;
    connections)
        nice -n "$FLOOD_NICE" python3 "$FLOOD_PY" hold "$CHAT" 5000 2>>"$log" &
        FLOOD_PIDS+=($!)
        sleep 3
        nice -n "$FLOOD_NICE" python3 "$FLOOD_PY" connections "$ADMIN" 32 2>>"$log" &
        FLOOD_PIDS+=($!)
        ;;
    handshakes)
        nice -n "$FLOOD_NICE" python3 "$FLOOD_PY" handshakes "$TLS" 8 2>>"$log" &
        FLOOD_PIDS+=($!)
        ;;
    hellos | hellos16)
        local announced=62464 sent=61440 # 61 KiB, all but the last KiB
        [ "$1" = hellos16 ] && announced=16380 sent=15360 # one record, 15 KiB of it
        nice -n "$FLOOD_NICE" python3 "$FLOOD_PY" hellos "$TLS" 6000 "$announced" "$sent" 2>>"$log" &
        FLOOD_PIDS+=($!)
        ;;
    esac
    PIDS+=("${FLOOD_PIDS[@]}")
}

stop_flood() {
    local p
    for p in "${FLOOD_PIDS[@]}"; do
        stop_pid TERM "$p"
        forget_pid "$p"
    done
}

# one_run FLOOD BUILD RUN: a fresh daemon, the flood, the chat through it.
one_run() {
    local flood="$1" build="$2" run="$3" name="$1-$2-$3" base rss_file watch
    local auth=0 password=()
    [ "$flood" = sighup ] && auth=1 password=(--password pw)
    start_daemon "$build" "$name" "$auth"
    base="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")"
    rss_file="$RESULTS/$name.rss"
    echo "$base" >"$rss_file"
    rss_watch "$SERVER_PID" "$rss_file" &
    watch=$!
    start_flood "$flood" "$SERVER_PID" "$RESULTS/$name.flood"
    sleep 1
    local load
    load="$(load1)"
    "${BINS[$build]}" bench --addr "$CHAT" --prefix u -c 20 "${password[@]}" -d "$DURATION" \
        --connect-timeout 60s --json -q rate 2000 >"$RESULTS/$name.json" 2>"$RESULTS/$name.err" || FAILED=1
    local rss_max
    rss_max="$(cat "$rss_file")"
    stop_flood
    local handshakes reloads
    handshakes="$(curl -s "http://$ADMIN/metrics" 2>/dev/null | awk '/^achat_tls_handshakes_total/ {print $2}')"
    reloads="$(curl -s "http://$ADMIN/metrics" 2>/dev/null | awk '/^achat_config_reloads_total\{result="ok"\}/ {print $2}')"
    kill "$watch" 2>/dev/null
    stop_server
    python3 - "$RESULTS/$name.json" "$base" "$rss_max" "$load" "${handshakes:-0}" \
        "${reloads:-0}" "$flood" "$build" "$run" >>"$RESULTS/runs.jsonl" <<'EOF'
import json, sys
path, base, rss, load, handshakes, reloads, flood, build, run = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception:
    d = {"ok": False}
l = d.get("latency_ns", {})
print(json.dumps({"flood": flood, "build": build, "run": int(run), "load1": float(load),
    "p50_ms": l.get("p50", 0) / 1e6, "p99_ms": l.get("p99", 0) / 1e6,
    "max_ms": l.get("max", 0) / 1e6, "ok": d.get("ok", False),
    "rss_base_mib": int(base) / 1024, "rss_max_mib": int(rss) / 1024,
    "handshakes": float(handshakes), "reloads": float(reloads)}))
EOF
    say "$(tail -n1 "$RESULTS/runs.jsonl")"
}

for flood in $FLOODS; do
    say "step 3: flood '$flood', $RUNS runs for each of: ${BUILDS[*]}"
    for ((r = 1; r <= RUNS; r++)); do
        for b in "${BUILDS[@]}"; do one_run "$flood" "$b" "$r"; done
    done
done

# ---------------------------------------------------------------- 4. the table
say "step 4: the table (raw results in $RESULTS)"
python3 - "$RESULTS/runs.jsonl" <<'EOF' | tee "$RESULTS/table.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def cell(vals, f="{:.2f}"):
    if not vals:
        return ""
    med = statistics.median(vals)
    return f"{f.format(med)} ({f.format(min(vals))}–{f.format(max(vals))})"
print("| flood | build | chat p50 ms | chat p99 ms | chat max ms | RSS growth MiB | lost nothing | load1 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
seen = []
for r in runs:
    k = (r["flood"], r["build"])
    if k not in seen:
        seen.append(k)
for flood, build in seen:
    rs = [r for r in runs if r["flood"] == flood and r["build"] == build]
    col = lambda key: [r[key] for r in rs]
    grow = [r["rss_max_mib"] - r["rss_base_mib"] for r in rs]
    ok = sum(r["ok"] for r in rs)
    print(f"| {flood} | {build} | {cell(col('p50_ms'))} | {cell(col('p99_ms'))} | "
          f"{cell(col('max_ms'), '{:.1f}')} | {cell(grow, '{:.0f}')} | {ok}/{len(rs)} | "
          f"{cell(col('load1'), '{:.1f}')} |")
EOF
python3 -c 'import json,sys; sys.exit(0 if all(json.loads(l)["ok"] for l in open(sys.argv[1])) else 1)' \
    "$RESULTS/runs.jsonl" || FAILED=1
exit "$FAILED"

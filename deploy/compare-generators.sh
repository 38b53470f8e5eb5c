#!/usr/bin/env bash
# deploy/compare-generators.sh: the server's CPU per direct delivery as two different load
# generators see it, for a-chat and (with BASELINE) an older build, in one sitting:
#   bench     a-chat's own bench: `a-chat bench direct` (100 clients, 64-byte payloads,
#             64 in flight each; it writes each client's owed lines together)
#   pipeline  deploy/pipeline-gen.c, written apart from the bench in C: 100 clients, 64
#             in flight each, one more sent per delivery as soon as it is read, as
#             redis-benchmark -P does, all a client owes in one write
#   each      the same generator, each message in a write of its own (a client that
#             does not batch its writes)
#   apart     the same generator, batching, but no two consecutive lines name their
#             recipient alike (`g1:`, `g1 :`), so that a-chat joins no run of lines
# Each run starts a fresh server, runs DURATION, checks that every message arrived in
# order, and reads the server's CPU from /proc/PID/stat. With perf, one more run of each
# generator and build counts the server's system calls (reads, writes, epoll) and divides
# them by the deliveries, which says how many lines each server read and write carries for
# each generator; it is a run of its own because counting slows every system call.
# All traffic stays on 127.0.0.1; about 4 s per run, two minutes for the defaults.
#
# Environment:
#   A_CHAT_BIN=PATH   the a-chat to measure (default target/release/a-chat, built if missing)
#   BASELINE=PATH     also an older build, in turns with it
#   RUNS=N            runs per generator and build (default 3)
#   DURATION=3        seconds per run
#   RESULTS=DIR       raw results (default target/compare-generators/<date>-<time>)
# Exit status: 0 when every run delivered everything in order, 1 otherwise, 2 when the
# comparison could not start.

set -uo pipefail
say() { printf '[compare-generators %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "$*"; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
cd "$ROOT"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-3}"
RESULTS="${RESULTS:-target/compare-generators/$(date +%Y%m%d-%H%M%S)}"
release_binary
mkdir -p "$RESULTS"
GEN="$RESULTS/pipeline-gen"
cc -O2 -o "$GEN" deploy/pipeline-gen.c || die "cannot compile deploy/pipeline-gen.c (is cc installed?)"
PERF=()
if perf stat -x, -e raw_syscalls:sys_enter -o "$RESULTS/perf-check" true >/dev/null 2>&1; then
    EVENTS=raw_syscalls:sys_enter
    for s in read recvfrom write sendto writev epoll_wait epoll_pwait epoll_ctl; do
        EVENTS="$EVENTS,syscalls:sys_enter_$s"
    done
    PERF=(perf stat -x, -e "$EVENTS")
else
    say "perf cannot count system calls here: CPU figures only"
fi
declare -A BUILD=([new]="$BIN")
ORDER=(new)
if [ -n "${BASELINE:-}" ]; then BUILD[base]="$BASELINE"; ORDER=(base new); fi
SERVER=""
PIDS=()
trap stop_tracked EXIT
trap 'exit 130' INT TERM

start() {
    local port
    port=$(free_port)
    printf '[server]\nlisten = "127.0.0.1:%s"\n[limits]\nmessages_per_second = 0\n[log]\nlevel = "warn"\n' "$port" >"$RESULTS/a-chat.toml"
    "$1" server --config "$RESULTS/a-chat.toml" 2>>"$RESULTS/server.log" &
    SERVER=$!
    PIDS+=("$SERVER")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { PORT=$port; return 0; }
        sleep 0.05
    done
    die "the server did not listen"
}
stop() { stop_pid TERM "$SERVER"; forget_pid "$SERVER"; SERVER=""; }

FAILED=0
# measure RUN BUILD GENERATOR COUNT: one run; with COUNT=1, under perf, for the system calls.
measure() {
    local run="$1" b="$2" g="$3" count="$4"
            start "${BUILD[$b]}"
            out="$RESULTS/$g-$b-$run"
            [ "$count" = 1 ] && out="$RESULTS/syscalls-$g-$b"
            perf_pid=""
            if [ "$count" = 1 ]; then
                "${PERF[@]}" -p "$SERVER" -o "$out.perf" &
                perf_pid=$!
                sleep 0.2
            fi
            if [ $g = bench ]; then
                "$BIN" bench --addr "127.0.0.1:$PORT" --pid "$SERVER" --json -q -d "${DURATION}s" direct >"$out.json" 2>>"$RESULTS/bench.log"
                ok=$?
                line=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('delivered=%d deliveries_per_s=%.0f server_cpu_ns_per_delivery=%d lost=%d' % (d['delivered'], d['delivered_per_s'], d['server_cpu_ns_per_delivery'], d['lost']))" "$out.json" 2>/dev/null)
            else
                mode=()
                [ $g = each ] && mode=(each)
                [ $g = apart ] && mode=(apart)
                line=$("$GEN" 127.0.0.1 "$PORT" 100 64 "$DURATION" "$SERVER" "${mode[@]}" 2>>"$RESULTS/pipeline.log")
                ok=$?
            fi
            [ -n "$perf_pid" ] && { kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null; }
            echo "$line" >"$out.txt"
            [ $ok -eq 0 ] || FAILED=1
            say "run $run, $b, $g: $line"
            stop
}
for run in $(seq "$RUNS"); do
    for b in "${ORDER[@]}"; do
        for g in bench pipeline apart each; do measure "$run" "$b" "$g" 0; done
    done
done
if [ ${#PERF[@]} -gt 0 ]; then
    say "system calls (perf counting slows them: these runs are not timed)"
    for b in "${ORDER[@]}"; do
        for g in bench pipeline apart each; do measure count "$b" "$g" 1; done
    done
fi

say "the table (raw results in $RESULTS)"
python3 - "$RESULTS" "${ORDER[@]}" <<'PY'
import glob, re, statistics, sys
res, order = sys.argv[1], sys.argv[2:]
def kv(path):
    try:
        return dict(re.findall(r"(\w+)=([\d.]+)", open(path).read()))
    except OSError:
        return {}
def perf(path):
    counts = {}
    try:
        for line in open(path):
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0].isdigit():
                counts[parts[2].split(":")[-1].replace("sys_enter_", "")] = int(parts[0])
    except OSError:
        pass
    return counts
rows = []
for g in ["bench", "pipeline", "apart", "each"]:
    for b in order:
        cpu, rate, per = [], [], {}
        for f in sorted(glob.glob(f"{res}/{g}-{b}-*.txt")):
            d = kv(f)
            if "server_cpu_ns_per_delivery" not in d:
                continue
            cpu.append(float(d["server_cpu_ns_per_delivery"]))
            rate.append(float(d["deliveries_per_s"]))
        counted = kv(f"{res}/syscalls-{g}-{b}.txt")
        for k, v in perf(f"{res}/syscalls-{g}-{b}.perf").items():
            per.setdefault(k, []).append(v / max(float(counted.get("delivered", 1)), 1))
        if not cpu:
            continue
        med = lambda xs: statistics.median(xs) if xs else float("nan")
        calls = lambda *names: sum(med(per.get(n, [])) for n in names if n in per)
        rows.append((g, b, med(cpu), min(cpu), max(cpu), med(rate),
                     calls("read", "recvfrom"), calls("write", "sendto", "writev"),
                     calls("epoll_wait", "epoll_pwait"), calls("epoll_ctl"), calls("sys_enter")))
print("| generator | build | server CPU per delivery | deliveries/s | reads per delivery | writes per delivery | epoll waits per delivery | epoll_ctl per delivery | all syscalls per delivery |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for g, b, c, lo, hi, r, rd, wr, ew, ec, al in rows:
    print(f"| {g} | {b} | {c:.0f} ns ({lo:.0f}–{hi:.0f}) | {r/1e6:.2f} M | {rd:.4f} | {wr:.4f} | {ew:.4f} | {ec:.4f} | {al:.4f} |")
PY
exit "$FAILED"

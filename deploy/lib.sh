# shellcheck shell=bash
# deploy/lib.sh: shell helpers shared by the scripts in deploy/ (sourced, never run).
# Each script defines its own `say` (its progress prefix) before sourcing this file.

# show FILE [N]: the last N (20) lines of a log file, indented, after a failure.
show() { [ -s "$1" ] && sed -e 's/^/    | /' "$1" | tail -n "${2:-20}"; }

# stop_pid SIGNAL PID: stops a process this script started: SIGNAL first (a-chat drains
# on INT and TERM), then SIGKILL if it is still there after 15 s.
stop_pid() {
    local signal="$1" pid="$2" i
    [ -n "$pid" ] || return 0
    kill "-$signal" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# remove_work DIR: removes the script's scratch folder, unless A_CHAT_KEEP_LOGS=1 asks to
# keep it for reading the logs.
remove_work() {
    if [ "${A_CHAT_KEEP_LOGS:-0}" = 1 ]; then
        say "logs kept in $1"
    else
        rm -rf "$1"
    fi
}

# free_port: prints a TCP port that is free on 127.0.0.1 now (bound, read, closed).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# listening_port LOG PID [WHAT]: waits (10 s at most) for a-chat's `WHAT 127.0.0.1:PORT`
# line in LOG (WHAT: `listening on`, or `admin listening on` for the admin port) and
# prints PORT; prints nothing if PID exits first or the time runs out.
listening_port() {
    local log="$1" pid="$2" what="${3:-listening on}" i port=""
    for ((i = 0; i < 100; i++)); do
        port="$(grep -m1 -o "$what 127\.0\.0\.1:[0-9]*" "$log" 2>/dev/null | cut -d: -f2)"
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    printf '%s' "$port"
}

# Processes a script started, to stop on exit: it appends each PID to the array PIDS.
# stop_tracked: stops every one of them (SIGINT, then SIGKILL after 15 s; see stop_pid).
stop_tracked() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid INT "$pid"; done
}

# forget_pid PID: a process stopped already leaves PIDS.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# load1: the 1-minute load average.
load1() { cut -d' ' -f1 /proc/loadavg; }

# release_binary: sets BIN to the a-chat binary to run: $A_CHAT_BIN, or a release build
# of this tree, made now. Dies (the script's `die`) when there is none.
release_binary() {
    if [ -n "${A_CHAT_BIN:-}" ]; then
        BIN="$A_CHAT_BIN"
    else
        say "step 1: cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        BIN="$ROOT/target/release/a-chat"
    fi
    [ -x "$BIN" ] || die "no a-chat binary at $BIN"
}

# install_missing PACKAGE...: apt-get installs the Debian packages named (the caller has
# found them missing); dies when SKIP_INSTALL is set or apt-get fails.
install_missing() {
    [ $# -gt 0 ] || return 0
    [ -n "${SKIP_INSTALL:-}" ] && die "missing: $* (and SKIP_INSTALL is set)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "apt-get install $*"
    $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null || die "apt-get install $* failed"
}

# ---------------------------------------------------------------- bench sittings
# compare.sh and compare-tls.sh measure a-chat and Redis side by side in one sitting.
# Besides `say` and `die`, such a script sets RESULTS (its results folder), NOFILE (the
# servers' file limit), TARGETS (the servers measured, taking turns run by run), RUNS (runs
# per measurement) and SUMMARY_PY (see bench_run), and defines `start TARGET NAME` (a fresh
# server of TARGET, through launch_achat or launch_redis) and `bench STEP TARGET RUN ADDR
# PID ARGS...` (one bench run, through bench_run).

# machine_txt FN: writes $RESULTS/machine.txt, what the sitting runs on: the date and the
# machine, what FN prints (the versions measured and the script's settings), the servers'
# file limit and the load average. Shows it on stderr, and starts $RESULTS/runs.txt (a
# line a bench run, see bench_run).
machine_txt() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "nproc: $(nproc)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
        echo "kernel: $(uname -r)"
        "$1"
        echo "nofile (servers): $NOFILE"
        echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    } >"$RESULTS/machine.txt"
    sed 's/^/    /' "$RESULTS/machine.txt" >&2
    echo "step target run load1 rc" >"$RESULTS/runs.txt"
}

# launch_achat BIN NAME: starts `BIN server --config $RESULTS/a-chat.toml` (written by the
# caller, its listener on 127.0.0.1 port 0) with RLIMIT_NOFILE $NOFILE, its log in
# $RESULTS/a-chat-NAME.log. Sets SERVER_PID (also added to PIDS) and SERVER_ADDR, the port
# read from a-chat's log; dies when a-chat does not start.
launch_achat() {
    local bin="$1" name="$2" port=""
    (ulimit -n "$NOFILE" && exec "$bin" server --config "$RESULTS/a-chat.toml") \
        >"$RESULTS/a-chat-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    port="$(listening_port "$RESULTS/a-chat-$name.log" "$SERVER_PID")"
    [ -n "$port" ] || die "a-chat did not start; see $RESULTS/a-chat-$name.log"
    SERVER_ADDR="127.0.0.1:$port"
}

# launch_redis NAME PORT-OPTION ARGS...: starts redis-server with PORT-OPTION (--port or
# --tls-port) set to a free port on 127.0.0.1, then ARGS, no persistence and maxclients
# 19000, with RLIMIT_NOFILE $NOFILE, its log in $RESULTS/redis-NAME.log, and waits (10 s at
# most) until it accepts connections. Sets SERVER_PID (also added to PIDS) and SERVER_ADDR;
# dies when redis-server does not start.
launch_redis() {
    local name="$1" option="$2" i port
    shift 2
    port="$(free_port)"
    (ulimit -n "$NOFILE" && exec redis-server "$option" "$port" --bind 127.0.0.1 "$@" \
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

# stop_server: stops the server the last launch_achat or launch_redis started.
stop_server() {
    stop_pid INT "$SERVER_PID"
    forget_pid "$SERVER_PID"
    SERVER_PID=""
}

# start_long_lived [NOTE]: a server of every target (`start TARGET main`) for the runs that
# share one, its address and PID in the arrays ADDR and PID (by target); a progress line
# each says where it listens (NOTE after it).
start_long_lived() {
    local note="$*" t
    declare -gA ADDR PID
    for t in "${TARGETS[@]}"; do
        start "$t" main
        ADDR[$t]="$SERVER_ADDR"
        PID[$t]="$SERVER_PID"
        say "step 3: $t: pid ${PID[$t]} on ${ADDR[$t]}${note:+ $note}"
    done
}

# stop_long_lived: stops the servers start_long_lived started.
stop_long_lived() {
    local t
    for t in "${TARGETS[@]}"; do
        stop_pid INT "${PID[$t]}"
        forget_pid "${PID[$t]}"
    done
}

# each_run FN ARGS...: runs `FN TARGET RUN ARGS...` RUNS times for every target, the
# targets taking turns.
each_run() {
    local fn="$1" r t
    shift
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${TARGETS[@]}"; do
            "$fn" "$t" "$r" "$@"
        done
    done
}

# bench_on TARGET RUN STEP BENCH-ARGS...: one bench run against TARGET's long-lived server.
bench_on() {
    local t="$1" r="$2" step="$3"
    shift 3
    bench "$step" "$t" "$r" "${ADDR[$t]}" "${PID[$t]}" "$@"
}

# bench_fresh TARGET RUN STEP BENCH-ARGS...: one bench run against a fresh server of
# TARGET (`start TARGET STEP-RUN`), stopped after the run.
bench_fresh() {
    local t="$1" r="$2" step="$3"
    shift 3
    start "$t" "$step-$r"
    bench "$step" "$t" "$r" "$SERVER_ADDR" "$SERVER_PID" "$@"
    stop_server
}

# bench_run STEP TARGET RUN COMMAND...: one bench run. COMMAND's JSON goes to
# $RESULTS/STEP-TARGET-RUN.json and its stderr to the .err beside it; "STEP TARGET RUN
# LOAD1 RC" goes to $RESULTS/runs.txt, the load average taken just before. The progress
# line gives what SUMMARY_PY prints of the run ("no result" when there is none) and where
# to look when COMMAND failed. SUMMARY_PY is Python given the run's JSON in `d`, its
# latency_ns in `l` ({} when none), and `timed()`: the words on a direct, fanout or rate
# run. Returns COMMAND's exit status.
bench_run() {
    local step="$1" target="$2" run="$3" rc=0 load summary
    shift 3
    local out="$RESULTS/$step-$target-$run"
    load="$(load1)"
    "$@" >"$out.json" 2>"$out.err" || rc=$?
    echo "$step $target $run $load $rc" >>"$RESULTS/runs.txt"
    summary="$(python3 - "$out.json" <<EOF
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("no result"); sys.exit()
l = d.get("latency_ns") or {}
timed = lambda: [f'{d["delivered_per_s"]/1000:.0f}k deliveries/s',
                 f'p50 {l["p50"]/1e6:.2f} ms p99 {l["p99"]/1e6:.2f} ms']
$SUMMARY_PY
EOF
)"
    [ "$rc" -eq 0 ] || summary="$summary [bench exit $rc, see $out.err]"
    say "  $step $target run $run (load $load): $summary"
    return "$rc"
}

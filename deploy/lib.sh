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

# listening_port LOG PID: waits (10 s at most) for a-chat's `listening on 127.0.0.1:PORT`
# line in LOG and prints PORT; prints nothing if PID exits first or the time runs out.
listening_port() {
    local log="$1" pid="$2" i port=""
    for ((i = 0; i < 100; i++)); do
        port="$(grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' "$log" 2>/dev/null | cut -d: -f2)"
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

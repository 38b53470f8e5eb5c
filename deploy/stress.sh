#!/usr/bin/env bash
# deploy/stress.sh: the descriptor-exhaustion stress test of a-chat, scripted. The daemon
# runs with `ulimit -n 100` and max_connections = 1000, `wrk -c 1000` hammers it with
# connections it must refuse (wrk speaks HTTP; a-chat reads `GET / HTTP/1.1` as a login
# with a space in it, answers `error: ...` and closes), so the accept loop runs out of
# descriptors again and again. Afterwards the daemon must still be alive, must not spin,
# must let a new client log in quickly, and must carry a chat.
#
# Steps:
#   1. take the a-chat binary (A_CHAT_BIN, else target/release/a-chat, built with
#      `cargo build --release` if missing)
#   2. install wrk with apt-get if it is missing
#   3. start a-chat in a subshell whose open-file limit is lowered to 100 (a limit already
#      lower is kept: nothing is raised), on a free 127.0.0.1 port (port 0, read from its log)
#   4. run `wrk -c 1000 -d $DURATION -t 2` against it, printing the daemon's CPU use,
#      descriptors and memory each second
#   5. after wrk: time until a new client can log in (reconnect), the daemon's CPU use
#      over an idle wait, then two clients log in and exchange a message
#   6. stop the daemon with SIGINT: it drains and exits 0
# It prints one verdict line:
#   stress: survived=yes cpu_while_waiting=0.5% reconnect=12ms chat=ok
# and exits 1 if the daemon died, the chat failed, the reconnect took more than 5 s, the
# daemon used 90 % of a core or more while idle, or it did not exit 0 on SIGINT.
# Every step has a timeout; all traffic stays on loopback.
#
# Environment:
#   DURATION=10s            how long wrk runs (e.g. DURATION=3s for a short run)
#   A_CHAT_BIN=PATH         use this a-chat binary instead of the release build
#   A_CHAT_KEEP_LOGS=1      keep the work folder (daemon log, config, wrk output)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
DURATION="${DURATION:-10s}"
CONNECTIONS=1000
NOFILE=100
IDLE_WAIT=2             # seconds of idle CPU measurement after wrk
RECONNECT_LIMIT_MS=5000
CPU_LIMIT=90            # percent of one core, while idle
WORK="$(mktemp -d /tmp/a-chat-stress.XXXXXX)"
ACHAT_PID=""
FAILED=0

say() { printf '[stress] %s\n' "$*"; }
fail() { FAILED=1; say "FAIL: $*"; }
now_ms() { date +%s%3N; }

# Called by the EXIT trap.
# shellcheck disable=SC2329
cleanup() {
    stop_pid KILL "$ACHAT_PID"
    remove_work "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# DURATION in whole seconds (wrk accepts 10s, 2m, 1h; a bare number means seconds).
seconds() {
    local d="$1"
    case "$d" in
        *ms) echo 1 ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}
DURATION_S="$(seconds "$DURATION")"
if ! [[ "$DURATION_S" =~ ^[0-9]+$ ]] || [ "$DURATION_S" -lt 1 ] || [ "$DURATION_S" -gt 600 ]; then
    say "DURATION must be between 1s and 10m, got '$DURATION'"
    exit 2
fi

# 1. The binary.
BIN="${A_CHAT_BIN:-}"
if [ -z "$BIN" ]; then
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/a-chat"
    if [ ! -x "$BIN" ]; then
        say "building the release binary (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet) || { say "cargo build failed"; exit 1; }
    fi
fi
[ -x "$BIN" ] || { say "no a-chat binary at $BIN"; exit 1; }

# 2. wrk.
if ! command -v wrk >/dev/null; then
    say "installing wrk (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq wrk >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }
    command -v wrk >/dev/null || { say "wrk is missing and could not be installed"; exit 1; }
fi

# 3. The daemon, with at most NOFILE descriptors.
CONF="$WORK/a-chat.toml"
LOG="$WORK/a-chat.log"
cat >"$CONF" <<EOF
[server]
listen = "127.0.0.1:0"
max_connections = $CONNECTIONS

[shutdown]
drain_timeout = "3s"
EOF
(
    soft="$(ulimit -Sn)" hard="$(ulimit -Hn)"
    if [ "$soft" = unlimited ] || [ "$soft" -gt "$NOFILE" ]; then ulimit -Sn "$NOFILE"; fi
    if [ "$hard" = unlimited ] || [ "$hard" -gt "$NOFILE" ]; then ulimit -Hn "$NOFILE"; fi
    exec "$BIN" server --config "$CONF"
) 2>"$LOG" &
ACHAT_PID=$!

PORT=""
for ((i = 0; i < 100; i++)); do
    PORT="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG" | head -n 1)"
    [ -n "$PORT" ] && break
    kill -0 "$ACHAT_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ]; then
    say "the daemon did not start"
    show "$LOG"
    exit 1
fi
say "a-chat pid $ACHAT_PID on 127.0.0.1:$PORT, open-file limit $(awk '/Max open files/ {print $4}' "/proc/$ACHAT_PID/limits"), max_connections $CONNECTIONS"

CLK_TCK="$(getconf CLK_TCK)"
# utime + stime of the daemon, in clock ticks.
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$ACHAT_PID/stat" 2>/dev/null; }
# Percent of one core used between two tick counts over a number of milliseconds.
percent() { awk -v a="$1" -v b="$2" -v ms="$3" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) * 100000 / hz / (ms > 0 ? ms : 1) }'; }
alive() { kill -0 "$ACHAT_PID" 2>/dev/null; }

# 4. wrk, with a progress line each second.
say "wrk -c $CONNECTIONS -d $DURATION -t 2 http://127.0.0.1:$PORT/"
timeout $((DURATION_S + 30)) wrk -c "$CONNECTIONS" -d "$DURATION" -t 2 --timeout 2s \
    "http://127.0.0.1:$PORT/" >"$WORK/wrk.log" 2>&1 &
WRK_PID=$!
elapsed=0
while kill -0 "$WRK_PID" 2>/dev/null; do
    t0="$(ticks)" m0="$(now_ms)"
    sleep 1
    elapsed=$((elapsed + 1))
    if ! alive; then
        say "t=${elapsed}s the daemon is gone"
        break
    fi
    t1="$(ticks)" m1="$(now_ms)"
    fds="$(find "/proc/$ACHAT_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    rss="$(awk '/VmRSS/ {print $2}' "/proc/$ACHAT_PID/status" 2>/dev/null)"
    say "t=${elapsed}s cpu=$(percent "$t0" "$t1" $((m1 - m0)))% fds=$fds rss=${rss:-?}KiB"
done
wait "$WRK_PID" 2>/dev/null
WRK_STATUS=$?
sed -n -e '/requests in/p' -e '/Socket errors/p' -e '/Non-2xx/p' "$WORK/wrk.log" | sed 's/^ */[stress] wrk: /'
[ "$WRK_STATUS" -eq 0 ] || { say "wrk exited with status $WRK_STATUS"; show "$WORK/wrk.log" 10; }
accept_warnings="$(grep -c 'accept failed: pausing' "$LOG")"
say "accept-loop pauses on resource errors (EMFILE...) logged: $accept_warnings"

# 5. After the storm.
SURVIVED=no
alive && SURVIVED=yes
[ "$SURVIVED" = yes ] || { fail "the daemon died"; show "$LOG"; }

# One login attempt: log in as $1 and see the message to self come back.
login_once() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    PORT="$PORT" NAME="$1" timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        printf "%s\n%s: ping\n" "$NAME" "$NAME" >&3
        IFS= read -r -t 2 line <&3 && [ "$line" = "from $NAME: ping" ]
    ' 2>/dev/null
}

RECONNECT=timeout
if [ "$SURVIVED" = yes ]; then
    start="$(now_ms)"
    attempt=0
    while :; do
        attempt=$((attempt + 1))
        if login_once "probe$attempt"; then
            RECONNECT="$(($(now_ms) - start))ms"
            break
        fi
        if [ $(($(now_ms) - start)) -gt $((RECONNECT_LIMIT_MS + 5000)) ]; then
            break
        fi
        sleep 0.05
    done
    if [ "$RECONNECT" = timeout ]; then
        fail "no client could log in within $(((RECONNECT_LIMIT_MS + 5000) / 1000)) s after wrk"
    elif [ "${RECONNECT%ms}" -gt "$RECONNECT_LIMIT_MS" ]; then
        fail "a new client logged in only after $RECONNECT (limit ${RECONNECT_LIMIT_MS}ms)"
    fi
fi

CPU=n/a
if alive; then
    t0="$(ticks)" m0="$(now_ms)"
    sleep "$IDLE_WAIT"
    t1="$(ticks)" m1="$(now_ms)"
    CPU="$(percent "$t0" "$t1" $((m1 - m0)))"
    if awk -v c="$CPU" -v l="$CPU_LIMIT" 'BEGIN { exit !(c >= l) }'; then
        fail "the daemon used ${CPU}% of a core while idle (limit ${CPU_LIMIT}%)"
    fi
fi

CHAT=failed
# shellcheck disable=SC2016 # expanded by the inner bash
if alive && PORT="$PORT" timeout 15 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
    exec 4<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
    expect() { IFS= read -r -t 5 line <&"$1" && [ "$line" = "$2" ] || { echo "got: ${line:-nothing}, wanted: $2" >&2; exit 1; }; }
    printf "stress-a\nstress-a: ready?\n" >&3
    expect 3 "from stress-a: ready?"
    printf "stress-b\nstress-b: ready?\n" >&4
    expect 4 "from stress-b: ready?"
    printf "stress-b: hello after the storm\n" >&3
    expect 4 "from stress-a: hello after the storm"
    printf "stress-a: hello back\n" >&4
    expect 3 "from stress-b: hello back"
'; then
    CHAT=ok
else
    fail "two clients could not chat"
fi

# 6. The drain.
if alive; then
    kill -INT "$ACHAT_PID"
    for ((i = 0; i < 100; i++)); do
        alive || break
        sleep 0.1
    done
    if alive; then
        fail "the daemon did not exit within 10 s of SIGINT"
    else
        wait "$ACHAT_PID"
        status=$?
        ACHAT_PID=""
        if [ "$status" -eq 0 ]; then
            say "SIGINT: drained and exited 0"
        else
            fail "exit status $status after SIGINT"
        fi
    fi
fi
[ "$FAILED" -eq 0 ] || show "$LOG"

echo "stress: survived=$SURVIVED cpu_while_waiting=${CPU}% reconnect=$RECONNECT chat=$CHAT"
exit "$FAILED"

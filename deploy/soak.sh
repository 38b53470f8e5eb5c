#!/usr/bin/env bash
# deploy/soak.sh: a churn soak test of a-chat. For DURATION, many short-lived clients
# connect, log in, chat and leave (cleanly, by a reset, or by never logging in), a few
# clients stop reading and must be cut off as slow consumers, and steady reader pairs chat
# for the whole run. Afterwards the daemon must hold no more descriptors than before, its
# memory must be flat, no line between the steady readers may be lost, and it must drain
# and exit 0 on SIGTERM. The clients are deploy/soak.py, with deploy/soak_clients.py and
# deploy/soak_steady.py (Python 3, standard library only).
#
# Steps:
#   1. take the a-chat binary (A_CHAT_BIN, default target/release/a-chat, built by the caller)
#   2. write a config into a scratch folder: chat and admin listeners on free 127.0.0.1
#      ports (picked by soak.py: bind port 0, read it, close), login_timeout = "2s", small
#      outbound queues (outbound_queue_bytes = 65536, outbound_queue_hard_bytes = 1048576,
#      slow_consumer_grace = "1s", write_timeout = "2s")
#   3. start `a-chat server --config FILE` and wait (at most 10 s) until the chat port accepts
#   4. soak.py: warm-up churn, baseline (descriptors, RSS), churn until DURATION is over,
#      a progress line every 10 s (elapsed, RSS, descriptors, achat_outbound_queued_bytes
#      from GET /metrics or n/a, churn counts); then the churn stops, the steady readers
#      check every numbered line, and the descriptors must come back to the baseline
#      (a bounded wait, polling)
#   5. SIGTERM: the daemon drains and must exit 0 (within 15 s, else SIGKILL)
# It prints one verdict line, `soak: PASS` or `soak: FAIL (<reasons>)`, and exits 0 on PASS,
# 1 on FAIL. The checks: descriptors back to the baseline (within 2), RSS flat over the
# second half (its floor, sampled four times a second, over the last tenth of the churn
# within 2 % of its floor over the tenth before half time; runs under 60 s: 2 % or 2 MiB,
# as warm-up dominates them), nothing lost, duplicated or reordered between the steady readers, exit
# status 0 after SIGTERM. All traffic stays on loopback; the whole run stops by itself
# within DURATION + 2 minutes; the daemon is killed on any error or interrupt.
#
# Environment:
#   DURATION=10m            how long the churn runs: 30s, 10m, 1h or plain seconds (default 10m)
#   A_CHAT_BIN=PATH         the a-chat binary (default target/release/a-chat)
#   A_CHAT_KEEP_LOGS=1      keep the work folder (daemon log, config, soak.py's stderr)
#   SOAK_WORKERS=N          churn client threads (default 48)
#   SOAK_NON_READERS=N      non-reader slots, each a non-reader and its flooder (default 3)
#   SOAK_PAIRS=N            steady reader pairs (default 4)
#   SOAK_LOG_LEVEL=LEVEL    the daemon's [log] level (default info, as in production)
#   SOAK_OLD_CONFIG=1       leave out outbound_queue_hard_bytes and slow_consumer_grace, for
#                           trying the script on an older binary that does not know them
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
DURATION="${DURATION:-10m}"
WORKERS="${SOAK_WORKERS:-48}"
NON_READERS="${SOAK_NON_READERS:-3}"
PAIRS="${SOAK_PAIRS:-4}"
LOG_LEVEL="${SOAK_LOG_LEVEL:-info}"
START_TIMEOUT=10        # seconds for the chat port to accept
TERM_TIMEOUT=15         # seconds for the drain after SIGTERM
SLACK=120               # seconds soak.py may run past DURATION (final waits) before it is killed
WORK="$(mktemp -d /tmp/a-chat-soak.XXXXXX)"
ACHAT_PID=""
SOAK_PID=""

say() { printf '[soak] %s\n' "$*"; }

# Called by the EXIT trap: kills the daemon if it still runs (an error, an interrupt).
# shellcheck disable=SC2317,SC2329
cleanup() {
    set +e  # lib.sh's helpers expect some commands to fail
    stop_pid TERM "$SOAK_PID"
    stop_pid KILL "$ACHAT_PID"
    remove_work "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# DURATION in whole seconds: 30s, 10m, 1h, or a bare number of seconds.
seconds() {
    local d="$1"
    case "$d" in
        *s) d="${d%s}" ;;
        *m) d="${d%m}"; [[ "$d" =~ ^[0-9]+$ ]] && d=$((d * 60)) ;;
        *h) d="${d%h}"; [[ "$d" =~ ^[0-9]+$ ]] && d=$((d * 3600)) ;;
    esac
    echo "$d"
}
DURATION_S="$(seconds "$DURATION")"
if ! [[ "$DURATION_S" =~ ^[0-9]+$ ]] || [ "$DURATION_S" -lt 10 ]; then
    say "DURATION must be 10s or more (30s, 10m, or seconds), got '$DURATION'"
    exit 2
fi
for n in "$WORKERS" "$NON_READERS" "$PAIRS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { say "SOAK_WORKERS, SOAK_NON_READERS and SOAK_PAIRS must be numbers"; exit 2; }
done
[[ "$LOG_LEVEL" =~ ^[a-z_,=]+$ ]] || { say "SOAK_LOG_LEVEL: a level such as info or warn, got '$LOG_LEVEL'"; exit 2; }

# 1. The binary.
BIN="${A_CHAT_BIN:-$ROOT/target/release/a-chat}"
[ -x "$BIN" ] || { say "no a-chat binary at $BIN (cargo build --release, or set A_CHAT_BIN)"; exit 1; }
command -v python3 >/dev/null || { say "python3 is missing"; exit 1; }

# 2. The config, on free loopback ports.
read -r CHAT_PORT ADMIN_PORT < <(python3 "$ROOT/deploy/soak.py" free-ports 2)
CONF="$WORK/a-chat.toml"
LOG="$WORK/a-chat.log"
{
    cat <<EOF
[server]
listen = "127.0.0.1:$CHAT_PORT"
max_connections = 1000

[limits]
login_timeout = "2s"
# the soak's senders and slow-consumer floods run past the default per-client rate
messages_per_second = 0
outbound_queue_bytes = 65536
write_timeout = "2s"
EOF
    if [ "${SOAK_OLD_CONFIG:-0}" != 1 ]; then
        cat <<EOF
outbound_queue_hard_bytes = 1048576
slow_consumer_grace = "1s"
EOF
    fi
    cat <<EOF

[shutdown]
drain_timeout = "5s"

[log]
level = "$LOG_LEVEL"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
EOF
} >"$CONF"
if [ "${SOAK_OLD_CONFIG:-0}" = 1 ]; then
    say "SOAK_OLD_CONFIG=1: outbound_queue_hard_bytes and slow_consumer_grace left out"
fi

# 3. The daemon.
"$BIN" server --config "$CONF" 2>"$LOG" &
ACHAT_PID=$!
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$CHAT_PORT") 2>/dev/null; }
for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    accepts && break
    kill -0 "$ACHAT_PID" 2>/dev/null || break
    sleep 0.1
done
if ! kill -0 "$ACHAT_PID" 2>/dev/null; then
    status=0
    wait "$ACHAT_PID" || status=$?
    ACHAT_PID=""
    say "the daemon exited at start (status $status)"
    show "$LOG"
    exit 1
fi
if ! accepts; then
    say "the daemon did not accept on 127.0.0.1:$CHAT_PORT within $START_TIMEOUT s"
    show "$LOG"
    exit 1
fi
say "a-chat pid $ACHAT_PID ($BIN): chat 127.0.0.1:$CHAT_PORT, admin 127.0.0.1:$ADMIN_PORT, churn for ${DURATION_S}s"

# 4. The churn (in the background, so that a signal reaches the trap at once).
RESULT="$WORK/result"
REASONS=()
timeout --kill-after=5 $((DURATION_S + SLACK)) python3 -u "$ROOT/deploy/soak.py" run \
    --pid "$ACHAT_PID" --chat-port "$CHAT_PORT" --admin-port "$ADMIN_PORT" \
    --duration "$DURATION_S" --result "$RESULT" \
    --workers "$WORKERS" --non-readers "$NON_READERS" --pairs "$PAIRS" \
    2>"$WORK/soak.py.err" &
SOAK_PID=$!
status=0
wait "$SOAK_PID" || status=$?
SOAK_PID=""
if [ "$status" -ne 0 ] || [ ! -f "$RESULT" ]; then
    REASONS+=("soak.py failed (status $status)")
    show "$WORK/soak.py.err"
else
    while IFS= read -r reason; do
        [ -n "$reason" ] && REASONS+=("$reason")
    done <"$RESULT"
fi

# 5. The drain.
if kill -0 "$ACHAT_PID" 2>/dev/null; then
    kill -TERM "$ACHAT_PID"
    for ((i = 0; i < TERM_TIMEOUT * 10; i++)); do
        kill -0 "$ACHAT_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$ACHAT_PID" 2>/dev/null; then
        REASONS+=("no exit within $TERM_TIMEOUT s of SIGTERM")
    else
        status=0
        wait "$ACHAT_PID" || status=$?
        ACHAT_PID=""
        if [ "$status" -eq 0 ]; then
            say "SIGTERM: drained and exited 0"
        else
            REASONS+=("exit status $status after SIGTERM")
        fi
    fi
else
    status=0
    wait "$ACHAT_PID" || status=$?
    ACHAT_PID=""
    REASONS+=("the daemon was gone before SIGTERM (status $status)")
fi

warnings="$(grep -c 'slow consumer disconnected' "$LOG" || true)"
say "daemon log: $warnings slow-consumer disconnects, $(grep -c ' ERROR ' "$LOG" || true) errors"
if [ "${#REASONS[@]}" -eq 0 ]; then
    echo "soak: PASS"
    exit 0
fi
show "$LOG"
joined="$(printf '%s; ' "${REASONS[@]}")"
echo "soak: FAIL (${joined%; })"
exit 1

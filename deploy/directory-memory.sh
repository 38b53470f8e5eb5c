#!/usr/bin/env bash
# deploy/directory-memory.sh: the memory one cluster node spends per *remote* login (its
# copy of the cluster directory: which login lives on which other node), measured as in
# docs/SCALING.md "Measured: a node joining a registry of 1 million logins".
#
# Steps (each prints its progress on stderr; the figures go to stdout at the end):
#   1. the a-chat binary: A_CHAT_BIN, or `cargo build --release`
#   2. install redis-server, redis-cli and curl with apt-get if one is missing
#   3. start a fresh redis-server on a free 127.0.0.1 port (no persistence)
#   4. start node n1 ([cluster] lease 10s, chat and admin on port 0 of 127.0.0.1) against
#      the empty registry; its admin port is read from its log, then /readyz must answer
#      200. [log] level is "info", not SCALING.md's "warn": `admin listening on ADDR` is
#      an info line, and the script reads the port from it (both nodes log the same few
#      lines, so the difference n2 - n1 is not changed by it)
#   5. write LOGINS logins of a fake node n9 straight into Redis, as SCALING.md did:
#      ZADD achat:nodes with a lease far in the future for n9, then EVAL loops (one per
#      100 000 logins, a progress line each) doing HSET achat:logins <login> "n9\n<login>"
#      and SADD achat:looks:n9 <look>, the logins named User0000001, User0000002, ...
#      with the looks (the registry's key, the canonical form) user0000001, ...: a look
#      that differs from its login, as a-chat's own would for these names (its canonical
#      form maps digits that look like letters). NAMES=same writes the look as the login
#      itself, as SCALING.md's first measurement did. EVAL publishes no directory events, so
#      n1's copy stays empty (checked: its achat_cluster_remote_logins must stay 0)
#   6. start node n2 the same way and time it from its start until its
#      achat_cluster_remote_logins gauge (GET /metrics on its admin port) equals LOGINS,
#      a progress line every second, JOIN_WAIT seconds at most; also when its /readyz
#      first answers 200 (a cluster node is ready once joined, its snapshot read), and
#      when n2 logged "joined the cluster" (its timestamp: the polls above can be held
#      up while the node applies the snapshot)
#   7. read VmRSS and VmHWM of both nodes (/proc/PID/status, after SETTLE seconds), and
#      print: n1's RSS (a node with an empty directory), n2's RSS, (n2 - n1) / LOGINS
#      bytes per remote login, n2's peak (VmHWM) and (HWM - RSS) / LOGINS transient bytes
#      per login, the join time, Redis's used_memory per login
#   8. stop both nodes with SIGINT (each must drain and exit 0), then Redis
# All traffic stays on 127.0.0.1. Every wait is bounded. Every process the script starts
# is stopped on exit (by its PID), and its scratch folder is removed. With LOGINS at
# 1 million it takes about 10 s on a 2-core machine (the binary built).
#
# Environment:
#   A_CHAT_BIN=PATH     use this a-chat binary instead of building one
#   LOGINS=N            remote logins to write (default 1000000)
#   NAMES=same          each login its own look (default: `cased`, login and look differ)
#   JOIN_WAIT=SECS      the most seconds n2 may take to hold them all (default 60)
#   SETTLE=SECS         seconds to wait after the join before reading memory (default 1)
#   SKIP_INSTALL=1      do not run apt-get (redis-server, redis-cli, curl must be there)
#   MAX_BYTES=N         fail when a remote login costs more than N bytes (CI: a copy laid
#                       out as before, at 308 bytes, fails it)
#   MAX_WAIT=SECS       fail when an admin answer took longer than SECS while n2 joined
#                       (CI: a copy built on the router's path, 1.7 s at 1M, fails it)
#   A_CHAT_KEEP_LOGS=1  keep the scratch folder (node logs, configs) after the run
# Exit status: 0 when measured (n2 held LOGINS remote logins, n1 held 0, both nodes
# exited 0 on SIGINT, within MAX_BYTES and MAX_WAIT when given), 1 when one of those
# checks failed, 2 when the measurement could
# not start.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
LOGINS="${LOGINS:-1000000}"
NAMES="${NAMES:-cased}"
case "$NAMES" in
    same) LOGIN_FORMAT="user%07d" ;;
    cased) LOGIN_FORMAT="User%07d" ;;
    *) echo "NAMES must be same or cased, not $NAMES" >&2; exit 2 ;;
esac
JOIN_WAIT="${JOIN_WAIT:-60}"
SETTLE="${SETTLE:-1}"
CHUNK=100000
NOFILE=20000
WORK="$(mktemp -d /tmp/a-chat-directory-memory.XXXXXX)"
# launch_redis (lib.sh) writes its log into $RESULTS.
# shellcheck disable=SC2034
RESULTS="$WORK"
STARTED=$SECONDS
PIDS=()
FAILED=0

say() { printf '[directory-memory %3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { say "error: $*"; exit 2; }
fail() { FAILED=1; say "FAILED: $*"; }

# shellcheck disable=SC2317,SC2329  # invoked by the EXIT trap
cleanup() {
    stop_tracked
    remove_work "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ "$LOGINS" =~ ^[1-9][0-9]*$ ]] || die "LOGINS must be a positive integer, not '$LOGINS'"
[[ "$JOIN_WAIT" =~ ^[1-9][0-9]*$ ]] || die "JOIN_WAIT must be a positive integer"
[[ "$SETTLE" =~ ^[0-9]+$ ]] || die "SETTLE must be a whole number of seconds"

# ---------------------------------------------------------------- 1. the binary
release_binary

# ---------------------------------------------------------------- 2. the tools
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    install_missing "${missing[@]}"
fi
for tool in redis-server redis-cli curl; do
    command -v "$tool" >/dev/null || die "$tool is still missing"
done
# The nodes' file limit: 20000, or the hard limit when lower (a-chat warns when its
# max_connections, 10000 by default, needs more than it has).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
HARD_NOFILE="$(ulimit -Hn)"
[ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt "$NOFILE" ] && NOFILE="$HARD_NOFILE"
say "step 2: $("$BIN" --version) ($BIN); $(redis-server --version | cut -d' ' -f1-3)"
say "        $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- helpers
# rcli ARGS...: redis-cli against this script's Redis.
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# used_memory: Redis's used_memory, in bytes.
used_memory() { rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory://p'; }

# metric ADMIN NAME: the value of NAME (a line `NAME VALUE`) in ADMIN's /metrics; empty
# when the scrape fails or the metric is not there.
metric() {
    local page
    # The page is read whole first: awk stopping at its match must not cut curl off.
    page="$(curl -s --max-time 5 "http://$1/metrics" 2>/dev/null)"
    awk -v n="$2" '$1 == n { print $2; exit }' <<<"$page"
}

# status_kb PID FIELD: FIELD (VmRSS, VmHWM) of /proc/PID/status, in kB.
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# start_node NAME: a-chat node NAME in the cluster of $REDIS_URL, chat and admin on port 0
# of 127.0.0.1. Sets NODE_PID (also added to PIDS) and NODE_ADMIN (host:port, read from
# its log); dies when it does not log its admin address within 10 s.
start_node() {
    local name="$1" conf="$WORK/$1.toml" log="$WORK/$1.log" port=""
    cat >"$conf" <<EOF
# a-chat node $name of deploy/directory-memory.sh
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
# info, not warn: the admin port is read from the "admin listening on" line
level = "info"

[cluster]
redis = "$REDIS_URL"
node_id = "$name"
lease = "10s"
# One node (n9) holds every login written: past the default caps of the copy.
max_logins_per_node = $LOGINS
max_remote_logins = $LOGINS
EOF
    "$BIN" check-config --quiet "$conf" >"$WORK/$name.check" 2>&1 ||
        { show "$WORK/$name.check"; die "node $name: its configuration fails check-config"; }
    (ulimit -n "$NOFILE" && exec "$BIN" server --config "$conf") >"$log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    port="$(listening_port "$log" "$NODE_PID" 'admin listening on')"
    [ -n "$port" ] || { show "$log"; die "node $name did not start (no 'admin listening on' line)"; }
    NODE_ADMIN="127.0.0.1:$port"
}

# ready ADMIN: /readyz at ADMIN answers 200 (a cluster node: joined, its snapshot read).
ready() { [ "$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://$1/readyz")" = 200 ]; }

# logged_at LOG TEXT: the time (epoch seconds) of LOG's first line holding TEXT, read
# from its RFC 3339 timestamp; empty when there is none.
logged_at() {
    local ts
    ts="$(grep -m1 -F "$2" "$1" 2>/dev/null | cut -d' ' -f1)"
    [ -n "$ts" ] && date -d "$ts" +%s.%N 2>/dev/null
}

# since T0: seconds since the $EPOCHREALTIME T0, to the hundredth.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# stop_node NAME PID: SIGINT, then waits (15 s at most) for NAME to drain and exit 0;
# a failure when it exits otherwise or must be killed.
stop_node() {
    local name="$1" pid="$2" i rc
    kill -INT "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        fail "node $name did not exit within 15 s of SIGINT (killed)"
    else
        wait "$pid"
        rc=$?
        if [ "$rc" -eq 0 ]; then
            say "step 8: node $name exited 0"
        else
            show "$WORK/$name.log"
            fail "node $name exited $rc after SIGINT"
        fi
    fi
    forget_pid "$pid"
}

# ---------------------------------------------------------------- 3. Redis
launch_redis main --port
REDIS_PID="$SERVER_PID"
REDIS_PORT="${SERVER_ADDR##*:}"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
say "step 3: redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (no persistence)"

# ---------------------------------------------------------------- 4. n1, empty
start_node n1
N1_PID="$NODE_PID"
N1_ADMIN="$NODE_ADMIN"
for ((i = 0; i < 100; i++)); do
    ready "$N1_ADMIN" && break
    kill -0 "$N1_PID" 2>/dev/null || break
    sleep 0.1
done
ready "$N1_ADMIN" || { show "$WORK/n1.log"; die "node n1: /readyz did not answer 200 within 10 s"; }
say "step 4: node n1 pid $N1_PID, admin $N1_ADMIN, /readyz 200"
for ((i = 0; i < 100; i++)); do
    [ "$(metric "$N1_ADMIN" achat_cluster_link_up)" = 1 ] && break
    sleep 0.1
done
[ "$(metric "$N1_ADMIN" achat_cluster_link_up)" = 1 ] ||
    { show "$WORK/n1.log"; die "node n1: achat_cluster_link_up is not 1 after 10 s"; }
say "step 4: n1 joined (achat_cluster_link_up 1, achat_cluster_remote_logins $(metric "$N1_ADMIN" achat_cluster_remote_logins))"

# ---------------------------------------------------------------- 5. the fake node's logins
MEM_BEFORE="$(used_memory)"
[ -n "$MEM_BEFORE" ] || die "cannot read Redis's used_memory"
rcli ZADD achat:nodes 9000000000000 n9 >/dev/null || die "ZADD achat:nodes failed"
# ARGV[1], ARGV[2]: the first and last login number of the chunk.
# ARGV[3]: the login's format; its look is its lower case.
FILL='for i=tonumber(ARGV[1]),tonumber(ARGV[2]) do local l=string.format(ARGV[3],i);
local k=string.lower(l); redis.call("HSET","achat:logins",k,"n9\n"..l);
redis.call("SADD","achat:looks:n9",k) end return redis.call("HLEN","achat:logins")'
# shellcheck disable=SC2059 # the format is one of the two above
say "step 5: writing $LOGINS logins of n9 into Redis (EVAL, $CHUNK a call; logins like $(printf "$LOGIN_FORMAT" 1), looks like $(printf "user%07d" 1))"
FILL_START=$EPOCHREALTIME
for ((first = 1; first <= LOGINS; first += CHUNK)); do
    last=$((first + CHUNK - 1))
    [ "$last" -gt "$LOGINS" ] && last="$LOGINS"
    t0=$EPOCHREALTIME
    held="$(rcli EVAL "$FILL" 0 "$first" "$last" "$LOGIN_FORMAT")" || die "EVAL failed at login $first: $held"
    [[ "$held" =~ ^[0-9]+$ ]] || die "EVAL failed at login $first: $held"
    say "  logins $first..$last written in $(since "$t0") s (achat:logins holds $held)"
done
FILL_S="$(since "$FILL_START")"
MEM_AFTER="$(used_memory)"
[ "$(rcli HLEN achat:logins)" = "$LOGINS" ] ||
    die "achat:logins holds $(rcli HLEN achat:logins) entries, not $LOGINS"
say "step 5: $LOGINS logins written in $FILL_S s; Redis used_memory $MEM_BEFORE -> $MEM_AFTER bytes"

# ---------------------------------------------------------------- 6. n2 joins
say "step 6: starting node n2; waiting (at most $JOIN_WAIT s) until it holds $LOGINS remote logins"
N2_START=$EPOCHREALTIME
start_node n2
N2_PID="$NODE_PID"
N2_ADMIN="$NODE_ADMIN"
say "step 6: node n2 pid $N2_PID, admin $N2_ADMIN (logged $(since "$N2_START") s after its start)"
READY_S=""
JOINED=""
NEXT_REPORT=1
# The slowest answers (/readyz and /metrics) while joining: the admin endpoint runs on the node's worker
# thread, so a join that held that thread up shows here.
SLOWEST=0
while :; do
    t0=$EPOCHREALTIME
    [ -z "$READY_S" ] && ready "$N2_ADMIN" && READY_S="$(since "$N2_START")"
    held="$(metric "$N2_ADMIN" achat_cluster_remote_logins)"
    SLOWEST="$(awk -v a="$SLOWEST" -v b="$(since "$t0")" 'BEGIN { print (b > a ? b : a) }')"
    elapsed="$(since "$N2_START")"
    if [ "$held" = "$LOGINS" ]; then
        JOINED="$elapsed"
        [ -z "$READY_S" ] && ready "$N2_ADMIN" && READY_S="$(since "$N2_START")"
        break
    fi
    if ! kill -0 "$N2_PID" 2>/dev/null; then
        show "$WORK/n2.log"
        fail "node n2 exited while joining"
        break
    fi
    if awk -v e="$elapsed" -v m="$JOIN_WAIT" 'BEGIN { exit !(e >= m) }'; then
        show "$WORK/n2.log"
        fail "node n2 holds ${held:-?} remote logins after $JOIN_WAIT s, not $LOGINS"
        break
    fi
    if awk -v e="$elapsed" -v r="$NEXT_REPORT" 'BEGIN { exit !(e >= r) }'; then
        say "  ${elapsed} s: n2 holds ${held:-?} remote logins, /readyz ${READY_S:+200 (since $READY_S s)}${READY_S:-not 200 yet}, VmRSS $(status_kb "$N2_PID" VmRSS) kB"
        NEXT_REPORT=$((NEXT_REPORT + 1))
    fi
    sleep 0.1
done

# ---------------------------------------------------------------- 7. the figures
if [ -n "$JOINED" ]; then
    say "step 6: n2 holds $LOGINS remote logins $JOINED s after its start (/readyz 200 at ${READY_S:-?} s)"
    [ "$SETTLE" -gt 0 ] && sleep "$SETTLE"
    N1_HELD="$(metric "$N1_ADMIN" achat_cluster_remote_logins)"
    N2_HELD="$(metric "$N2_ADMIN" achat_cluster_remote_logins)"
    N1_RSS="$(status_kb "$N1_PID" VmRSS)"
    N1_HWM="$(status_kb "$N1_PID" VmHWM)"
    N2_RSS="$(status_kb "$N2_PID" VmRSS)"
    N2_HWM="$(status_kb "$N2_PID" VmHWM)"
    JOIN_LOGGED="$(logged_at "$WORK/n2.log" 'joined the cluster')"
    JOIN_LOGGED_S=""
    [ -n "$JOIN_LOGGED" ] && JOIN_LOGGED_S="$(awk -v a="$N2_START" -v b="$JOIN_LOGGED" 'BEGIN { printf "%.2f", b - a }')"
    if [ "$N1_HELD" = 0 ]; then
        say "step 7: n1's achat_cluster_remote_logins is 0: its copy is empty (the EVAL published no events), so n1 is the baseline"
    else
        fail "n1's achat_cluster_remote_logins is ${N1_HELD:-?}, not 0: it is no empty baseline"
    fi
    [ "$N2_HELD" = "$LOGINS" ] || fail "n2's achat_cluster_remote_logins is ${N2_HELD:-?} after settling, not $LOGINS"
    awk -v logins="$LOGINS" -v r1="$N1_RSS" -v h1="$N1_HWM" -v r2="$N2_RSS" -v h2="$N2_HWM" \
        -v joined="$JOINED" -v ready="$READY_S" -v m0="$MEM_BEFORE" -v m1="$MEM_AFTER" \
        -v fill="$FILL_S" -v settle="$SETTLE" -v logged="$JOIN_LOGGED_S" -v slowest="$SLOWEST" '
    function row(what, value) { printf "%-46s %s\n", what, value }
    BEGIN {
        mb = 1000 * 1000
        row("remote logins (of n9, written into Redis)", sprintf("%d (written in %s s)", logins, fill))
        row("n1 VmRSS (empty directory)", sprintf("%.1f MB (VmHWM %.1f MB)", r1 * 1024 / mb, h1 * 1024 / mb))
        row("n2 VmRSS (all of them remote)", sprintf("%.1f MB (%s s after the join)", r2 * 1024 / mb, settle))
        row("per remote login, (n2 - n1) / LOGINS", sprintf("%.0f bytes", (r2 - r1) * 1024 / logins))
        row("n2 VmHWM (peak)", sprintf("%.1f MB", h2 * 1024 / mb))
        row("transient per login, (HWM - RSS) / LOGINS", sprintf("%.0f bytes", (h2 - r2) * 1024 / logins))
        row("n2 join: start to \"joined the cluster\" logged", (logged == "" ? "?" : logged) " s (snapshot read)")
        row("n2 join: start to /readyz 200", (ready == "" ? "?" : ready) " s")
        row("n2 join: start to remote_logins = LOGINS", joined " s")
        row("n2: slowest admin answers while joining", slowest " s (/readyz and /metrics)")
        row("Redis used_memory per login", sprintf("%.0f bytes (%.1f MiB for all)", (m1 - m0) / logins, (m1 - m0) / 1048576))
    }'
    PER_LOGIN="$(awk -v l="$LOGINS" -v r1="$N1_RSS" -v r2="$N2_RSS" 'BEGIN { printf "%.0f", (r2 - r1) * 1024 / l }')"
    if [ -n "${MAX_BYTES:-}" ]; then
        if [ "$PER_LOGIN" -le "$MAX_BYTES" ]; then
            say "ok: $PER_LOGIN bytes per remote login (at most $MAX_BYTES)"
        else
            fail "$PER_LOGIN bytes per remote login, more than MAX_BYTES=$MAX_BYTES"
        fi
    fi
    if [ -n "${MAX_WAIT:-}" ]; then
        if awk -v a="$SLOWEST" -v m="$MAX_WAIT" 'BEGIN { exit !(a <= m) }'; then
            say "ok: the slowest admin answer while joining took $SLOWEST s (at most $MAX_WAIT s)"
        else
            fail "an admin answer took $SLOWEST s while n2 joined, more than MAX_WAIT=$MAX_WAIT s: the node stalled"
        fi
    fi
fi

# ---------------------------------------------------------------- 8. stop
stop_node n2 "$N2_PID"
stop_node n1 "$N1_PID"
stop_pid INT "$REDIS_PID"
forget_pid "$REDIS_PID"
say "done in $((SECONDS - STARTED)) s$([ "$FAILED" -eq 0 ] || echo ': SOME CHECKS FAILED')"
exit "$FAILED"

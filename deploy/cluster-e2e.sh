#!/usr/bin/env bash
# deploy/cluster-e2e.sh: an a-chat cluster behind a real load balancer, end to end. One
# Redis, three a-chat nodes and HAProxy in front of them (TCP, round robin), all on
# loopback; 300 clients chat through HAProxy while one node is killed with SIGKILL. The
# verdict: every line between clients that stayed connected arrives exactly once and in
# order, and the dead node's clients log in again through the balancer, with the same
# names, within the lease (plus 2 s of slack); and HAProxy's PROXY header (send-proxy-v2)
# makes every node know its clients by their own address and port. The clients are
# deploy/cluster-e2e.py (Python 3, standard library only).
#
# Steps:
#   1. take the a-chat binary (A_CHAT_BIN, default target/release/a-chat, built by the
#      caller), redis-server and haproxy (Debian's packages)
#   2. start redis-server on a free 127.0.0.1 port (no persistence: --save '' --appendonly no)
#   3. start three nodes n1 n2 n3, each `a-chat server --config FILE` with its own config in
#      the scratch folder: chat and admin listeners on 127.0.0.1 port 0 (read back from
#      the log), [cluster] redis = that Redis, node_id = nN, lease = "2s"; wait until
#      each one's GET /readyz answers 200
#   4. start HAProxy in the foreground (-db) on a free 127.0.0.1 port: mode tcp, balance
#      roundrobin, a TCP health check on each node's chat port every 200 ms (one failure
#      marks a node down, two successes up), idle timeouts of 10 minutes so quiet chat
#      connections are not cut, failed connects redispatched to another node
#   5. cluster-e2e.py: 300 clients log in through HAProxy and send numbered lines to each
#      other (each one a line per 100 ms); KILL_AFTER s into the sending it asks for the
#      kill, and this script SIGKILLs node E2E_KILL (n2) and tells it the time; the clients
#      of n2 log in again through HAProxy; the sending stops after SEND_SECONDS, the driver
#      waits for the last lines and checks every pair (see cluster-e2e.py's header)
#   6. SIGTERM to the surviving nodes: each must drain and exit 0
# A progress line every second; one verdict line at the end, `cluster-e2e: PASS` or
# `cluster-e2e: FAIL (<reasons>)`; exit 0 on PASS, 1 on FAIL, 2 on a usage error. The whole
# run is bounded (about 90 s at most); every process it started is stopped on exit, on an
# error or an interrupt. All traffic stays on loopback.
#
# Environment:
#   A_CHAT_BIN=PATH        the a-chat binary (default target/release/a-chat)
#   A_CHAT_KEEP_LOGS=1     keep the scratch folder (configs, node, Redis and HAProxy logs)
#   E2E_CLIENTS=N          clients (default 300)
#   E2E_KILL=NODE          the node to kill (default n2); `none` kills nobody
#   E2E_STOP=lame          stop that node with lame duck mode (SIGQUIT) instead of SIGKILL:
#                          its clients must be told, closed spread over lame_duck_duration
#                          (not all in one second), and back on the other nodes in time;
#                          nothing lost between the others, no accept queue overflowing
#                          (TcpExtListenOverflows), and the node drains and exits 0
#   E2E_NODES=N            nodes (default 3)
#   E2E_REDIS=0            plain nodes without [cluster] and no Redis: for trying the script
#                          and HAProxy on a binary without the cluster (with E2E_NODES=1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
CLIENTS="${E2E_CLIENTS:-300}"
KILL="${E2E_KILL:-n2}"
STOP="${E2E_STOP:-kill}"
LAME_DELAY=1            # seconds: [shutdown] drain_delay of every node
LAME_SPREAD=4           # seconds: [shutdown] lame_duck_duration of every node
NODES="${E2E_NODES:-3}"
USE_REDIS="${E2E_REDIS:-1}"
LEASE=2                 # seconds: [cluster] lease of every node
SLACK=2                 # seconds a dead node's client may take beyond the lease to be back
SEND_SECONDS=14         # how long the clients send
KILL_AFTER=5            # seconds into the sending when the node is killed
DRIVER_TIMEOUT=70       # seconds cluster-e2e.py may run in all before it is killed
DRAIN_WAIT=8            # seconds for a surviving node to drain and exit (drain_timeout 5s)
START_TIMEOUT=5         # seconds for each process to be ready (they need well under one)
WORK="$(mktemp -d /tmp/a-chat-cluster-e2e.XXXXXX)"
PIDS=()                 # every process started here (lib.sh's stop_tracked stops them)
declare -A NODE_PID=() CHAT_PORT=() ADMIN_PORT=()
DRIVER_PID=""

say() { printf "[e2e] %s\n" "$*"; }

# Called by the EXIT trap: stops the driver, HAProxy, the nodes and Redis, whatever happened.
# shellcheck disable=SC2317,SC2329
cleanup() {
    set +e  # lib.sh's helpers expect some commands to fail
    stop_pid TERM "$DRIVER_PID"
    local i
    # TERM, not lib.sh's INT: a background job of a script ignores SIGINT unless it sets a
    # handler of its own, and haproxy does not (a-chat and redis-server do; TERM suits all).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid TERM "${PIDS[i]}"; done
    remove_work "$WORK"
}
trap cleanup EXIT
trap 'say "interrupted: stopping what it started"; exit 1' INT TERM

if ! [[ "$CLIENTS" =~ ^[0-9]+$ ]] || [ "$CLIENTS" -lt 2 ]; then
    say "E2E_CLIENTS must be a number of at least 2"; exit 2
fi
[[ "$NODES" =~ ^[1-9]$ ]] || { say "E2E_NODES must be 1 to 9"; exit 2; }
[[ "$STOP" = kill || "$STOP" = lame ]] || { say "E2E_STOP must be kill or lame"; exit 2; }
[[ "$KILL" = none || "$KILL" =~ ^n[1-9]$ ]] || { say "E2E_KILL must be a node name (n1 .. n$NODES) or none"; exit 2; }
if [ "$KILL" != none ] && [ "${KILL#n}" -gt "$NODES" ]; then
    say "E2E_KILL=$KILL, but there are only $NODES nodes"; exit 2
fi

# 1. What the run needs.
BIN="${A_CHAT_BIN:-$ROOT/target/release/a-chat}"
[ -x "$BIN" ] || { say "no a-chat binary at $BIN (cargo build --release, or set A_CHAT_BIN)"; exit 1; }
for tool in python3 haproxy; do
    command -v "$tool" >/dev/null || { say "$tool is missing (the Debian package of the same name)"; exit 1; }
done
if [ "$USE_REDIS" = 1 ]; then
    command -v redis-server >/dev/null || { say "redis-server is missing (Debian package redis-server)"; exit 1; }
fi

# shellcheck disable=SC2317,SC2329  # answers, readyz and lb_accepts run through wait_for
# answers PORT REQUEST EXPECTED: sends REQUEST to 127.0.0.1:PORT and checks that the first
# line of the answer starts with EXPECTED (a bash socket: no curl or redis-cli needed).
answers() {
    local port="$1" request="$2" expected="$3" line
    line="$( {
        exec 3<>"/dev/tcp/127.0.0.1/$port" && printf '%b' "$request" >&3 && IFS= read -r -t 1 l <&3
        printf '%s' "${l:-}"
    } 2>/dev/null)" || true
    [[ "$line" == "$expected"* ]]
}
# shellcheck disable=SC2317,SC2329
readyz() { answers "$1" 'GET /readyz HTTP/1.0\r\n\r\n' 'HTTP/1.1 200'; }

# wait_for WHAT PID CHECK...: polls CHECK every 100 ms until it succeeds (0), PID exits or
# START_TIMEOUT runs out (1, with a message).
wait_for() {
    local what="$1" pid="$2" i
    shift 2
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || { say "$what exited at start"; return 1; }
        sleep 0.1
    done
    say "$what was not ready within $START_TIMEOUT s"
    return 1
}

# admin_port LOG: the port of a-chat's `admin listening on 127.0.0.1:PORT` line in LOG.
admin_port() { grep -m1 -o 'admin listening on 127\.0\.0\.1:[0-9]*' "$1" 2>/dev/null | cut -d: -f2; }

# 2. Redis.
REDIS_URL=""
if [ "$USE_REDIS" = 1 ]; then
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --loglevel warning >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for "redis-server" "$REDIS_PID" answers "$REDIS_PORT" 'PING\r\n' '+PONG' || { show "$WORK/redis.log"; exit 1; }
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
    say "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT ($(redis-server --version | cut -d' ' -f3))"
else
    say "E2E_REDIS=0: plain nodes, no [cluster], no Redis"
fi

# 3. The nodes.
NAMES=()
for ((n = 1; n <= NODES; n++)); do
    node="n$n"
    NAMES+=("$node")
    conf="$WORK/$node.toml"
    log="$WORK/$node.log"
    {
        cat <<EOF
# a-chat node $node of the cluster end-to-end test (deploy/cluster-e2e.sh)
[server]
listen = "127.0.0.1:0"
max_connections = 2000
# HAProxy (send-proxy-v2) says whose each connection is. It connects from 127.0.0.2
# (\`source\`, as deploy/cluster/haproxy.cfg does), so clients on 127.0.0.1 reach a node
# directly without a header.
proxy_protocol_from = ["127.0.0.2"]

[shutdown]
drain_timeout = "5s"
drain_delay = "${LAME_DELAY}s"
lame_duck_duration = "${LAME_SPREAD}s"

[admin]
listen = "127.0.0.1:0"
EOF
        if [ "$USE_REDIS" = 1 ]; then
            cat <<EOF

[cluster]
redis = "$REDIS_URL"
node_id = "$node"
lease = "${LEASE}s"
EOF
        fi
    } >"$conf"
    if ! out="$("$BIN" check-config "$conf" 2>&1)"; then
        say "node $node: its config fails check-config:"
        printf '%s\n' "$out" | sed -e 's/^/    | /'
        exit 1
    fi
    "$BIN" server --config "$conf" 2>"$log" &
    pid=$!
    PIDS+=("$pid")
    NODE_PID[$node]=$pid
    CHAT_PORT[$node]="$(listening_port "$log" "$pid")"
    ADMIN_PORT[$node]="$(admin_port "$log")"
    if [ -z "${CHAT_PORT[$node]}" ] || [ -z "${ADMIN_PORT[$node]}" ]; then
        say "node $node did not report its chat and admin ports"
        show "$log"
        exit 1
    fi
    wait_for "node $node (/readyz)" "$pid" readyz "${ADMIN_PORT[$node]}" || { show "$log"; exit 1; }
    say "node $node pid $pid: chat 127.0.0.1:${CHAT_PORT[$node]}, admin 127.0.0.1:${ADMIN_PORT[$node]}, /readyz 200"
done

# 4. HAProxy.
LB_PORT="$(free_port)"
HAPROXY_SOCK="$WORK/haproxy.sock"
{
    cat <<EOF
# HAProxy in front of the a-chat nodes of deploy/cluster-e2e.sh
global
    maxconn 4000
    stats socket $HAPROXY_SOCK mode 600 level user

defaults
    mode tcp
    # Chat connections are long and often quiet: never cut them for being idle.
    timeout client 10m
    timeout server 10m
    # Loopback: a connect that is not answered at once goes to a dead node.
    timeout connect 300ms
    # A refused connect (a node that just died, not yet marked down) is retried on another.
    retries 3
    option redispatch 1

frontend chat
    bind 127.0.0.1:$LB_PORT
    default_backend nodes

backend nodes
    balance roundrobin
    source 127.0.0.2
EOF
    for node in "${NAMES[@]}"; do
        printf '    server %s 127.0.0.1:%s send-proxy-v2 check inter 200ms fall 1 rise 2\n' "$node" "${CHAT_PORT[$node]}"
    done
} >"$WORK/haproxy.cfg"
if ! out="$(haproxy -c -f "$WORK/haproxy.cfg" 2>&1)"; then
    say "haproxy -c refuses the generated config:"
    printf '%s\n' "$out" | sed -e 's/^/    | /'
    exit 1
fi
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
# shellcheck disable=SC2317,SC2329
lb_accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$LB_PORT") 2>/dev/null; }
wait_for "haproxy" "$HAPROXY_PID" lb_accepts || { show "$WORK/haproxy.log"; exit 1; }
say "haproxy pid $HAPROXY_PID ($(haproxy -v | head -n1 | cut -d' ' -f3)): 127.0.0.1:$LB_PORT -> ${NAMES[*]}, roundrobin, check every 200 ms"

# A client on this machine reaches a node directly, without a PROXY header, as an operator's
# `a-chat client 127.0.0.1:PORT` does: only the balancer's source address is asked for one.
direct_chat() {
    local port="$1" line=""
    exec 4<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'direct-%s\ndirect-%s: hello\n' "$port" "$port" >&4
    IFS= read -r -t 5 line <&4 || true
    exec 4<&-
    [ "$line" = "from direct-$port: hello" ] || { say "direct client on port $port got: ${line:-nothing}"; return 1; }
}
for node in "${NAMES[@]}"; do
    direct_chat "${CHAT_PORT[$node]}" || { show "$WORK/$node.log"; exit 1; }
done
say "a direct client on 127.0.0.1 chats with each node without a PROXY header"

# 5. The clients, and the kill when they ask for it.
RESULT="$WORK/result"
ADMINS=()
for node in "${NAMES[@]}"; do ADMINS+=(--admin "$node=127.0.0.1:${ADMIN_PORT[$node]}"); done
kill_after="$KILL_AFTER"
[ "$KILL" = none ] && kill_after=-1
relogin_limit=$((LEASE + SLACK))
[ "$STOP" = lame ] && relogin_limit=$((LAME_DELAY + LAME_SPREAD + SLACK))
# The kernel's count of connections dropped from full accept queues, machine-wide.
listen_overflows() {
    awk '/^TcpExt:/ { if (!seen) { for (i = 1; i <= NF; i++) key[i] = $i; seen = 1 }
                      else { for (i = 1; i <= NF; i++) if (key[i] == "ListenOverflows") print $i } }' /proc/net/netstat
}
OVERFLOWS_BEFORE="$(listen_overflows)"
timeout --kill-after=5 "$DRIVER_TIMEOUT" python3 -u "$ROOT/deploy/cluster-e2e.py" run \
    --addr "127.0.0.1:$LB_PORT" "${ADMINS[@]}" --work "$WORK" --result "$RESULT" \
    --haproxy-socket "$HAPROXY_SOCK" --clients "$CLIENTS" --lease "$LEASE" --slack "$SLACK" \
    --send-seconds "$SEND_SECONDS" --kill-after "$kill_after" --stop "$STOP" \
    --relogin-limit "$relogin_limit" --spread "$LAME_SPREAD" --delay "$LAME_DELAY" \
    2>"$WORK/cluster-e2e.py.err" &
DRIVER_PID=$!
REASONS=()
KILLED_STATUS=""
if [ "$KILL" != none ]; then
    while kill -0 "$DRIVER_PID" 2>/dev/null && [ ! -e "$WORK/kill-request" ]; do sleep 0.02; done
    if [ -e "$WORK/kill-request" ]; then
        pid="${NODE_PID[$KILL]}"
        when="${EPOCHREALTIME/,/.}"  # the time just before the signal
        if [ "$STOP" = lame ]; then
            kill -QUIT "$pid"
            printf '%s %s\n' "$KILL" "$when" >"$WORK/killed"
            # It leaves by itself: the delay, the spread, then its drain.
            for ((i = 0; i < (LAME_DELAY + LAME_SPREAD + DRAIN_WAIT) * 10; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                REASONS+=("node $KILL did not leave within $((LAME_DELAY + LAME_SPREAD + DRAIN_WAIT)) s of SIGQUIT")
            fi
        else
            kill -KILL "$pid"
            printf '%s %s\n' "$KILL" "$when" >"$WORK/killed"
        fi
        KILLED_STATUS=0
        wait "$pid" 2>/dev/null || KILLED_STATUS=$?
        forget_pid "$pid"
        if [ "$STOP" = lame ]; then
            say "SIGQUIT to node $KILL (pid $pid): lame duck mode, then the drain; exit status $KILLED_STATUS"
            [ "$KILLED_STATUS" = 0 ] || { REASONS+=("node $KILL exited $KILLED_STATUS after lame duck mode"); show "$WORK/$KILL.log"; }
        else
            say "SIGKILL to node $KILL (pid $pid, exit status $KILLED_STATUS)"
        fi
    fi
fi
status=0
wait "$DRIVER_PID" || status=$?
DRIVER_PID=""
if [ "$status" -ne 0 ] || [ ! -f "$RESULT" ]; then
    REASONS+=("cluster-e2e.py failed (status $status$([ "$status" = 124 ] && echo ', timed out'))")
    show "$WORK/cluster-e2e.py.err"
else
    while IFS= read -r reason; do
        [ -n "$reason" ] && REASONS+=("$reason")
    done <"$RESULT"
fi
[ "$KILL" != none ] && [ -z "$KILLED_STATUS" ] && REASONS+=("node $KILL was never killed")
if [ "$STOP" = lame ]; then
    overflows=$(($(listen_overflows) - OVERFLOWS_BEFORE))
    say "accept queues: $overflows connections dropped from full ones during the run (TcpExtListenOverflows)"
    [ "$overflows" -eq 0 ] || REASONS+=("$overflows connections were dropped from full accept queues")
fi

# 6. The surviving nodes drain.
for node in "${NAMES[@]}"; do
    [ "$node" = "$KILL" ] && continue
    pid="${NODE_PID[$node]}"
    if ! kill -0 "$pid" 2>/dev/null; then
        REASONS+=("node $node died during the run")
        show "$WORK/$node.log"
        continue
    fi
    kill -TERM "$pid"
    status=0
    for ((i = 0; i < DRAIN_WAIT * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        REASONS+=("node $node did not exit within $DRAIN_WAIT s of SIGTERM")
        continue
    fi
    wait "$pid" 2>/dev/null || status=$?
    forget_pid "$pid"
    if [ "$status" -eq 0 ]; then
        say "node $node: SIGTERM, drained and exited 0 ($(grep -c ' ERROR ' "$WORK/$node.log" || true) error lines in its log)"
    else
        REASONS+=("node $node exited $status after SIGTERM")
        show "$WORK/$node.log"
    fi
done

if [ "${#REASONS[@]}" -eq 0 ]; then
    echo "cluster-e2e: PASS"
    exit 0
fi
joined="$(printf '%s; ' "${REASONS[@]}")"
echo "cluster-e2e: FAIL (${joined%; })"
exit 1

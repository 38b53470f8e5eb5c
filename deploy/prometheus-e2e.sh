#!/usr/bin/env bash
# deploy/prometheus-e2e.sh: check a-chat's admin endpoint with a real Prometheus server, the
# way an operator would wire it: Prometheus scrapes /metrics, the target is up, and an
# a-chat counter in Prometheus moves by exactly the chat traffic this script sends.
#
# Steps:
#   1. take the a-chat binary (A_CHAT_BIN, else the newer of target/release and
#      target/debug, else `cargo build --release`)
#   2. install the Debian `prometheus` package with apt-get if `prometheus` is missing
#   3. start a-chat with chat and admin endpoints on free 127.0.0.1 ports (port 0; the
#      ports are read from its log), the admin endpoint wanting a bearer token for
#      /metrics ([admin] tokens_file); check /metrics answers 401 without it
#   4. start Prometheus on a free 127.0.0.1 port with a temporary config (scrape a-chat
#      every second, presenting the token from a file) and a temporary storage folder
#   5. wait for the first scrape and check up{job="a-chat"} == 1
#   6. send N chat messages over TCP, wait until Prometheus has scraped them, and check
#      achat_messages_received_total and achat_deliveries_written_total == N
#   7. the shipped alert rules (deploy/observability/a-chat-alerts.yml): promtool checks
#      them and runs their test cases, and this Prometheus loads them
#   8. the shipped dashboard (deploy/observability/a-chat-dashboard.json): `a-chat bench`
#      runs against a-chat for a few seconds, then every panel's query must return data
#      from this Prometheus
#   9. stop a-chat with SIGTERM: it drains and exits 0
# Every wait has a timeout and prints its progress; all traffic stays on loopback. Both
# processes and the temporary files are removed on exit. Exit status: 0 if every check
# passed, 1 otherwise.
#
# Environment:
#   A_CHAT_BIN=PATH         use this a-chat binary
#   A_CHAT_E2E_WAIT=SECS    timeout of each wait (default 30)
#   A_CHAT_KEEP_LOGS=1      keep the work folder (logs, configs) after the run

# The checks are small functions passed to wait_for by name, which shellcheck cannot see.
# shellcheck disable=SC2329
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
WORK="$(mktemp -d /tmp/a-chat-prometheus-e2e.XXXXXX)"
WAIT="${A_CHAT_E2E_WAIT:-30}"
MESSAGES=5
ACHAT_PID=""
PROM_PID=""
PASSED=0
FAILED=0
STARTED=$SECONDS

say()  { printf '[prometheus-e2e] %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); say "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); say "FAIL: $*"; }
# Stops a process this script started: SIGTERM, then SIGKILL.
stop() { stop_pid TERM "$1"; }

cleanup() {
    stop "$PROM_PID"
    stop "$ACHAT_PID"
    remove_work "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

verdict() {
    say "$PASSED passed, $FAILED failed, $((SECONDS - STARTED)) s"
    if [ "$FAILED" -eq 0 ]; then
        say "VERDICT: PASS"
        exit 0
    fi
    say "VERDICT: FAIL"
    exit 1
}

# Gives up with the verdict after a failure that leaves nothing else to check.
fatal() { fail "$*"; verdict; }

# Waits up to WAIT seconds for `$@` to succeed, printing progress every 5 s.
wait_for() {
    local what="$1" i
    shift
    for ((i = 0; i < WAIT * 10; i++)); do
        "$@" && return 0
        if ((i > 0 && i % 50 == 0)); then say "  still waiting for $what ($((i / 10)) s)"; fi
        sleep 0.1
    done
    return 1
}

# A TCP port on 127.0.0.1 that nothing listens on (Prometheus cannot report an ephemeral
# port, so one is picked here). It is taken below the kernel's ephemeral range, where the
# other tests' client sockets get theirs; a race still lost shows as a bind error in
# Prometheus's log, and step 4 starts it again on another port.
free_port() {
    local port low
    low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)"
    low="${low:-32768}"
    ((low > 11000)) || low=32768
    for _ in $(seq 1 50); do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# The value of the first sample a PromQL query returns, or nothing.
query() {
    curl -fsS --max-time 5 -G --data-urlencode "query=$1" \
        "http://127.0.0.1:$PROM_PORT/api/v1/query" 2>/dev/null |
        grep -o '"value":\[[^]]*\]' | head -n 1 | sed -e 's/.*,"\([^"]*\)"\]$/\1/'
}

query_is() { [ "$(query "$1")" = "$2" ]; }

# 1. The binary.
BIN="${A_CHAT_BIN:-}"
if [ -z "$BIN" ]; then
    for candidate in "$ROOT/target/release/a-chat" "$ROOT/target/debug/a-chat"; do
        if [ -x "$candidate" ] && { [ -z "$BIN" ] || [ "$candidate" -nt "$BIN" ]; }; then
            BIN="$candidate"
        fi
    done
fi
if [ -z "$BIN" ]; then
    say "building a-chat (cargo build --release)"
    (cd "$ROOT" && cargo build --release --bin a-chat) || fatal "cargo build failed"
    BIN="$ROOT/target/release/a-chat"
fi
say "a-chat binary: $BIN"

# 2. Prometheus.
if ! command -v prometheus >/dev/null; then
    say "installing prometheus (apt-get)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus; } \
        >"$WORK/apt.log" 2>&1 || { show "$WORK/apt.log"; fatal "cannot install prometheus"; }
fi
say "$(prometheus --version 2>&1 | head -n 1)"

# 3. a-chat, on ephemeral ports, its admin endpoint wanting a token for /metrics.
TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s' "$TOKEN" >"$WORK/prometheus-token"
cat >"$WORK/admin-tokens.toml" <<EOF
[tokens]
prometheus = "$TOKEN"
EOF
chmod 600 "$WORK/admin-tokens.toml" "$WORK/prometheus-token"
cat >"$WORK/a-chat.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[limits]
# a-chat bench (step 8) sends at full speed, past the default per-client rate
messages_per_second = 0
[admin]
listen = "127.0.0.1:0"
tokens_file = "$WORK/admin-tokens.toml"
EOF
"$BIN" server --config "$WORK/a-chat.toml" 2>"$WORK/a-chat.log" &
ACHAT_PID=$!
admin_logged() { grep -q 'admin listening on ' "$WORK/a-chat.log"; }
if ! wait_for "a-chat to listen" admin_logged; then
    show "$WORK/a-chat.log"
    fatal "a-chat did not report its admin address (a binary without the admin endpoint?)"
fi
CHAT_ADDR="$(grep -o ' listening on [0-9.:]*' "$WORK/a-chat.log" | grep -v admin | head -n 1 | awk '{print $3}')"
ADMIN_ADDR="$(grep -o 'admin listening on [0-9.:]*' "$WORK/a-chat.log" | head -n 1 | awk '{print $4}')"
CHAT_PORT="${CHAT_ADDR##*:}"
say "a-chat: chat on $CHAT_ADDR, admin on $ADMIN_ADDR"
# The page is read whole before it is searched: `grep -q` stops at its first
# match, and curl, still writing a page that has grown past a pipe's buffer,
# would fail with "Failed writing body" and fail the pipeline with it.
UNAUTHORIZED="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$ADMIN_ADDR/metrics")"
if [ "$UNAUTHORIZED" = 401 ]; then
    pass "/metrics without the token: 401"
else
    fail "/metrics without the token answered $UNAUTHORIZED, expected 401"
fi
METRICS_PAGE="$(curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://$ADMIN_ADDR/metrics")"
if grep -q '^achat_messages_received_total 0$' <<<"$METRICS_PAGE"; then
    pass "a-chat serves /metrics"
else
    fail "a-chat's /metrics is not what Prometheus expects"
fi

# 4. Prometheus, scraping a-chat every second.
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/observability/a-chat-alerts.yml
scrape_configs:
  - job_name: a-chat
    authorization:
      credentials_file: $WORK/prometheus-token
    static_configs:
      - targets: ["$ADMIN_ADDR"]
EOF
# Ready, or gone (a port taken between the pick and the bind): either ends the wait.
prom_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 ||
        ! kill -0 "$PROM_PID" 2>/dev/null
}
for attempt in 1 2 3 4 5; do
    PROM_PORT="$(free_port)" || fatal "no free port for Prometheus"
    prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
        --web.listen-address="127.0.0.1:$PROM_PORT" 2>"$WORK/prometheus.log" &
    PROM_PID=$!
    say "prometheus on 127.0.0.1:$PROM_PORT"
    if ! wait_for "prometheus to start" prom_ready; then
        show "$WORK/prometheus.log"
        fatal "prometheus did not become ready"
    fi
    kill -0 "$PROM_PID" 2>/dev/null && break
    if grep -q "address already in use" "$WORK/prometheus.log" && ((attempt < 5)); then
        say "  port $PROM_PORT was taken meanwhile: another (attempt $((attempt + 1)))"
        continue
    fi
    show "$WORK/prometheus.log"
    fatal "prometheus exited at start"
done

# 5. The first scrape.
scraped() { [ -n "$(query 'up{job="a-chat"}')" ]; }
if ! wait_for "the first scrape" scraped; then
    show "$WORK/prometheus.log"
    fatal "prometheus never scraped a-chat"
fi
if query_is 'up{job="a-chat"}' 1; then
    pass 'up{job="a-chat"} == 1'
else
    fail "up{job=\"a-chat\"} is $(query 'up{job="a-chat"}'); the target says:"
    curl -fsS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/targets" | grep -o '"lastError":"[^"]*"'
fi

# 6. Chat traffic: one user sends MESSAGES lines to itself and reads them back.
chat() {
    local fd i line
    exec {fd}<>"/dev/tcp/127.0.0.1/$CHAT_PORT" || return 1
    printf 'e2e\n' >&"$fd"
    for ((i = 1; i <= MESSAGES; i++)); do printf 'e2e: hello %d\n' "$i" >&"$fd"; done
    for ((i = 1; i <= MESSAGES; i++)); do
        IFS= read -r -t 5 line <&"$fd" || { exec {fd}>&-; return 1; }
        [ "$line" = "from e2e: hello $i" ] || { exec {fd}>&-; return 1; }
    done
    exec {fd}>&-
}
if chat; then
    pass "$MESSAGES chat messages sent and received"
else
    fail "the chat exchange failed"
fi
received() { query_is 'achat_messages_received_total{job="a-chat"}' "$MESSAGES"; }
if wait_for "a scrape after the chat traffic" received; then
    pass "achat_messages_received_total == $MESSAGES in Prometheus"
else
    fail "achat_messages_received_total is $(query 'achat_messages_received_total{job="a-chat"}'), expected $MESSAGES"
fi
delivered() { query_is 'achat_deliveries_written_total{job="a-chat"}' "$MESSAGES"; }
if wait_for "the delivered counter" delivered; then
    pass "achat_deliveries_written_total == $MESSAGES in Prometheus"
else
    fail "achat_deliveries_written_total is $(query 'achat_deliveries_written_total{job="a-chat"}'), expected $MESSAGES"
fi

# 7. The alert rules: checked, their test cases run, and loaded by this Prometheus.
OBS="$ROOT/deploy/observability"
if promtool check rules "$OBS/a-chat-alerts.yml" >"$WORK/promtool.log" 2>&1 &&
    (cd "$OBS" && promtool test rules a-chat-alerts.test.yml) >>"$WORK/promtool.log" 2>&1; then
    pass "promtool: the alert rules are valid and every test case passes"
else
    show "$WORK/promtool.log"
    fail "promtool refused the alert rules or a test case failed"
fi
RULES_LOADED="$(curl -fsS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/rules" | grep -o '"type":"alerting"' | wc -l)"
if [ "$RULES_LOADED" -eq "$(grep -c -- '- alert:' "$OBS/a-chat-alerts.yml")" ]; then
    pass "Prometheus loaded the $RULES_LOADED alert rules"
else
    fail "Prometheus loaded $RULES_LOADED alerting rules"
fi

# 8. The dashboard: every panel's query returns data once a-chat has been under load.
if "$BIN" bench --addr "$CHAT_ADDR" -q -d 3s direct >"$WORK/bench.log" 2>&1; then
    pass "a-chat bench ran against a-chat for 3 s"
else
    show "$WORK/bench.log"
    fail "a-chat bench failed (is a-chat-bench installed beside a-chat?)"
fi
busy() { [ -n "$(query 'rate(achat_deliveries_written_total{job="a-chat"}[1m]) > 0')" ]; }
wait_for "a scrape of the bench's traffic" busy || fail "Prometheus saw no deliveries from the bench"
EXPRS="$(python3 -c 'import json,sys
for p in json.load(open(sys.argv[1]))["panels"]:
    for t in p["targets"]:
        print(t["expr"])' "$OBS/a-chat-dashboard.json")"
EMPTY=0
TOTAL=0
while IFS= read -r expr; do
    TOTAL=$((TOTAL + 1))
    if [ -z "$(query "$expr")" ]; then
        EMPTY=$((EMPTY + 1))
        say "  no data: $expr"
    fi
done <<<"$EXPRS"
if [ "$EMPTY" -eq 0 ]; then
    pass "every one of the dashboard's $TOTAL queries returns data"
else
    fail "$EMPTY of the dashboard's $TOTAL queries return no data"
fi

# 9. a-chat drains and exits 0 on SIGTERM.
kill -TERM "$ACHAT_PID"
exited() { ! kill -0 "$ACHAT_PID" 2>/dev/null; }
if wait_for "a-chat to drain" exited; then
    wait "$ACHAT_PID"
    status=$?
    ACHAT_PID=""
    if [ "$status" -eq 0 ] && grep -q 'drain finished' "$WORK/a-chat.log"; then
        pass "a-chat drained and exited 0 on SIGTERM"
    else
        show "$WORK/a-chat.log"
        fail "a-chat exited with status $status"
    fi
else
    fail "a-chat did not exit after SIGTERM"
fi

verdict

#!/usr/bin/env bash
# deploy/verify-deploy.sh: checks the deployment files an operator copies onto a machine,
# without installing anything:
#   1. `systemd-analyze verify` on deploy/a-chat.service (with deploy/a-chat.socket) and on
#      the cluster template deploy/a-chat@.service (as its instance a-chat@n1.service), in a
#      scratch root that holds stand-ins for the programs the units run (/usr/local/bin/a-chat,
#      /bin/kill), so that a missing binary on this machine does not hide a real mistake
#   2. `systemd-analyze security --offline=true` on both units: exposure 1.0 or lower
#      (docs/OPERATIONS.md, "Measured exposure")
#   1b, 2b. the same two checks on both units with their commented LoadCredential= lines
#      turned on (as docs/OPERATIONS.md, "Secrets", has the operator do), the credential
#      files present in the scratch root
#   3. `a-chat check-config` on each example cluster node config, deploy/cluster/n*.toml
#   4. `haproxy -c` on deploy/cluster/haproxy.cfg, and that its servers are the nodes'
#      chat ports, each sent PROXY headers (send-proxy-v2) that the node takes (its
#      proxy_protocol_from lists the balancer) and checked on that node's admin port (/readyz)
#   5. the release binary: no debug info, and `--version` names the commit
#   6. where systemd-nspawn is installed and this runs as root, deploy/units-nspawn.sh:
#      the unit booted under a real systemd, reading its secrets as credentials (skipped,
#      not failed, where the container cannot boot)
# One line per check; exit 0 when all pass, 1 otherwise. A tool that is missing (systemd,
# haproxy) fails its checks: CI installs both.
#
# Environment:
#   A_CHAT_BIN=PATH   the a-chat binary (default target/release/a-chat, else target/debug/a-chat)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
WORK="$(mktemp -d /tmp/a-chat-verify-deploy.XXXXXX)"
FAILED=0

say() { printf '[verify-deploy] %s\n' "$*"; }
pass() { say "ok: $*"; }
fail() { say "FAIL: $*"; FAILED=1; }

# shellcheck disable=SC2317,SC2329  # called by the EXIT trap
cleanup() { remove_work "$WORK"; }
trap cleanup EXIT

BIN="${A_CHAT_BIN:-}"
if [ -z "$BIN" ]; then
    BIN="$ROOT/target/release/a-chat"
    [ -x "$BIN" ] || BIN="$ROOT/target/debug/a-chat"
fi

# 1, 2. The systemd units.
if command -v systemd-analyze >/dev/null; then
    R="$WORK/root"
    mkdir -p "$R/etc/systemd/system" "$R/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$R/usr/lib/systemd/"   # the targets the units refer to
    cp "$ROOT/deploy/a-chat.service" "$ROOT/deploy/a-chat.socket" "$ROOT/deploy/a-chat@.service" \
        "$R/etc/systemd/system/"
    # A stand-in for every program an Exec line names (the first word after `=` and any `-@:+!` prefixes).
    while IFS= read -r prog; do
        mkdir -p "$R$(dirname "$prog")"
        printf '#!/bin/sh\nexit 0\n' >"$R$prog"
        chmod 0755 "$R$prog"
    done < <(sed -n -e 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$ROOT"/deploy/a-chat*.service | sort -u)
    # verify_units WHAT: `systemd-analyze verify` of both units in the scratch root.
    verify_units() {
        for unit in a-chat.service a-chat@n1.service; do
            if out="$(systemd-analyze verify --root="$R" "$unit" 2>&1)" && [ -z "$out" ]; then
                pass "systemd-analyze verify $unit$1: clean"
            else
                fail "systemd-analyze verify $unit$1:"
                printf '%s\n' "$out" | sed -e 's/^/    | /'
            fi
        done
    }
    # measure_units DIR WHAT: the exposure of a-chat.service and a-chat@n1.service in DIR.
    measure_units() {
        cp "$1/a-chat@.service" "$1/a-chat@n1.service"
        for unit in "$1/a-chat.service" "$1/a-chat@n1.service"; do
            name="$(basename "$unit")"
            out="$(systemd-analyze security --offline=true --threshold=10 "$unit" 2>&1)" && status=0 || status=$?
            level="$(printf '%s\n' "$out" | grep -o 'Overall exposure level for [^:]*: [0-9.]*' | sed 's/.*: //')"
            if [ "$status" -eq 0 ] && [ -n "$level" ]; then
                pass "systemd-analyze security $name$2: exposure $level (at most 1.0)"
            else
                fail "systemd-analyze security $name$2: exposure ${level:-unknown}, over 1.0 (status $status)"
            fi
        done
    }
    verify_units ""
    mkdir -p "$WORK/as-shipped"
    cp "$ROOT/deploy/a-chat.service" "$ROOT/deploy/a-chat@.service" "$WORK/as-shipped/"
    measure_units "$WORK/as-shipped" ""
    # 1b, 2b. With the LoadCredential= lines on, and the files they name in the scratch root.
    mkdir -p "$WORK/credentials"
    for unit in a-chat.service a-chat@.service; do
        sed -e 's/^#LoadCredential=/LoadCredential=/' "$ROOT/deploy/$unit" >"$R/etc/systemd/system/$unit"
        cp "$R/etc/systemd/system/$unit" "$WORK/credentials/"
    done
    if ! grep -q '^LoadCredential=' "$R/etc/systemd/system/a-chat.service"; then
        fail "deploy/a-chat.service has no commented LoadCredential= lines to turn on"
    fi
    while IFS= read -r source; do
        source="${source//%i/n1}"
        mkdir -p "$R$(dirname "$source")"
        : >"$R$source"
        chmod 0600 "$R$source"
    done < <(sed -n -e 's/^LoadCredential=[^:]*:\(.*\)/\1/p' "$R"/etc/systemd/system/a-chat*.service | sort -u)
    verify_units " with LoadCredential="
    measure_units "$WORK/credentials" " with LoadCredential="
    cp "$ROOT/deploy/a-chat.service" "$ROOT/deploy/a-chat@.service" "$R/etc/systemd/system/"
else
    fail "systemd-analyze is missing (Debian package systemd): the units were not checked"
fi

# 3. The example node configs.
CONFIGS=("$ROOT"/deploy/cluster/n*.toml)
if [ ! -x "$BIN" ]; then
    fail "no a-chat binary at $BIN (cargo build, or set A_CHAT_BIN): the node configs were not checked"
else
    for conf in "${CONFIGS[@]}"; do
        if out="$("$BIN" check-config --quiet "$conf" 2>&1)"; then
            pass "a-chat check-config deploy/cluster/$(basename "$conf")"
        else
            fail "a-chat check-config deploy/cluster/$(basename "$conf"):"
            printf '%s\n' "$out" | sed -e 's/^/    | /'
        fi
    done
fi

# 4. The HAProxy example, and that it points at the nodes.
CFG="$ROOT/deploy/cluster/haproxy.cfg"
if command -v haproxy >/dev/null; then
    if out="$(haproxy -c -f "$CFG" 2>&1)"; then
        pass "haproxy -c deploy/cluster/haproxy.cfg"
    else
        fail "haproxy -c deploy/cluster/haproxy.cfg:"
        printf '%s\n' "$out" | sed -e 's/^/    | /'
    fi
else
    fail "haproxy is missing (Debian package haproxy): deploy/cluster/haproxy.cfg was not checked"
fi
# value FILE SECTION KEY: the quoted value of KEY in [SECTION] of a TOML file.
value() {
    sed -n -e "/^\[$2\]/,/^\[/{s/^$3 *= *\"\([^\"]*\)\".*/\1/p}" "$1" | head -n1
}
# HAProxy holds two descriptors per connection: its maxconn must fit a 20 000 open-file limit.
maxconn="$(sed -n -e 's/^ *maxconn \([0-9]*\).*/\1/p' "$CFG" | head -n1)"
if [ -n "$maxconn" ] && [ $((2 * maxconn + 1000)) -le 20000 ]; then
    pass "haproxy.cfg: maxconn $maxconn fits a 20 000 open-file limit"
else
    fail "haproxy.cfg: maxconn ${maxconn:-unset} needs $((2 * ${maxconn:-0} + 1000)) descriptors, more than a 20 000 limit"
fi
lb_source="$(sed -n -e 's/^ *source \([0-9.]*\).*/\1/p' "$CFG" | head -n1)"
[ -n "$lb_source" ] || fail "haproxy.cfg: no \`source\` address: the nodes cannot tell the balancer from a direct client on the same machine"
for conf in "${CONFIGS[@]}"; do
    node="$(value "$conf" cluster node_id)"
    chat="$(value "$conf" server listen)"
    admin_port="$(value "$conf" admin listen | sed 's/.*://')"
    if [ "$node" != "$(basename "$conf" .toml)" ]; then
        fail "deploy/cluster/$(basename "$conf"): node_id \"$node\" is not the file's name (the unit's instance)"
    elif ! grep -Eq "^ *server $node $chat send-proxy-v2 check port $admin_port\$" "$CFG"; then
        fail "haproxy.cfg has no line \`server $node $chat send-proxy-v2 check port $admin_port\` for deploy/cluster/$(basename "$conf")"
    elif ! grep -Eq "^proxy_protocol_from *= *\[?\"${lb_source}(/32)?\"\]?\$" "$conf"; then
        # The balancer connects from its `source` address, and only it may send headers.
        fail "deploy/cluster/$(basename "$conf"): proxy_protocol_from is not exactly the balancer's source address (${lb_source}), which sends PROXY headers"
    elif [ "$lb_source" = "${chat%:*}" ]; then
        fail "haproxy.cfg: the balancer's source address is the nodes' own (${lb_source}): a direct client on it would be asked for a PROXY header"
    else
        pass "haproxy.cfg: server $node $chat with PROXY headers, which the node takes, checked on its admin port $admin_port"
    fi
done

# 5. The binary an operator installs: no debug info (61 MiB with it), and a version that
# names the commit it was built from, as NATS and Redis do.
if [ -x "$BIN" ] && [[ "$BIN" == */release/* ]]; then
    bytes="$(stat -c %s "$BIN")"
    if readelf -S "$BIN" 2>/dev/null | grep -q '\.debug_info'; then
        fail "$BIN carries debug info ($((bytes >> 20)) MiB): the release profile should strip it"
    elif [ "$bytes" -gt $((24 << 20)) ]; then
        fail "$BIN is $((bytes >> 20)) MiB, more than 24 MiB without debug info"
    else
        pass "$BIN: no debug info, $((bytes >> 20)) MiB"
    fi
    version="$("$BIN" --version)"
    if [[ "$version" =~ ^a-chat\ [0-9]+\.[0-9]+\.[0-9]+\ \(([0-9a-f]{12}|unknown)\)$ ]]; then
        pass "a-chat --version: $version"
    else
        fail "a-chat --version does not name a commit: $version"
    fi
fi

# 6. The unit under a real systemd, its secrets as credentials, where a container can boot.
if [ "$(id -u)" = 0 ] && command -v "${A_CHAT_NSPAWN:-systemd-nspawn}" >/dev/null && [ -x "$BIN" ]; then
    out="$(A_CHAT_BIN="$BIN" bash "$ROOT/deploy/units-nspawn.sh" 2>&1)" && status=0 || status=$?
    case "$status" in
        0) pass "deploy/units-nspawn.sh: under systemd, the unit reads its secrets as credentials, systemctl reload reports the outcome, and a-chat.socket keeps the configured listeners" ;;
        77) say "skipped: deploy/units-nspawn.sh: $(printf '%s\n' "$out" | grep SKIP | tail -n1)" ;;
        *) fail "deploy/units-nspawn.sh:"; printf '%s\n' "$out" | sed -e 's/^/    | /' ;;
    esac
else
    say "skipped: deploy/units-nspawn.sh (needs root, systemd-nspawn and the binary)"
fi

if [ "$FAILED" -eq 0 ]; then
    echo "verify-deploy: PASS"
    exit 0
fi
echo "verify-deploy: FAIL"
exit 1

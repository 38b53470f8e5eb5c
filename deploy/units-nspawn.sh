#!/usr/bin/env bash
# deploy/units-nspawn.sh: runs deploy/a-chat.service (and a-chat.socket) under a real systemd, booted in a
# throwaway systemd-nspawn container (docs/OPERATIONS.md, "Trying the unit in a throwaway
# system"), with its LoadCredential= lines turned on and every secret kept mode 0600 root
# in a 0700 root directory: the TLS key and certificate, the users file, the Redis password.
# It checks that:
#   1. the unit starts (DynamicUser=yes, the full sandbox) and reads all four through
#      $CREDENTIALS_DIRECTORY: a TLS login with a password works, and the node joins a
#      Redis that requires the password (/readyz 200)
#   2. the journal holds no password
#   3. `systemctl reload` re-reads the credentials (and says whether this systemd copied a
#      changed file anew: up to at least 252 it copies them at start only); a restart picks
#      up a new users file
#   4. for contrast, the same key as a plain 0640 root:root file, without credentials, is
#      unreadable to the dynamic user: that unit fails and restarts
#   5. a LoadCredential= whose file is missing stops the start (the units' comments say so)
#   6. `systemctl reload` reports the outcome: exit 0 when applied, non-zero (the reason in
#      the journal, the daemon serving on) for a file the daemon refuses
#   7. deploy/a-chat.socket's install lines work on the running service; with the chat port
#      passed and a TLS listener only in the file, both serve (the TLS one bound by the
#      daemon, with a warning); a restart then refuses no connect on the passed port
# One line per check; exit 0 when all pass, 1 when one fails, 77 when it cannot run here
# (not root, no systemd-nspawn, or the container does not boot).
#
# Environment:
#   A_CHAT_BIN=PATH       the a-chat binary (default target/release/a-chat, else target/debug/a-chat)
#   A_CHAT_NSPAWN=PATH    systemd-nspawn (default: the one on PATH)
#   A_CHAT_KEEP_LOGS=1    keep the scratch directory
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[units-nspawn] %s\n' "$*"; }
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
FAILED=0
pass() { say "ok: $*"; }
fail() { say "FAIL: $*"; FAILED=1; }
skip() { say "SKIP: $*"; exit 77; }

NSPAWN="${A_CHAT_NSPAWN:-$(command -v systemd-nspawn || true)}"
[ -n "$NSPAWN" ] && [ -x "$NSPAWN" ] || skip "no systemd-nspawn (Debian package systemd-container)"
[ "$(id -u)" = 0 ] || skip "needs root to boot a container"
BIN="${A_CHAT_BIN:-}"
if [ -z "$BIN" ]; then
    BIN="$ROOT/target/release/a-chat"
    [ -x "$BIN" ] || BIN="$ROOT/target/debug/a-chat"
fi
[ -x "$BIN" ] || { say "FAIL: no a-chat binary at $BIN (cargo build, or set A_CHAT_BIN)"; exit 1; }

WORK="$(mktemp -d /tmp/a-chat-credentials.XXXXXX)"
R="$WORK/root"
NSPAWN_PID=""
REDIS_PID=""
LEADER=""
PW="nspawn-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
# shellcheck disable=SC2317,SC2329  # called by the EXIT trap
cleanup() {
    set +e  # every step runs, whatever the one before it did
    if [ -n "$LEADER" ]; then
        nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
    fi
    stop_pid TERM "$NSPAWN_PID"
    stop_pid TERM "$REDIS_PID"
    remove_work "$WORK"
}
trap cleanup EXIT

# The container: the host's /etc and (through an overlay) /usr, nothing enabled but a-chat.
mkdir -p "$R" "$WORK/up/local/bin" "$WORK/pki"
(cd "$R" && mkdir -p var tmp root home run proc sys dev usr \
    && ln -s usr/bin bin && ln -s usr/sbin sbin && ln -s usr/lib lib && ln -s usr/lib64 lib64)
cp -a /etc "$R/etc"; : >"$R/etc/machine-id"
rm -f "$R/etc/os-release"; cp /usr/lib/os-release "$R/etc/os-release"
find "$R"/etc/systemd/system/*.wants -mindepth 1 -maxdepth 1 -delete
install -m 0755 "$BIN" "$WORK/up/local/bin/a-chat"

# The secrets: 0600 root in a 0700 root directory.
P="$WORK/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=a-chat nspawn CA" -keyout "$P/ca.key" -out "$P/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$P/server.key" -out "$P/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$P/server.ext"
openssl x509 -req -in "$P/server.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial \
    -days 2 -extfile "$P/server.ext" -out "$P/server.pem" 2>/dev/null
user_line() { printf '%s\n' "$2" | "$BIN" passwd "$1"; }
C="$R/etc/a-chat/credentials"
install -d -m 0700 -o root -g root "$C"
install -m 0600 -o root -g root "$P/server.key" "$C/tls.key"
install -m 0600 -o root -g root "$P/server.pem" "$C/tls.pem"
printf '[users]\n%s\n' "$(user_line alice wonderland)" >"$WORK/users.toml"
install -m 0600 -o root -g root "$WORK/users.toml" "$C/users.toml"
printf '%s\n' "$PW" >"$WORK/redis-password"
install -m 0600 -o root -g root "$WORK/redis-password" "$C/redis-password"
cat >"$WORK/a-chat.toml" <<EOF
[server]
listen = "127.0.0.1:28555"
[admin]
listen = "127.0.0.1:28556"
[tls]
listen = "127.0.0.1:28557"
cert = "credential:tls.pem"
key = "credential:tls.key"
[auth]
users_file = "credential:users"
[cluster]
redis = "redis://127.0.0.1:28558/"
redis_password_file = "credential:redis-password"
node_id = "n1"
lease = "2s"
EOF
install -D -m 0644 "$WORK/a-chat.toml" "$R/etc/a-chat/a-chat.toml"
sed -e 's/^#LoadCredential=/LoadCredential=/' "$ROOT/deploy/a-chat.service" \
    >"$R/etc/systemd/system/a-chat.service"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -s /etc/systemd/system/a-chat.service "$R/etc/systemd/system/multi-user.target.wants/"

# For contrast: the shipped unit as it is (no credentials), its key a plain 0640 root:root file.
install -d -m 0755 "$R/etc/a-chat/plain"
install -m 0640 -o root -g root "$P/server.key" "$R/etc/a-chat/plain/tls.key"
install -m 0644 "$P/server.pem" "$R/etc/a-chat/plain/tls.pem"
cat >"$R/etc/a-chat/plain.toml" <<EOF
[server]
listen = "127.0.0.1:28565"
[tls]
listen = "127.0.0.1:28567"
cert = "/etc/a-chat/plain/tls.pem"
key = "/etc/a-chat/plain/tls.key"
EOF
sed -e 's|/etc/a-chat/a-chat.toml|/etc/a-chat/plain.toml|g' -e '/^Wants=a-chat.socket/d' \
    -e '/^After=a-chat.socket/d' "$ROOT/deploy/a-chat.service" \
    >"$R/etc/systemd/system/a-chat-plain.service"

# descends PID ANCESTOR: whether PID is a child, grandchild... of ANCESTOR.
descends() {
    local pid="$1"
    while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
        pid="$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
        [ "$pid" = "$2" ] && return 0
    done
    return 1
}
"$NSPAWN" -D "$R" --overlay=/usr:"$WORK/up":/usr --private-network --register=no \
    --keep-unit --console=read-only -b >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 150); do
    for pid in $(pgrep -x systemd || true); do
        descends "$pid" "$NSPAWN_PID" && LEADER="$pid"
    done
    [ -n "$LEADER" ] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.2
done
[ -n "$LEADER" ] || { show "$WORK/console.log"; skip "the container did not boot (see above)"; }
in_ct() { nsenter -t "$LEADER" -a "$@"; }
net() { nsenter -t "$LEADER" -n "$@"; }
say "booted: $(in_ct systemctl --version | head -n1)"
# Redis with the password, in the container's network (the host's binary and files).
nsenter -t "$LEADER" -n redis-server --bind 127.0.0.1 --port 28558 --requirepass "$PW" --save '' --appendonly no \
    >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!

wait_active() {
    for _ in $(seq 150); do
        [ "$(in_ct systemctl is-active "$1" 2>/dev/null)" = active ] && return 0
        sleep 0.2
    done
    return 1
}
probe() {
    net env A_CHAT_PASSWORD="$2" "$BIN" probe --tls --ca "$P/ca.pem" --user "$1" \
        --timeout 5s 127.0.0.1:28557 >/dev/null 2>&1
}
readyz() { net curl -s -o /dev/null -w '%{http_code}' --max-time 3 http://127.0.0.1:28556/readyz || true; }
journal() { in_ct journalctl -u "$1" --no-pager -o cat 2>/dev/null; }

# 1. Started, as a dynamic user, with every secret from a credential.
if wait_active a-chat; then
    main="$(in_ct systemctl show -p MainPID --value a-chat)"
    user="$(in_ct ps -o user= -p "$main" | tr -d ' ')"
    pass "a-chat.service active (running) as the dynamic user $user, its secrets 0600 root: $(stat -c '%a %U' "$C/tls.key" "$C/users.toml" "$C/redis-password" | sort -u | tr '\n' ' ')"
    say "    the unit's copies: $(in_ct ls -l /run/credentials/a-chat.service | tail -n +2 | awk '{print $1, $3, $NF}' | tr '\n' ';')"
else
    fail "a-chat.service is not active:"; journal a-chat | tail -n 20 | sed -e 's/^/    | /'
fi
if probe alice wonderland; then
    pass "TLS login as alice with her password (key, certificate and users file from credentials)"
else
    fail "no TLS login as alice"; journal a-chat | tail -n 20 | sed -e 's/^/    | /'
fi
for _ in $(seq 50); do [ "$(readyz)" = 200 ] && break; sleep 0.2; done
if [ "$(readyz)" = 200 ] && journal a-chat | grep -q "joined the cluster"; then
    pass "joined a Redis that requires the password from the credential (/readyz 200)"
else
    fail "did not join the cluster's Redis (/readyz $(readyz))"; journal a-chat | tail -n 20 | sed -e 's/^/    | /'
fi

# 3. Reload: `systemctl reload` waits for the outcome (ExecReload= is `a-chat reload`); the
# credentials are re-read; a changed source reaches the daemon at the latest at a restart.
printf '[users]\n%s\n%s\n' "$(user_line alice wonderland)" "$(user_line bob builder)" >"$WORK/users.toml"
install -m 0600 -o root -g root "$WORK/users.toml" "$C/users.toml"
if in_ct systemctl reload a-chat && journal a-chat | grep -q "reloaded: applied" && probe alice wonderland; then
    if probe bob builder; then
        pass "systemctl reload waited for the reload (exit 0, \"$(journal a-chat | grep "reloaded: applied" | tail -n1)\"), read the credentials again, and this systemd had copied the new users file (bob logs in)"
    else
        pass "systemctl reload waited for the reload (exit 0, \"$(journal a-chat | grep "reloaded: applied" | tail -n1)\") and read the credentials again (alice logs in); this systemd copies them at start only (bob not yet known)"
    fi
else
    fail "systemctl reload failed"; journal a-chat | tail -n 20 | sed -e 's/^/    | /'
fi
# A file the daemon refuses: `systemctl reload` fails, the reason is in the journal, and
# the daemon goes on with the settings in force.
cp "$R/etc/a-chat/a-chat.toml" "$WORK/good.toml"
printf '[limits]\nmax_lines = 3\n' >>"$R/etc/a-chat/a-chat.toml"
in_ct systemctl reload a-chat >/dev/null 2>&1 && status=0 || status=$?
install -m 0644 "$WORK/good.toml" "$R/etc/a-chat/a-chat.toml"
if [ "$status" -ne 0 ] && journal a-chat | grep -q "reload failed, the settings in force stay" \
    && [ "$(in_ct systemctl is-active a-chat)" = active ] && probe alice wonderland; then
    pass "systemctl reload of a file the daemon refuses fails (status $status): \"$(journal a-chat | grep -m1 "reload failed" | cut -c1-120)\"; the daemon serves on"
else
    fail "a refused reload: systemctl reload exited $status"; journal a-chat | tail -n 20 | sed -e 's/^/    | /'
fi
in_ct systemctl restart a-chat
if wait_active a-chat && probe bob builder; then
    pass "after systemctl restart, the new users file is in force (bob logs in)"
else
    fail "bob cannot log in after a restart"; journal a-chat | tail -n 20 | sed -e 's/^/    | /'
fi

# 2. No password in the journal (start, reload, restart, the ExecStartPre check).
if in_ct journalctl --no-pager -o cat 2>/dev/null | grep -qF "$PW"; then
    fail "the journal holds the Redis password"
else
    pass "the journal holds no Redis password ($(journal a-chat | wc -l) lines of a-chat)"
fi

# 4. Contrast: the key as a plain 0640 root:root file is unreadable to the dynamic user.
in_ct systemctl start --no-block a-chat-plain
for _ in $(seq 100); do
    [ "$(in_ct systemctl show -p NRestarts --value a-chat-plain)" -ge 1 ] && break
    sleep 0.2
done
restarts="$(in_ct systemctl show -p NRestarts --value a-chat-plain)"
if [ "$restarts" -ge 1 ] && journal a-chat-plain | grep -q "Permission denied"; then
    pass "without credentials, a 0640 root:root key fails the unit (Permission denied) and it restarts ($restarts so far)"
else
    fail "the unit with a plain 0640 root:root key did not fail as expected (restarts: $restarts)"
    journal a-chat-plain | tail -n 10 | sed -e 's/^/    | /'
fi
in_ct systemctl stop a-chat-plain || true

# What the unit's comment says: a LoadCredential= whose file is missing stops the start.
in_ct systemd-run --quiet --wait --unit=a-chat-missing-credential \
    -p LoadCredential=absent:/etc/a-chat/credentials/absent /bin/true >/dev/null 2>&1 && status=0 || status=$?
if [ "$status" -ne 0 ]; then
    pass "a LoadCredential= naming a missing file fails the start (status $status)"
else
    fail "a LoadCredential= naming a missing file did not stop the start"
fi

# 5. Socket activation beside configured listeners: a-chat.socket passes the chat port
# only; the TLS listener of the file is bound by the daemon itself (with a warning), never
# dropped. The socket unit's install lines work as written on a running service, and a
# restart then refuses no connect on the passed port.
sed -e 's|127.0.0.1:8080|127.0.0.1:28555|' "$ROOT/deploy/a-chat.socket" >"$R/etc/systemd/system/a-chat.socket"
before="$(journal a-chat | wc -l)"
in_ct systemctl daemon-reload && in_ct systemctl enable a-chat.socket >/dev/null 2>&1 \
    && in_ct systemctl stop a-chat && in_ct systemctl start a-chat.socket a-chat && status=0 || status=$?
since() { journal a-chat | tail -n +"$((before + 1))"; }
if [ "$status" -eq 0 ] && wait_active a-chat && [ "$(in_ct systemctl is-active a-chat.socket)" = active ] \
    && since | grep -q "serving the sockets passed by the service manager.*chat=1 tls=0" \
    && since | grep -q "127.0.0.1:28557 (\[tls\] listen) was not passed" && probe alice wonderland; then
    pass "the socket unit's install lines work on a running service; the chat port comes from systemd and the file's TLS listener is bound by the daemon (TLS login works), with a warning"
else
    fail "socket activation beside a configured TLS listener (install lines exited $status)"; since | tail -n 20 | sed -e 's/^/    | /'
fi
net bash -c 'ok=0; bad=0; end=$((SECONDS + 6)); while [ $SECONDS -lt $end ]; do
    if (exec 3<>/dev/tcp/127.0.0.1/28555) 2>/dev/null; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    sleep 0.01; done; echo "$ok $bad"' >"$WORK/connects" &
connects=$!
sleep 1
in_ct systemctl restart a-chat && status=0 || status=$?
wait "$connects"
read -r ok bad <"$WORK/connects"
if [ "$status" -eq 0 ] && wait_active a-chat && [ "$bad" -eq 0 ] && [ "$ok" -gt 50 ]; then
    pass "systemctl restart with a-chat.socket: $ok connects to the passed port during it, $bad refused"
else
    fail "systemctl restart with a-chat.socket (exit $status): $ok connects, $bad refused"
fi

if [ "$FAILED" -eq 0 ]; then
    echo "units-nspawn: PASS"
    exit 0
fi
echo "units-nspawn: FAIL"
exit 1

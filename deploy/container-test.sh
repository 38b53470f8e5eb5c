#!/usr/bin/env bash
# deploy/container-test.sh: build the a-chat container image from the Dockerfile and check it
# the way a docker user would: it runs as non-root, a client can log in and chat through it,
# its health check passes, and `stop` drains it (exit code 0, `drain finished` in the logs).
#
# Uses podman (no Docker engine needed). Steps:
#   1. install podman and runc with apt-get if they are missing
#   2. write a containers.conf that works on hosts which refuse RLIMIT_NOFILE changes and
#      systemd cgroups, and export CONTAINERS_CONF
#   3. build a static a-chat on the host from the exact build context the Dockerfile's build
#      stage would get (after .dockerignore), with its command and flags (or take
#      A_CHAT_BIN=/path/to/static/a-chat)
#   4. `podman build --format docker --build-context build=DIR .` (DIR/out/a-chat is that
#      binary, so the Dockerfile's rust builder stage is skipped)
#   5. run A: --network host, a mounted config listening on a free 127.0.0.1 port, read-only
#      root, all capabilities dropped, no-new-privileges
#   6. run B: the image exactly as shipped (its own config on 0.0.0.0:8080 and its own
#      HEALTHCHECK), in a private network namespace that has only loopback; the client
#      enters that namespace with nsenter
# Every wait has a timeout; all traffic stays on loopback. The containers, the image and the
# temporary files are removed on exit. Exit status: 0 if every check passed, 1 otherwise.
#
# Environment:
#   A_CHAT_BIN=PATH      use this static binary instead of building one
#   A_CHAT_KEEP_LOGS=1   keep the work folder (logs) after the run

# The inner `bash -c '...'` scripts and the Go templates are single-quoted on purpose.
# shellcheck disable=SC2016
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
TAG="$$"
IMAGE="localhost/a-chat-container-test:${TAG}"
WORK="$(mktemp -d /tmp/a-chat-container-test.XXXXXX)"
CONTAINERS=()
BG_PIDS=()
PASSED=0
FAILED=0
FAILURES=()
IMAGE_BUILT=0
CONTEXT_IMAGE=""
CONTEXT_CTR=""

say()  { printf '[container-test] %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); say "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); say "FAIL: $*"; }

# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
    local pid c
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for c in "${CONTAINERS[@]}" $CONTEXT_CTR; do
        timeout 60 podman rm -f -t 0 "$c" >/dev/null 2>&1
    done
    if [ -n "$CONTEXT_IMAGE" ]; then
        timeout 60 podman rmi -f "$CONTEXT_IMAGE" >/dev/null 2>&1
    fi
    if [ "$IMAGE_BUILT" = 1 ]; then
        timeout 60 podman rmi -f "$IMAGE" >/dev/null 2>&1
    fi
    remove_work "$WORK"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 1' INT TERM HUP

verdict() {
    echo
    if [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; then
        say "VERDICT: PASS ($PASSED checks passed, 0 failed)"
        exit 0
    fi
    say "VERDICT: FAIL ($PASSED checks passed, $FAILED failed)"
    local f
    for f in "${FAILURES[@]}"; do say "  - $f"; done
    exit 1
}
# A failure that leaves nothing else to check.
abort() { fail "$*"; verdict; }

# --- 1. tools ----------------------------------------------------------------------------------
say "step 1: tools"
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        abort "podman/runc missing and cannot install them (needs root and apt-get)"
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { timeout 600 apt-get update -qq && timeout 900 apt-get install -y -qq podman runc; } \
            >"$WORK/apt.log" 2>&1; then
        show "$WORK/apt.log"
        abort "apt-get install podman runc failed"
    fi
fi
for tool in podman runc nsenter timeout ldd; do
    command -v "$tool" >/dev/null 2>&1 || abort "required tool not found: $tool"
done
say "podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}')"

# --- 2. containers.conf -------------------------------------------------------------------------
# The defaults raise RLIMIT_NOFILE for every container and use systemd cgroups; hosts without
# systemd as init (or that refuse the rlimit) need these two settings.
cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
say "step 2: CONTAINERS_CONF=$CONTAINERS_CONF"

# --- 3. static binary ---------------------------------------------------------------------------
mkdir -p "$WORK/build/out"
if [ -n "${A_CHAT_BIN:-}" ]; then
    say "step 3: using A_CHAT_BIN=$A_CHAT_BIN"
    BIN="$A_CHAT_BIN"
else
    # Build from exactly what the Dockerfile's build stage would see: the build context after
    # .dockerignore, exported through a throwaway `FROM scratch` + `COPY . /ctx/` image. A file
    # that cargo needs but .dockerignore leaves out fails here, as it would in `docker build`.
    say "step 3a: export the build context (after .dockerignore)"
    printf 'FROM scratch\nCOPY . /ctx/\n' >"$WORK/Containerfile.context"
    CONTEXT_IMAGE="$IMAGE-context"
    CONTEXT_CTR="a-chat-ct-${TAG}-context"
    if ! { timeout 300 podman build --format docker -f "$WORK/Containerfile.context" \
                -t "$CONTEXT_IMAGE" "$ROOT" \
            && timeout 60 podman create --name "$CONTEXT_CTR" "$CONTEXT_IMAGE" /none \
            && timeout 120 podman cp "$CONTEXT_CTR:/ctx" "$WORK/context"; } >"$WORK/context.log" 2>&1; then
        show "$WORK/context.log"
        abort "could not export the build context"
    fi
    pass "build context exported ($(find "$WORK/context" -type f | wc -l) files, $(du -sh "$WORK/context" | cut -f1))"
    target="$(uname -m)-unknown-linux-gnu"
    say "step 3b: in that context: cargo build --release --locked -p a-chat --target $target (static, crt-static)"
    # Same command and flags as the build stage; the target dir is the repository's, so
    # dependencies built before are reused.
    if ! (cd "$WORK/context" && CARGO_TARGET_DIR="$ROOT/target" \
            RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=debuginfo \
            timeout 1500 cargo build --release --locked -p a-chat --target "$target") >"$WORK/cargo.log" 2>&1; then
        show "$WORK/cargo.log"
        abort "static cargo build in the build context failed"
    fi
    BIN="$ROOT/target/$target/release/a-chat"
    if out="$("$BIN" --version 2>&1)"; then
        pass "static build from the build context: $out"
    else
        abort "the built binary does not run: $out"
    fi
fi
[ -x "$BIN" ] || abort "no executable at $BIN"
# ldd's answer is taken whole first: it exits 1 on some static binaries, and
# under pipefail that status, not grep's, would decide a piped test.
LDD_OUT="$(ldd "$BIN" 2>&1)"
if grep -qE 'not a dynamic executable|statically linked' <<<"$LDD_OUT"; then
    pass "binary is statically linked ($(du -h "$BIN" | cut -f1))"
else
    abort "binary is dynamically linked, it cannot run in a scratch image: $(head -3 <<<"$LDD_OUT" | tr '\n' ' ')"
fi
cp "$BIN" "$WORK/build/out/a-chat"

# --- 4. image -----------------------------------------------------------------------------------
say "step 4: podman build --format docker --build-context build=$WORK/build ."
if ! timeout 600 podman build --format docker --build-context "build=$WORK/build" \
        -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >"$WORK/build.log" 2>&1; then
    show "$WORK/build.log"
    abort "podman build failed"
fi
IMAGE_BUILT=1
size="$(timeout 30 podman image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null)"
pass "image built: $IMAGE ($(( ${size:-0} / 1024 / 1024 )) MiB)"

img() { timeout 30 podman image inspect --format "$1" "$IMAGE" 2>/dev/null; }
user="$(img '{{.Config.User}}')"
if [[ "$user" =~ ^[0-9]+(:[0-9]+)?$ ]] && [ "${user%%:*}" -ne 0 ]; then
    pass "image USER is numeric non-root ($user)"
else
    fail "image USER is '$user', want a numeric non-root uid[:gid]"
fi
stopsig="$(img '{{.Config.StopSignal}}')"
case "$stopsig" in
    SIGTERM|SIGINT|15|2) pass "image STOPSIGNAL is $stopsig (starts the drain)" ;;
    *) fail "image STOPSIGNAL is '$stopsig', want SIGTERM or SIGINT" ;;
esac
ports="$(img '{{range $p, $v := .Config.ExposedPorts}}{{$p}} {{end}}')"
case " $ports " in
    *" 8080/tcp "*) pass "image EXPOSEs 8080/tcp" ;;
    *) fail "image exposes '$ports', want 8080/tcp" ;;
esac
health="$(img '{{json .HealthCheck}}')"
case "$health" in
    *'"CMD","/a-chat","probe",'*) pass "image HEALTHCHECK runs the binary's own probe: $health" ;;
    *) fail "image HEALTHCHECK is '$health', want CMD /a-chat probe ... (kept only by --format docker)" ;;
esac
# The config baked into the image must pass the daemon's own check.
if out="$(timeout 60 podman --runtime runc run --rm --network none "$IMAGE" \
        check-config /etc/a-chat/a-chat.toml 2>&1)"; then
    pass "image config /etc/a-chat/a-chat.toml passes check-config ($(printf '%s\n' "$out" | grep -m1 '^listen' || echo 'listen ?'))"
else
    printf '%s\n' "$out" | sed -e 's/^/    | /' | tail -n 10
    fail "image config /etc/a-chat/a-chat.toml fails check-config"
fi

# --- helpers for the runs -----------------------------------------------------------------------
# free_port: a loopback port nothing listens on (a refused connect).
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# in_ns CONTAINER CMD...: run CMD in the container's network namespace (NS=netns), or on the
# host (NS=host).
in_ns() {
    local c="$1"; shift
    if [ "$NS" = netns ]; then
        local pid
        pid="$(timeout 30 podman inspect --format '{{.State.Pid}}' "$c" 2>/dev/null)"
        [ -n "$pid" ] && [ "$pid" != 0 ] || return 99
        nsenter --net="/proc/$pid/ns/net" -- "$@"
    else
        "$@"
    fi
}

# wait_listening CONTAINER PORT: up to 15 s for the daemon to accept connections.
wait_listening() {
    local c="$1" port="$2"
    for _ in $(seq 1 75); do
        if in_ns "$c" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
            return 0
        fi
        [ "$(timeout 30 podman inspect --format '{{.State.Running}}' "$c" 2>/dev/null)" = true ] || return 1
        sleep 0.2
    done
    return 1
}

# chat CONTAINER PORT LOGIN: log in, send a line to yourself, expect it back (10 s at most).
chat() {
    in_ns "$1" timeout 10 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/"$1" || exit 3
        printf "%s\n%s: ping\n" "$2" "$2" >&3
        printf -v cr "\r"
        while IFS= read -r -t 5 line <&3; do
            line="${line%"$cr"}"
            printf "%s\n" "$line"
            [ "$line" = "from $2: ping" ] && exit 0
        done
        exit 1' _ "$2" "$3"
}

# run_checks LABEL CONTAINER PORT: the checks a docker user would make on a running container.
run_checks() {
    local label="$1" c="$2" port="$3" pid uid gid out t0 t1 code bob_pid

    if wait_listening "$c" "$port"; then
        pass "[$label] daemon accepts connections on 127.0.0.1:$port"
    else
        timeout 30 podman logs "$c" >"$WORK/$c.logs" 2>&1
        show "$WORK/$c.logs"
        fail "[$label] daemon is not listening on 127.0.0.1:$port within 15 s"
        return
    fi

    # Non-root: the container's main process as the host kernel sees it.
    pid="$(timeout 30 podman inspect --format '{{.State.Pid}}' "$c" 2>/dev/null)"
    uid="$(awk '/^Uid:/{print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null)"
    gid="$(awk '/^Gid:/{print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null)"
    if [ -n "$uid" ] && ! [[ " $uid " =~ \ 0\  ]]; then
        pass "[$label] process $pid runs as non-root (uid $uid, gid $gid)"
    else
        fail "[$label] process '$pid' runs as uid '$uid' (want non-root)"
    fi

    # Chat through it.
    if out="$(chat "$c" "$port" alice 2>&1)"; then
        pass "[$label] alice logged in, sent 'alice: ping', got 'from alice: ping'"
    else
        fail "[$label] chat round trip failed; client saw: $(printf '%s' "$out" | tr '\n' '|')"
    fi

    # Health check, as the engine would run it.
    if out="$(timeout 30 podman healthcheck run "$c" 2>&1)"; then
        pass "[$label] podman healthcheck run: healthy"
    else
        fail "[$label] podman healthcheck run failed: $(printf '%s' "$out" | grep -v 'systemd connection' | tr '\n' ' ')"
    fi

    # A client that stays connected through the stop should be told, then closed.
    : >"$WORK/$c.bob"
    in_ns "$c" timeout 45 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/"$1" || exit 3
        printf "bob\nbob: ready\n" >&3
        printf -v cr "\r"
        while IFS= read -r -t 40 line <&3; do printf "%s\n" "${line%"$cr"}"; done' \
        _ "$port" >"$WORK/$c.bob" 2>&1 &
    bob_pid=$!
    BG_PIDS+=("$bob_pid")
    for _ in $(seq 1 50); do
        grep -qx 'from bob: ready' "$WORK/$c.bob" && break
        sleep 0.1
    done
    grep -qx 'from bob: ready' "$WORK/$c.bob" || fail "[$label] second client (bob) did not get its login confirmed"

    # Stop: the stop signal starts the drain; allow drain_timeout (10 s) plus headroom.
    t0=$(date +%s)
    if ! timeout 45 podman stop -t 20 "$c" >"$WORK/$c.stop" 2>&1; then
        show "$WORK/$c.stop"
        fail "[$label] podman stop did not return"
    fi
    t1=$(date +%s)
    for _ in $(seq 1 50); do kill -0 "$bob_pid" 2>/dev/null || break; sleep 0.1; done
    kill "$bob_pid" 2>/dev/null
    wait "$bob_pid" 2>/dev/null

    code="$(timeout 30 podman inspect --format '{{.State.ExitCode}}' "$c" 2>/dev/null)"
    if [ "$code" = 0 ]; then
        pass "[$label] podman stop: exited with code 0 after $((t1 - t0)) s"
    else
        fail "[$label] podman stop: exit code '$code' after $((t1 - t0)) s (want 0; 137 = killed after the stop timeout)"
    fi
    if grep -q '^notice: server shutting down' "$WORK/$c.bob"; then
        pass "[$label] connected client got 'notice: server shutting down' before the close"
    else
        fail "[$label] connected client did not get 'notice: server shutting down'; it saw: $(tr '\n' '|' <"$WORK/$c.bob")"
    fi
    timeout 30 podman logs "$c" >"$WORK/$c.logs" 2>&1
    out="$(grep 'drain finished' "$WORK/$c.logs" | head -1)"
    if [ -n "$out" ]; then
        pass "[$label] log has the drain summary: $out"
    else
        show "$WORK/$c.logs"
        fail "[$label] no 'drain finished' line in podman logs"
    fi
}

# --- 5. run A: host network, mounted config, locked down ---------------------------------------
echo
NS=host
PORT="$(free_port)" || abort "no free loopback port found"
cat >"$WORK/a-chat.toml" <<EOF
# container-test: the image's config with a loopback listen address
[server]
listen = "127.0.0.1:$PORT"

[shutdown]
drain_timeout = "10s"

[log]
format = "text"
EOF
chmod 0644 "$WORK/a-chat.toml"
NAME_A="a-chat-ct-${TAG}-host"
say "step 5: run A ($NAME_A): --network host, mounted config on 127.0.0.1:$PORT, --read-only, --cap-drop ALL"
# The image's HEALTHCHECK probes 127.0.0.1:8080; this run listens elsewhere, so the same probe
# is pointed at its port (run B checks the image's own HEALTHCHECK unchanged).
CONTAINERS+=("$NAME_A")
if timeout 120 podman --runtime runc run -d --name "$NAME_A" --network host \
        --log-driver k8s-file \
        --read-only --cap-drop ALL --security-opt no-new-privileges \
        -v "$WORK/a-chat.toml:/etc/a-chat/a-chat.toml:ro" \
        --health-cmd "[\"/a-chat\",\"probe\",\"127.0.0.1:$PORT\"]" --health-interval disable \
        "$IMAGE" >"$WORK/run-a.log" 2>&1; then
    pass "[host] container started"
    run_checks host "$NAME_A" "$PORT"
else
    show "$WORK/run-a.log"
    fail "[host] podman run failed"
fi

# --- 6. run B: the image as shipped, in its own network namespace -------------------------------
echo
NS=netns
NAME_B="a-chat-ct-${TAG}-netns"
say "step 6: run B ($NAME_B): image as shipped (0.0.0.0:8080, own HEALTHCHECK), --network none"
CONTAINERS+=("$NAME_B")
if timeout 120 podman --runtime runc run -d --name "$NAME_B" --network none \
        --log-driver k8s-file --health-interval disable \
        "$IMAGE" >"$WORK/run-b.log" 2>&1; then
    pass "[netns] container started"
    run_checks netns "$NAME_B" 8080
else
    show "$WORK/run-b.log"
    fail "[netns] podman run failed"
fi

verdict

# a-chat container image: a statically linked a-chat on an empty (scratch) base.
#
#   docker build -t a-chat .
#   docker run -d --name a-chat -p 8080:8080 a-chat
#   docker stop a-chat          # SIGTERM -> drain (ARCHITECTURE §5), exit code 0
#
# Stage `build` leaves the binary at /out/a-chat. Builders without access to base images can
# skip it by handing in a folder that holds out/a-chat (see deploy/container-test.sh):
#   podman build --format docker --build-context build=DIR .
# --format docker keeps HEALTHCHECK and STOPSIGNAL in the image (the OCI format drops
# HEALTHCHECK). docs/OPERATIONS.md has the details.

# ---- build: a static binary ------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole build context (.dockerignore leaves out target/ and .git/): Cargo.toml declares
# targets under src/, tests/ and benches/ and the workspace's load generator (bench/), and
# cargo wants every declared target present. Only the daemon is built (-p a-chat).
COPY . .
# crt-static links glibc statically: the result runs on an empty filesystem. It must not resolve
# host names at run time (the image has no resolver config), so every address in the config is
# an IP literal. Debug info is stripped; symbol names stay for panic backtraces.
# The build context has no .git: pass the commit for `a-chat --version` and achat_build_info
# (docker build --build-arg A_CHAT_COMMIT=$(git rev-parse --short=12 HEAD) ...).
ARG A_CHAT_COMMIT=unknown
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    A_CHAT_COMMIT=$A_CHAT_COMMIT
RUN target="$(uname -m)-unknown-linux-gnu" \
 && cargo build --release --locked -p a-chat --target "$target" \
 && mkdir -p /out \
 && cp "target/$target/release/a-chat" /out/a-chat \
 && /out/a-chat --version

# ---- runtime: nothing but the binary and its config ------------------------------------------
FROM scratch
COPY --from=build /out/a-chat /a-chat
# Listens on 0.0.0.0:8080 inside the container; mount your own file over this path to change
# any setting (docker run -v ./a-chat.toml:/etc/a-chat/a-chat.toml:ro ...).
COPY deploy/container.toml /etc/a-chat/a-chat.toml
# Numeric non-root user and group (no /etc/passwd in a scratch image); the daemon writes no files.
USER 65532:65532
EXPOSE 8080
# SIGTERM and SIGINT both start the drain; a second signal exits at once (130 after SIGINT, 143 after SIGTERM).
# docker stop waits 10s by default before SIGKILL; drain_timeout is 10s too, so use
# `docker stop -t 15` (or --stop-timeout 15 on docker run) to let a full drain finish.
STOPSIGNAL SIGTERM
# No curl in the image: the binary probes its own listener (a line answered within 2s).
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/a-chat", "probe", "127.0.0.1:8080"]
ENTRYPOINT ["/a-chat"]
CMD ["server", "--config", "/etc/a-chat/a-chat.toml"]

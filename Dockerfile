# sip-cpim-gateway container image.
#
#   docker build -t sip-cpim-gateway:latest .      (or: docker compose build)
#
# Two stages: the builder compiles the release binary with the pinned
# toolchain exactly as CI does (`cargo build --release --locked`); the
# runtime stage is Debian bookworm-slim (the same glibc as the builder) with
# the binary, the container configuration docker/gateway.toml and a store
# volume, running as the unprivileged user `gateway` (uid/gid 10001).
# Only classic Dockerfile instructions are used (no BuildKit-only syntax), so
# the legacy builder and docker-compose 1.29 build it as well.
# Operating the container: docs/operations.md; every setting:
# docs/configuration.md.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# The slim Rust image has gcc and libc6-dev (enough for ring's C and
# assembly) but not make, which tikv-jemalloc-sys needs: its build script
# runs jemalloc's (pre-generated) configure script and then make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

ENV CARGO_TERM_COLOR=never
WORKDIR /build

# Dependency layer: build every dependency against placeholder sources so
# this layer is reused until Cargo.toml or Cargo.lock change. The manifest
# names src/lib.rs, src/main.rs and a bench (benches/parse.rs), so all three
# placeholders exist; `cargo build` does not compile benches, tests or
# dev-dependencies.
# The workspace also names the XMPP adapter (xmpp-adapter/, its own image:
# xmpp-adapter/Dockerfile): its manifest must be there for cargo to read the
# workspace, and `-p sip-cpim-gateway` builds only the gateway.
COPY Cargo.toml Cargo.lock ./
COPY xmpp-adapter/Cargo.toml ./xmpp-adapter/Cargo.toml
RUN mkdir -p src benches xmpp-adapter/src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/parse.rs \
    && echo 'fn main() {}' > xmpp-adapter/src/main.rs \
    && cargo build --release --locked -p sip-cpim-gateway \
    && rm -rf src benches

# The real sources. COPY keeps the files' modification times, which can be
# older than the placeholder build above; cargo decides freshness by mtime,
# so touch the crate roots or it would keep the placeholder binary (the
# --version check fails the build if that ever happens: the placeholder
# prints nothing).
COPY src ./src
COPY benches ./benches
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked -p sip-cpim-gateway \
    && install -D -m 0755 target/release/sip-cpim-gateway /out/sip-cpim-gateway \
    && /out/sip-cpim-gateway --version | grep '^sip-cpim-gateway '

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

ARG RUNTIME_IMAGE
# The package version (Cargo.toml); pass --build-arg VERSION=... when it changes.
ARG VERSION=0.1.0
# The git commit, e.g. --build-arg REVISION=$(git rev-parse HEAD).
ARG REVISION=""
LABEL org.opencontainers.image.title="sip-cpim-gateway" \
      org.opencontainers.image.description="SIP <-> CPIM presence interworking gateway with an internal presence agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# ca-certificates: the system trust store for outgoing TLS ([sip.tls] ca
# empty) and for an https:// adapter_url. The user and group get fixed ids
# so that files mounted into the container (TLS keys, credentials) and bind
# mounts of the store can be given to 10001:10001 on the host. The store
# directory is created here, owned by the user, before VOLUME: a fresh named
# volume is initialised from it, so the gateway (and `import`) can write
# there without running as root.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 gateway \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 -m 0750 \
        /var/lib/sip-cpim-gateway /var/lib/sip-cpim-gateway/store \
    && install -d -m 0755 /etc/sip-cpim-gateway

COPY --from=builder /out/sip-cpim-gateway /usr/local/bin/sip-cpim-gateway
COPY docker/gateway.toml /etc/sip-cpim-gateway/gateway.toml
# Readable by the user whatever the checkout's umask made of the file.
RUN chmod 0644 /etc/sip-cpim-gateway/gateway.toml

# Text logs go to stderr (docker logs); without a terminal they should carry
# no colour escapes.
ENV NO_COLOR=1

USER 10001:10001
WORKDIR /var/lib/sip-cpim-gateway
VOLUME ["/var/lib/sip-cpim-gateway"]

# SIP over UDP and TCP, SIP over TLS (when a tls: listener is configured),
# HTTP (CPIM API, admin API, /healthz, /readyz, /metrics).
EXPOSE 5060/udp 5060/tcp 5061/tcp 8080/tcp

# The gateway stops gracefully on SIGTERM: new SIP requests get 503, HTTP
# closes after the requests in progress, the store is flushed (at most about
# 5 s). Subscriptions are kept and resume at the next start.
STOPSIGNAL SIGTERM

# GET /healthz on [cpim] listen (0.0.0.0 is probed as 127.0.0.1); exit 0 on 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sip-cpim-gateway", "healthcheck", "--config", "/etc/sip-cpim-gateway/gateway.toml"]

ENTRYPOINT ["sip-cpim-gateway"]
CMD ["run", "--config", "/etc/sip-cpim-gateway/gateway.toml"]

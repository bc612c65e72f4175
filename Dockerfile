# syntax=docker/dockerfile:1
#
# Vow in a container: one self-contained binary (the pages, scripts and mail templates are
# compiled in) on a slim Debian, running as an unprivileged user with all state under /data.
#
#   docker build -t vow .
#   docker run --env-file .env -v vow-data:/data -p 127.0.0.1:2583:2583 vow
#
# docker-compose.yml next to this file does the same with an IPFS node and the first invite
# code; docs/operating.md is the operator's guide.

# ---- build ---------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder

# A C compiler for the native parts of the crypto stack (aws-lc-sys builds with cc).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cache mounts keep downloaded crates and compiled dependencies between builds, so an
# upgrade recompiles only what changed. target/ lives in the cache, hence the copy to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile production --locked -p vow \
    && install -D -m 0755 target/production/vow /out/vow

# ---- run -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates for outgoing HTTPS (PLC directory, AppView, relays, SMTP); curl for the
# health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# Fixed ids, so a bind-mounted /data can be prepared on the host: chown -R 10001:10001 DIR.
RUN groupadd --system --gid 10001 vow \
    && useradd --system --uid 10001 --gid vow --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin vow \
    && mkdir -p /data/keys /data/blobs \
    && chown -R vow:vow /data \
    && chmod 0750 /data /data/keys

COPY --from=builder /out/vow /usr/local/bin/vow

# Where everything lives inside the container. Identity, secrets and mail come from the
# environment (docker run --env-file .env, or env_file in compose); see .env.example.
ENV VOW_ADDR=:2583 \
    VOW_DB_NAME=/data/vow.db \
    VOW_ROTATION_KEY_PATH=/data/keys/rotation.key \
    VOW_JWK_PATH=/data/keys/jwk.json \
    VOW_BLOB_DIR=/data/blobs \
    VOW_ADMIN_URL=http://127.0.0.1:2583

USER vow
WORKDIR /data
VOLUME ["/data"]
EXPOSE 2583

# 503 when the database or the IPFS node is unreachable.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:2583/xrpc/_health >/dev/null || exit 1

ENTRYPOINT ["vow"]
CMD ["run"]

#!/usr/bin/env bash
# The Dockerfile's steps without a container engine (run by hand; no Docker runs on the build
# machines): the production build as the builder stage does it, the final image's layout under a
# scratch root (binary at /usr/local/bin/vow, state under /data, the image's default settings),
# then the image's command and health check against that layout, with the PLC directory from
# e2e/ standing in for plc.directory.
# Usage: scripts/image-steps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(mktemp -d)"; pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$root"' EXIT

echo "== builder stage: cargo build --profile production --locked -p vow"
cargo build --profile production --locked -p vow 2>&1 | tail -1
install -D -m 0755 target/production/vow "$root/usr/local/bin/vow"
mkdir -p "$root/data/keys" "$root/data/blobs"
chmod 0750 "$root/data" "$root/data/keys"
echo "== final stage: $(du -h "$root/usr/local/bin/vow" | cut -f1) binary, $(ldd "$root/usr/local/bin/vow" | wc -l) shared libraries:"
ldd "$root/usr/local/bin/vow" | sed 's/^/   /'

[ -d e2e/node_modules ] || (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
node e2e/plc-server.js 2892 >"$root/plc.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:2892/_health >/dev/null && break; sleep 0.2; done

echo "== CMD [\"run\"] with the image's ENV and .env.example's settings"
(
  cd "$root/data"
  set -a; eval "$(grep -E '^VOW_[A-Z_]+=' "$OLDPWD/.env.example")"; set +a
  export VOW_ADDR=127.0.0.1:2893 VOW_DB_NAME="$root/data/vow.db" VOW_ROTATION_KEY_PATH="$root/data/keys/rotation.key" \
    VOW_JWK_PATH="$root/data/keys/jwk.json" VOW_BLOB_DIR="$root/data/blobs" VOW_ADMIN_URL=http://127.0.0.1:2893 \
    VOW_PUBLIC_URL=http://127.0.0.1:2893 VOW_PLC_URL=http://127.0.0.1:2892
  exec "$root/usr/local/bin/vow" run
) >"$root/vow.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS http://127.0.0.1:2893/xrpc/_health >/dev/null 2>&1 && break; sleep 0.2; done
echo "== HEALTHCHECK: curl -fsS http://127.0.0.1:2893/xrpc/_health"
curl -fsS http://127.0.0.1:2893/xrpc/_health; echo
echo "== docker stop sends SIGTERM: Vow shuts down gracefully"
kill -TERM "${pids[1]}"; wait "${pids[1]}" && echo "   exited with status 0"
grep -q "shutting down" "$root/vow.log" && echo "   logged: shutting down"

#!/usr/bin/env bash
# Runs a locally usable Vow on a fresh machine: the real PLC directory server on 127.0.0.1:2582
# and Vow on http://localhost:2583 with embedded storage, then prints an invite code.
# Everything lives in ./local-data (VOW_LOCAL_DATA): Vow's database, blobs and keys, and the
# PLC directory's operation log, replayed at each start, so accounts survive restarts.
# Ports: PLC_PORT and VOW_PORT. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${VOW_LOCAL_DATA:-$PWD/local-data}"
PLC_PORT="${PLC_PORT:-2582}"
VOW_PORT="${VOW_PORT:-2583}"
mkdir -p "$DATA"

# Accounts made by an older version of this script, whose DIDs were in a PLC directory that
# kept nothing: they cannot work again, so say so instead of starting half-broken.
if [ -f "$DATA/vow.db" ] && [ ! -f "$DATA/plc-ops.jsonl" ]; then
  echo "error: $DATA holds accounts whose DIDs were only in a PLC directory that is gone." >&2
  echo "Move $DATA away (or set VOW_LOCAL_DATA) to start fresh." >&2
  exit 1
fi

# npm ci only when the installed packages are older than the lock file.
if [ ! e2e/node_modules/.package-lock.json -nt e2e/package-lock.json ]; then
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
cargo build --release -p vow

node e2e/plc-server.js "$PLC_PORT" --data "$DATA/plc-ops.jsonl" &
PLC_PID=$!
VOW_PID=""
trap 'kill $PLC_PID $VOW_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PLC_PORT/_health" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PLC_PORT/_health" >/dev/null || { echo "error: the PLC directory did not start" >&2; exit 1; }

[ -f "$DATA/session.secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DATA/session.secret"
export VOW_ADDR="127.0.0.1:$VOW_PORT"
export VOW_DB_NAME="$DATA/vow.db"
export VOW_HOSTNAME="${VOW_HOSTNAME:-localhost}"
export VOW_DID="${VOW_DID:-did:web:localhost}"
export VOW_PUBLIC_URL="${VOW_PUBLIC_URL:-http://localhost:$VOW_PORT}"
export VOW_ROTATION_KEY_PATH="$DATA/rotation.key"
export VOW_JWK_PATH="$DATA/jwk.json"
export VOW_CONTACT_EMAIL="${VOW_CONTACT_EMAIL:-admin@localhost}"
export VOW_ADMIN_PASSWORD="${VOW_ADMIN_PASSWORD:-admin}"
export VOW_SESSION_SECRET="${VOW_SESSION_SECRET:-$(cat "$DATA/session.secret")}"
export VOW_PLC_URL="http://127.0.0.1:$PLC_PORT"

./target/release/vow run &
VOW_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$VOW_PORT/xrpc/_health" >/dev/null && break; sleep 0.2; done
./target/release/vow create-invite-code --uses 10
echo "Vow: $VOW_PUBLIC_URL  (handles end with .$VOW_HOSTNAME, admin password: $VOW_ADMIN_PASSWORD)"
echo "After signing up, open $VOW_PUBLIC_URL/account to register a passkey and keep that tab open: it signs your"
echo "commits. Bots: ./target/release/vow signer --pds $VOW_PUBLIC_URL --plc $VOW_PLC_URL --identifier HANDLE --password PW --key-file F"
wait $VOW_PID

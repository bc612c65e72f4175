#!/usr/bin/env bash
# Runs a locally usable Vow on a fresh machine: the real PLC directory server (in-memory) on
# 127.0.0.1:2582 and Vow on http://localhost:2583 with embedded storage, then prints a first
# invite code. Data and keys live in ./local-data. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${VOW_LOCAL_DATA:-$PWD/local-data}"
PLC_PORT="${PLC_PORT:-2582}"
VOW_PORT="${VOW_PORT:-2583}"
mkdir -p "$DATA"

(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release -p vow

node e2e/plc-server.js "$PLC_PORT" &
PLC_PID=$!
trap 'kill $PLC_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PLC_PORT/_health" >/dev/null && break; sleep 0.2; done

export VOW_ADDR="127.0.0.1:$VOW_PORT"
export VOW_DB_NAME="$DATA/vow.db"
export VOW_HOSTNAME="${VOW_HOSTNAME:-localhost}"
export VOW_DID="${VOW_DID:-did:web:localhost}"
export VOW_PUBLIC_URL="${VOW_PUBLIC_URL:-http://localhost:$VOW_PORT}"
export VOW_ROTATION_KEY_PATH="$DATA/rotation.key"
export VOW_JWK_PATH="$DATA/jwk.json"
export VOW_CONTACT_EMAIL="${VOW_CONTACT_EMAIL:-admin@localhost}"
export VOW_ADMIN_PASSWORD="${VOW_ADMIN_PASSWORD:-admin}"
export VOW_SESSION_SECRET="${VOW_SESSION_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export VOW_PLC_URL="http://127.0.0.1:$PLC_PORT"

./target/release/vow create-invite-code --uses 10
echo "Vow: $VOW_PUBLIC_URL  (handles end with .$VOW_HOSTNAME, admin password: $VOW_ADMIN_PASSWORD)"
echo "After signing up, open $VOW_PUBLIC_URL/account to register a passkey and keep that tab open: it signs your"
echo "commits. Bots: ./target/release/vow signer --pds $VOW_PUBLIC_URL --identifier HANDLE --password PW --key-file F"
./target/release/vow run

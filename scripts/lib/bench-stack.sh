# Sourced by the benchmark scripts: installs what they need and starts the PLC directory, the
# reference PDS and vow on loopback, all stopped on exit. Expects PLC_PORT, REF_PORT, VOW_PORT
# and EXAMPLES (cargo examples to build) to be set; sets work, pids, vow_pid, ref_pid, VOW, REF
# and V.
# With REF_PORT empty the reference PDS is not installed or started. start_vow starts further
# vow instances.
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

echo "== installing (npm: e2e/ and bench/; cargo: release build)"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
[ -z "$REF_PORT" ] || (cd bench && npm ci --no-audit --no-fund --loglevel=error)
examples=(); for e in $EXAMPLES; do examples+=(--example "$e"); done
cargo build --release --locked -p vow --bin vow "${examples[@]}" 2>&1 | tail -1
VOW="${VOW_BIN:-target/release/vow}"

wait_for() { # file text
  for _ in $(seq 1 120); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.5; done
  echo "timed out: $1"; cat "$1"; exit 1
}
node e2e/plc-server.js "$PLC_PORT" >"$work/plc.log" 2>&1 & pids+=($!)
wait_for "$work/plc.log" "PLC listening"
[ -z "$REF_PORT" ] || { node bench/refpds.js "$REF_PORT" "$work/ref" "http://localhost:$PLC_PORT" >"$work/ref.log" 2>&1 & ref_pid=$!; pids+=($!); }
start_vow() { # port dir [VAR=value ...]: starts vow with its data in dir; sets last_vow_pid
  local port=$1 dir=$2; shift 2; mkdir -p "$dir"
  env VOW_ADDR="127.0.0.1:$port" VOW_DB_NAME="$dir/vow.db" VOW_HOSTNAME=localhost VOW_DID=did:web:localhost \
    VOW_PUBLIC_URL="http://localhost:$port" VOW_ROTATION_KEY_PATH="$dir/rotation.key" VOW_JWK_PATH="$dir/jwk.json" \
    VOW_CONTACT_EMAIL=admin@localhost VOW_ADMIN_PASSWORD=admin VOW_SESSION_SECRET=bench VOW_REQUIRE_INVITE=false \
    VOW_PLC_URL="http://127.0.0.1:$PLC_PORT" VOW_LOG_LEVEL=warn VOW_RATE_LIMITS=false "$@" "$VOW" run >"$dir/vow.log" 2>&1 & last_vow_pid=$!; pids+=($!)
  wait_for "$dir/vow.log" "vow listening"
}
start_vow "$VOW_PORT" "$work"; vow_pid=$last_vow_pid
[ -z "$REF_PORT" ] || wait_for "$work/ref.log" "listening"
REF="http://127.0.0.1:$REF_PORT"; V="http://127.0.0.1:$VOW_PORT"

signup() { # url handle -> did (password: bench-password)
  curl -sf -X POST "$1/xrpc/com.atproto.server.createAccount" -H 'content-type: application/json' \
    -d "{\"handle\":\"$2\",\"email\":\"$2@example.com\",\"password\":\"bench-password\"}" \
    | node -pe 'JSON.parse(require("fs").readFileSync(0)).did'
}
signer() { # handle [pds url]: starts `vow signer` for a vow account and waits until it is connected
  "$VOW" signer --pds "${2:-$V}" --plc "http://127.0.0.1:$PLC_PORT" --identifier "$1" --password bench-password --key-file "$work/$1.key" \
    >"$work/$1.signer" 2>/dev/null & pids+=($!)
  wait_for "$work/$1.signer" "signer connected"
}

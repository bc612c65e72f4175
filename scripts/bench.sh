#!/usr/bin/env bash
# Side-by-side benchmarks against the reference TypeScript PDS (@atproto/pds 0.4.217) on this
# machine, same client and concurrency for both. Run by hand; prints a summary table.
#   reads:  describeServer and getRecord requests/s (Rust load generator, concurrency $READ_C)
#   memory: idle RSS of the vow process
#   writes: createRecord throughput and latency at concurrency 4 through @atproto/api; Vow's
#           commits are signed by `vow signer` over loopback, the reference signs on the server
# Usage: scripts/bench.sh   (env: READ_C=16 READ_SECS=10 WRITES=1000)
set -euo pipefail
cd "$(dirname "$0")/.."
READ_C="${READ_C:-16}"; READ_SECS="${READ_SECS:-10}"; WRITES="${WRITES:-1000}"
PLC_PORT=2782; REF_PORT=2783; VOW_PORT=2784
EXAMPLES=xrpc_load
source scripts/lib/bench-stack.sh
LOAD=target/release/examples/xrpc_load
sleep 2
idle_rss_kb=$(ps -o rss= -p "$vow_pid" | tr -d ' ')

ref_did=$(signup "$REF" bench.test); vow_did=$(signup "$V" bench.localhost)
signer bench.localhost
post() { # url did -> rkey of a new post
  local token; token=$(curl -sf -X POST "$1/xrpc/com.atproto.server.createSession" -H 'content-type: application/json' \
    -d "{\"identifier\":\"$2\",\"password\":\"bench-password\"}" | node -pe 'JSON.parse(require("fs").readFileSync(0)).accessJwt')
  curl -sf -X POST "$1/xrpc/com.atproto.repo.createRecord" -H 'content-type: application/json' -H "authorization: Bearer $token" \
    -d "{\"repo\":\"$2\",\"collection\":\"app.bsky.feed.post\",\"record\":{\"\$type\":\"app.bsky.feed.post\",\"text\":\"bench\",\"createdAt\":\"2026-11-24T00:00:00.000Z\"}}" \
    | node -pe 'JSON.parse(require("fs").readFileSync(0)).uri.split("/").pop()'
}
ref_rkey=$(post "$REF" "$ref_did"); vow_rkey=$(post "$V" "$vow_did")

declare -A R
for name in describeServer getRecord; do
  for side in ref vow; do
    if [ $side = ref ]; then base=$REF; did=$ref_did; rkey=$ref_rkey; else base=$V; did=$vow_did; rkey=$vow_rkey; fi
    if [ $name = describeServer ]; then url="$base/xrpc/com.atproto.server.describeServer"
    else url="$base/xrpc/com.atproto.repo.getRecord?repo=$did&collection=app.bsky.feed.post&rkey=$rkey"; fi
    R[$name.$side]=$("$LOAD" "$url" "$READ_C" "$READ_SECS")
    echo "$name $side: ${R[$name.$side]}"
  done
done
busy_rss_kb=$(ps -o rss= -p "$vow_pid" | tr -d ' ')
W_REF=$(node bench/writes.js "$REF" bench.test bench-password "$WRITES" 4)
echo "createRecord ref: $W_REF"
W_VOW=$(node bench/writes.js "$V" bench.localhost bench-password "$WRITES" 4)
echo "createRecord vow: $W_VOW"
after_rss_kb=$(ps -o rss= -p "$vow_pid" | tr -d ' ')

ratio() { node -e "const a=JSON.parse(process.argv[1]),b=JSON.parse(process.argv[2]);console.log((b.perSecond/a.perSecond).toFixed(1)+'x')" "$1" "$2"; }
echo
echo "== summary (concurrency $READ_C for reads, 4 for writes; $(nproc) cores)"
echo "describeServer  ref $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[describeServer.ref]}")/s  vow $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[describeServer.vow]}")/s  ratio $(ratio "${R[describeServer.ref]}" "${R[describeServer.vow]}")"
echo "getRecord       ref $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[getRecord.ref]}")/s  vow $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[getRecord.vow]}")/s  ratio $(ratio "${R[getRecord.ref]}" "${R[getRecord.vow]}")"
echo "createRecord    ref $W_REF"
echo "                vow $W_VOW  ratio $(ratio "$W_REF" "$W_VOW")"
echo "vow RSS: idle $((idle_rss_kb / 1024)) MB, after reads $((busy_rss_kb / 1024)) MB, after writes $((after_rss_kb / 1024)) MB"

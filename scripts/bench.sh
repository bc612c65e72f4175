#!/usr/bin/env bash
# Side-by-side benchmarks against the reference TypeScript PDS (@atproto/pds 0.4.217) on this
# machine, same client and concurrency for both. Run by hand; prints a summary table.
#   reads:  describeServer and getRecord requests/s (Rust load generator, concurrency $READ_C)
#   writes: createRecord throughput and latency from a lean Rust client (write_load), at
#           concurrency 4 on one account and at 16 over 16 accounts (one writer each), plus
#           concurrency 4 through @atproto/api for comparison; Vow's commits are signed by
#           `vow signer` over loopback, the reference signs on the server. For Vow, the mean
#           time per commit in each phase (staging, signing, storing) and requests per commit.
#   memory: vow's RSS idle, after the reads, after the writes, and its peak over the whole run
# Usage: scripts/bench.sh   (env: READ_C=16 READ_SECS=10 WRITES=1000 ACCOUNTS=16;
#        VOW_BIN=path runs that vow binary instead of this tree's)
set -euo pipefail
cd "$(dirname "$0")/.."
READ_C="${READ_C:-16}"; READ_SECS="${READ_SECS:-10}"; WRITES="${WRITES:-1000}"; ACCOUNTS="${ACCOUNTS:-16}"
PLC_PORT=2782; REF_PORT=2783; VOW_PORT=2784
EXAMPLES="xrpc_load write_load"
source scripts/lib/bench-stack.sh
LOAD=target/release/examples/xrpc_load
sleep 2
idle_rss_kb=$(ps -o rss= -p "$vow_pid" | tr -d ' ')
# The peak RSS over the whole run, sampled every 50 ms.
( peak=0; while kill -0 "$vow_pid" 2>/dev/null; do r=$(ps -o rss= -p "$vow_pid" | tr -d ' '); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/peak"; sleep 0.05; done ) & pids+=($!)

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
scrape() { curl -sf -u admin:admin "$V/metrics" > "$1"; }
WL=target/release/examples/write_load
# @atproto/api under Node costs about as much CPU per write as Vow: on 2 cores it caps both
# servers' figures. One line with it, for comparison; the figures come from write_load.
A_REF=$(node bench/writes.js "$REF" bench.test bench-password "$WRITES" 4)
echo "createRecord c=4 @atproto/api ref: $A_REF"
A_VOW=$(node bench/writes.js "$V" bench.localhost bench-password "$WRITES" 4)
echo "createRecord c=4 @atproto/api vow: $A_VOW"
W_REF=$("$WL" "$REF" bench.test bench-password "$WRITES" 4)
echo "createRecord c=4 ref: $W_REF"
scrape "$work/m0"
W_VOW=$("$WL" "$V" bench.localhost bench-password "$WRITES" 4)
scrape "$work/m1"
echo "createRecord c=4 vow: $W_VOW"
after_rss_kb=$(ps -o rss= -p "$vow_pid" | tr -d ' ')

ref_ids=(); vow_ids=()
for n in $(seq 1 "$ACCOUNTS"); do
  signup "$REF" "writer$n.test" >/dev/null; signup "$V" "writer$n.localhost" >/dev/null; signer "writer$n.localhost"
  ref_ids+=("writer$n.test"); vow_ids+=("writer$n.localhost")
done
join() { local IFS=,; echo "$*"; }
M_REF=$("$WL" "$REF" "$(join "${ref_ids[@]}")" bench-password "$WRITES" "$ACCOUNTS")
echo "createRecord c=$ACCOUNTS over $ACCOUNTS accounts ref: $M_REF"
scrape "$work/m2"
M_VOW=$("$WL" "$V" "$(join "${vow_ids[@]}")" bench-password "$WRITES" "$ACCOUNTS")
scrape "$work/m3"
echo "createRecord c=$ACCOUNTS over $ACCOUNTS accounts vow: $M_VOW"
many_rss_kb=$(ps -o rss= -p "$vow_pid" | tr -d ' ')
P_ONE=$(node bench/phases.js "$work/m0" "$work/m1"); P_MANY=$(node bench/phases.js "$work/m2" "$work/m3")

ratio() { node -e "const a=JSON.parse(process.argv[1]),b=JSON.parse(process.argv[2]);console.log((b.perSecond/a.perSecond).toFixed(1)+'x')" "$1" "$2"; }
echo
echo "== summary (concurrency $READ_C for reads, 4 for writes; $(nproc) cores)"
echo "describeServer  ref $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[describeServer.ref]}")/s  vow $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[describeServer.vow]}")/s  ratio $(ratio "${R[describeServer.ref]}" "${R[describeServer.vow]}")"
echo "getRecord       ref $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[getRecord.ref]}")/s  vow $(node -pe "JSON.parse(process.argv[1]).perSecond" "${R[getRecord.vow]}")/s  ratio $(ratio "${R[getRecord.ref]}" "${R[getRecord.vow]}")"
echo "createRecord c=4 @atproto/api ref $A_REF"
echo "                vow $A_VOW  ratio $(ratio "$A_REF" "$A_VOW")"
echo "createRecord c=4 ref $W_REF"
echo "                vow $W_VOW  ratio $(ratio "$W_REF" "$W_VOW")"
echo "                vow commit phases: $P_ONE"
echo "createRecord c=$ACCOUNTS over $ACCOUNTS accounts ref $M_REF"
echo "                vow $M_VOW  ratio $(ratio "$M_REF" "$M_VOW")"
echo "                vow commit phases: $P_MANY"
echo "vow RSS: idle $((idle_rss_kb / 1024)) MB, after reads $((busy_rss_kb / 1024)) MB, after c=4 writes $((after_rss_kb / 1024)) MB, after c=$ACCOUNTS writes $((many_rss_kb / 1024)) MB, peak $(($(cat "$work/peak") / 1024)) MB"

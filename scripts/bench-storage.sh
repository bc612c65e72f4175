#!/usr/bin/env bash
# Storage benchmarks, run by hand: the embedded store against an IPFS node (js-ipfs 0.66 from
# e2e/ipfs, offline on loopback), one vow on each, same machine, same client (curl, @atproto/api).
#   blobs:  upload and download of a $BLOB_MB MB blob, median of 3, in MB/s (download streamed by
#           vow in both cases: no gateway)
#   small:  $SMALL sequential uploads of a 100 kB blob, mean ms each (per-blob overhead)
#   writes: $WRITES createRecord at concurrency 4 through `vow signer` (per-write overhead)
# Usage: scripts/bench-storage.sh   (env: BLOB_MB=100 SMALL=50 WRITES=500)
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MB="${BLOB_MB:-100}"; SMALL="${SMALL:-50}"; WRITES="${WRITES:-500}"
PLC_PORT=2802; REF_PORT=""; VOW_PORT=2804; IPFS_VOW_PORT=2805; IPFS_API=2806
EXAMPLES=""
source scripts/lib/bench-stack.sh
(cd e2e/ipfs && npm ci --no-audit --no-fund --loglevel=error --fetch-retries=0)
bash scripts/ipfs-node.sh "$work/ipfs" "$IPFS_API" 2807 2808 >"$work/ipfs.log" 2>&1 & pids+=($!)
wait_for "$work/ipfs.log" "Daemon is ready"
start_vow "$IPFS_VOW_PORT" "$work/on-ipfs" VOW_IPFS_NODE_URL="http://127.0.0.1:$IPFS_API" VOW_BLOB_UPLOAD_LIMIT=$((BLOB_MB * 1048576 + 1048576))
start_vow "$((VOW_PORT + 10))" "$work/embedded" VOW_BLOB_UPLOAD_LIMIT=$((BLOB_MB * 1048576 + 1048576))
EMB="http://127.0.0.1:$((VOW_PORT + 10))"; IPF="http://127.0.0.1:$IPFS_VOW_PORT"

head -c $((BLOB_MB * 1048576)) /dev/urandom >"$work/blob.bin"
head -c 100000 /dev/urandom >"$work/small.bin"
token() { # url handle
  curl -sf -X POST "$1/xrpc/com.atproto.server.createSession" -H 'content-type: application/json' \
    -d "{\"identifier\":\"$2\",\"password\":\"bench-password\"}" | node -pe 'JSON.parse(require("fs").readFileSync(0)).accessJwt'
}
median3() { sort -n | sed -n 2p; }
declare -A R
for side in embedded ipfs; do
  if [ $side = embedded ]; then url=$EMB; else url=$IPF; fi
  handle="st-$side.localhost"; did=$(signup "$url" "$handle"); signer "$handle" "$url"; tok=$(token "$url" "$handle")
  up() { curl -sf -o "$work/up.json" -w '%{time_total}\n' -X POST "$url/xrpc/com.atproto.repo.uploadBlob" \
    -H "authorization: Bearer $tok" -H 'content-type: application/octet-stream' --data-binary @"$1"; }
  R[up.$side]=$(for _ in 1 2 3; do up "$work/blob.bin"; done | median3)
  cid=$(node -pe 'JSON.parse(require("fs").readFileSync(process.argv[1])).blob.ref.$link' "$work/up.json")
  R[down.$side]=$(for _ in 1 2 3; do curl -sf -o /dev/null -w '%{time_total}\n' "$url/xrpc/com.atproto.sync.getBlob?did=$did&cid=$cid"; done | median3)
  start=$(date +%s.%N); for _ in $(seq 1 "$SMALL"); do up "$work/small.bin" >/dev/null; done; end=$(date +%s.%N)
  R[small.$side]=$(node -pe "(($end - $start) * 1000 / $SMALL).toFixed(1)")
  R[writes.$side]=$(node bench/writes.js "$url" "$handle" bench-password "$WRITES" 4)
  echo "$side: upload ${R[up.$side]} s, download ${R[down.$side]} s, small ${R[small.$side]} ms, writes ${R[writes.$side]}"
done

mbs() { node -pe "($BLOB_MB * 1.048576 / $1).toFixed(0)"; }
echo
echo "== summary ($BLOB_MB MiB blob, median of 3; $(nproc) cores)"
for side in embedded ipfs; do
  echo "$side: upload $(mbs "${R[up.$side]}") MB/s, download $(mbs "${R[down.$side]}") MB/s, 100 kB upload ${R[small.$side]} ms, createRecord ${R[writes.$side]}"
done

#!/usr/bin/env bash
# Sync benchmarks, run by hand:
#   getRepo of a 10,000-record repo, vow against the reference PDS (@atproto/pds 0.4.217), same
#   client (curl), median of 5; vow's RSS growth while it streams (sampled every 20 ms).
#   Firehose delivery: 10 subscribers follow subscribeRepos live while 4 accounts write
#   concurrently through `vow signer` (each must get every event), then 10 replay it all from
#   cursor 0 at once.
# Usage: scripts/bench-sync.sh   (env: RECORDS=10000 EVENTS=8000 SUBSCRIBERS=10)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${RECORDS:-10000}"; EVENTS="${EVENTS:-8000}"; SUBSCRIBERS="${SUBSCRIBERS:-10}"
PLC_PORT=2792; REF_PORT=2793; VOW_PORT=2794
EXAMPLES=firehose_load
source scripts/lib/bench-stack.sh

ref_did=$(signup "$REF" big.test); vow_did=$(signup "$V" big.localhost); signer big.localhost
echo "populate ref: $(node bench/populate.js "$REF" big.test bench-password "$RECORDS")"
echo "populate vow: $(node bench/populate.js "$V" big.localhost bench-password "$RECORDS")"

time_get() { # url -> median seconds of 5
  for _ in 1 2 3 4 5; do curl -sf -o /dev/null -w '%{time_total}\n' "$1"; done | sort -n | sed -n 3p
}
ref_t=$(time_get "$REF/xrpc/com.atproto.sync.getRepo?did=$ref_did")
rss_before=$(ps -o rss= -p "$vow_pid" | tr -d ' ')
( peak=0; while kill -0 "$vow_pid" 2>/dev/null; do r=$(ps -o rss= -p "$vow_pid" | tr -d ' '); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$work/peak"; sleep 0.02; done ) & sampler=$!
vow_t=$(time_get "$V/xrpc/com.atproto.sync.getRepo?did=$vow_did")
kill $sampler 2>/dev/null || true
peak=$(cat "$work/peak")
size=$(curl -sf "$V/xrpc/com.atproto.sync.getRepo?did=$vow_did" | wc -c)

echo "== firehose: $EVENTS events from 4 accounts writing concurrently"
per=$((EVENTS / 4))
for n in 1 2 3 4; do signup "$V" "fh$n.localhost" >/dev/null; signer "fh$n.localhost"; done
head_seq() { curl -sf -u admin:admin "$V/metrics" | awk '/^vow_firehose_head_seq /{print $2}'; }
before_writes=$(head_seq)
target/release/examples/firehose_load "ws://127.0.0.1:$VOW_PORT" "$SUBSCRIBERS" 1000000000 live >"$work/live" & live_pid=$!
wait_for "$work/live" connected
wpids=()
for n in 1 2 3 4; do node bench/writes.js "$V" "fh$n.localhost" bench-password "$per" 4 >"$work/w$n" & wpids+=($!); done
wait "${wpids[@]}"
cat "$work"/w?
# Writes that queue while a commit is signed share one commit, so there are fewer events than
# writes: the subscribers read up to the newest.
events=$(head_seq)
wait "$live_pid"
live=$(tail -1 "$work/live")
rss_fh=$(ps -o rss= -p "$vow_pid" | tr -d ' ')
fh=$(target/release/examples/firehose_load "ws://127.0.0.1:$VOW_PORT" "$SUBSCRIBERS" "$events")
rss_fh_after=$(ps -o rss= -p "$vow_pid" | tr -d ' ')

echo
echo "== summary ($(nproc) cores)"
echo "getRepo $RECORDS records ($size bytes): ref ${ref_t}s  vow ${vow_t}s  ratio $(node -pe "($ref_t/$vow_t).toFixed(1)")x"
echo "vow RSS while streaming: before $((rss_before / 1024)) MB, peak $((peak / 1024)) MB, growth $(((peak - rss_before) / 1024)) MB"
echo "firehose live during the writes, $SUBSCRIBERS subscribers, $((events - before_writes)) events made: $live"
echo "firehose replay, $SUBSCRIBERS subscribers, $events events each: $fh"
echo "vow RSS before the replay $((rss_fh / 1024)) MB, after $((rss_fh_after / 1024)) MB"

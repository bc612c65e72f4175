#!/usr/bin/env bash
# AppView proxying, run by hand: the real Bluesky AppView (@atproto/bsky on Node 22, PostgreSQL)
# indexes Vow's firehose; the same reads are made
#   directly at the AppView, with a service token Vow's signer signed (getServiceAuth),
#   through Vow (its kept token for the call), and
#   through the reference PDS (@atproto/pds 0.4.217, which signs its own tokens),
# reporting requests/s at concurrency $C and latency at concurrency 1 (Rust load generator), for
# a cheap AppView method (getConfig: what the PDS adds) and two hydrated feeds.
# Usage: scripts/bench-appview.sh   (env: C=16 SECS=10 POSTS=30)
set -euo pipefail
cd "$(dirname "$0")/.."
C="${C:-16}"; SECS="${SECS:-10}"; POSTS="${POSTS:-30}"
PLC_PORT=2802; REF_PORT=2803; VOW_PORT=2804; AV_PORT=2805; PG_PORT=2806
AV="http://localhost:$AV_PORT"; AV_DID="did:web:localhost%3A$AV_PORT"
export VOW_BSKY_APP_VIEW_URL="$AV" VOW_BSKY_APP_VIEW_DID="$AV_DID" VOW_PROXY_ALLOW_PRIVATE=true
export REF_APP_VIEW_URL="$AV" REF_APP_VIEW_DID="$AV_DID"
EXAMPLES=xrpc_load
source scripts/lib/bench-stack.sh
LOAD=target/release/examples/xrpc_load

echo "== the AppView: PostgreSQL and @atproto/bsky"
(cd e2e/appview && npm ci --no-audit --no-fund --loglevel=error)
PG_BIN="${PG_BIN:-$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")}"
pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; else "$PG_BIN/$1" "${@:2}"; fi; }
mkdir -p "$work/pg"; [ "$(id -u)" -ne 0 ] || chown postgres "$work" "$work/pg"
pg initdb -D "$work/pg/data" -A trust -U postgres >/dev/null
pg pg_ctl -D "$work/pg/data" -l "$work/pg/log" -w -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $work/pg -c fsync=off" start >/dev/null
trap 'pg pg_ctl -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true; cleanup' EXIT
pg psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database appview"
(cd e2e/appview && PORT=$AV_PORT PLC_URL="http://localhost:$PLC_PORT" PDS_WS="ws://127.0.0.1:$VOW_PORT" \
  DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/appview" exec node_modules/.bin/node appview.mjs >"$work/appview.log" 2>&1) & pids+=($!)
wait_for "$work/appview.log" "appview up"

session() { # url handle -> access token
  curl -sf -X POST "$1/xrpc/com.atproto.server.createSession" -H 'content-type: application/json' \
    -d "{\"identifier\":\"$2\",\"password\":\"bench-password\"}" | node -pe 'JSON.parse(require("fs").readFileSync(0)).accessJwt'
}
vow_did=$(signup "$V" bench.localhost); signer bench.localhost
ref_did=$(signup "$REF" bench.test)
vow_token=$(session "$V" bench.localhost); ref_token=$(session "$REF" bench.test)
for i in $(seq 1 "$POSTS"); do
  curl -sf -X POST "$V/xrpc/com.atproto.repo.createRecord" -H 'content-type: application/json' -H "authorization: Bearer $vow_token" \
    -d "{\"repo\":\"$vow_did\",\"collection\":\"app.bsky.feed.post\",\"record\":{\"\$type\":\"app.bsky.feed.post\",\"text\":\"post $i\",\"createdAt\":\"2026-12-01T00:00:00.000Z\"}}" >/dev/null
done
for _ in $(seq 1 300); do
  n=$(curl -s "$AV/xrpc/app.bsky.feed.getAuthorFeed?actor=$vow_did&limit=100" | node -pe 'try{JSON.parse(require("fs").readFileSync(0)).feed.length}catch{0}')
  [ "$n" -ge "$POSTS" ] && break; sleep 0.2
done
echo "indexed $n posts"
# The token the direct calls use: one Vow's signer signs, for an hour.
exp=$(( $(date +%s) + 3600 ))
direct_token() { curl -sf "$V/xrpc/com.atproto.server.getServiceAuth?aud=${AV_DID//%/%25}&lxm=$1&exp=$exp" -H "authorization: Bearer $vow_token" \
  | node -pe 'JSON.parse(require("fs").readFileSync(0)).token'; }

run() { # label token url concurrency seconds
  local out; out=$(XRPC_LOAD_BEARER="$2" "$LOAD" "$3" "$4" "$5"); echo "$1 c=$4: $out"
}
tl="app.bsky.feed.getTimeline?limit=30"; af="app.bsky.feed.getAuthorFeed?actor=$vow_did&limit=30"
cf="app.bsky.unspecced.getConfig"
t_tl=$(direct_token app.bsky.feed.getTimeline); t_af=$(direct_token app.bsky.feed.getAuthorFeed)
t_cf=$(direct_token app.bsky.unspecced.getConfig)
# getConfig costs the AppView almost nothing, so it shows what each PDS adds; the feeds are
# bound by the AppView's own work on this machine.
for c in 1 "$C"; do
  run "getConfig     direct  " "$t_cf" "$AV/xrpc/$cf" "$c" "$SECS"
  run "getConfig     via vow " "$vow_token" "$V/xrpc/$cf" "$c" "$SECS"
  run "getConfig     via ref " "$ref_token" "$REF/xrpc/$cf" "$c" "$SECS"
  run "getTimeline   direct  " "$t_tl" "$AV/xrpc/$tl" "$c" "$SECS"
  run "getTimeline   via vow " "$vow_token" "$V/xrpc/$tl" "$c" "$SECS"
  run "getTimeline   via ref " "$ref_token" "$REF/xrpc/$tl" "$c" "$SECS"
  run "getAuthorFeed direct  " "$t_af" "$AV/xrpc/$af" "$c" "$SECS"
  run "getAuthorFeed via vow " "$vow_token" "$V/xrpc/$af" "$c" "$SECS"
  run "getAuthorFeed via ref " "$ref_token" "$REF/xrpc/$af" "$c" "$SECS"
done
echo "vow RSS after: $(( $(ps -o rss= -p "$vow_pid") / 1024 )) MB"

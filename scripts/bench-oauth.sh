#!/usr/bin/env bash
# OAuth side by side, run by hand: Vow's provider and the reference PDS's (@atproto/pds 0.4.217),
# the same loopback client with the same hand-made DPoP proofs (bench/oauth.mjs, on the Node 22
# of e2e/appview): pushed authorization requests, refresh grants at the token endpoint, and
# DPoP-authenticated getRecord calls, each with throughput, latency and the server's CPU time
# per request.
# Usage: scripts/bench-oauth.sh   (env: N=400 C=8)
set -euo pipefail
cd "$(dirname "$0")/.."
PLC_PORT=2812; REF_PORT=2813; VOW_PORT=2814; EXAMPLES=""
export VOW_OAUTH=true
source scripts/lib/bench-stack.sh
(cd e2e/appview && npm ci --no-audit --no-fund --loglevel=error)
# The reference reserves some handles ("oauth" among them): these are free on both.
ref_handle=appuser.test; vow_handle=appuser.localhost
signup "$REF" "$ref_handle" >/dev/null; signup "$V" "$vow_handle" >/dev/null
signer "$vow_handle" "http://localhost:$VOW_PORT"
e2e/appview/node_modules/.bin/node bench/oauth.mjs --n "${N:-400}" --c "${C:-8}" \
  --target "vow=http://localhost:$VOW_PORT=$vow_handle" --target "reference=http://localhost:$REF_PORT=$ref_handle" \
  --pid "vow=$vow_pid" --pid "reference=$ref_pid"

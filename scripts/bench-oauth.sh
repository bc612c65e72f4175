#!/usr/bin/env bash
# OAuth side by side, run by hand: pushed authorization requests with DPoP against Vow's
# provider and the reference PDS's (@atproto/pds 0.4.217), the same loopback client and the same
# hand-made proofs (bench/oauth-par.mjs, on the Node 22 of e2e/appview).
# Then the token endpoint (refresh grants) and DPoP getRecord, side by side, with the real
# OAuth client library (e2e/oauth/bench-tokens.mjs).
# Usage: scripts/bench-oauth.sh   (env: N=400 C=8)
set -euo pipefail
cd "$(dirname "$0")/.."
PLC_PORT=2812; REF_PORT=2813; VOW_PORT=2814; EXAMPLES=""
export VOW_OAUTH=true
source scripts/lib/bench-stack.sh
(cd e2e/appview && npm ci --no-audit --no-fund --loglevel=error)
e2e/appview/node_modules/.bin/node bench/oauth-par.mjs --n "${N:-400}" --c "${C:-8}" \
  --target "vow=http://localhost:$VOW_PORT" --target "reference=http://localhost:$REF_PORT"
# The token endpoint and a DPoP-authenticated read, with @atproto/oauth-client-node as the
# client (e2e/oauth), sessions authorized without a browser.
(cd e2e/oauth && npm ci --no-audit --no-fund --loglevel=error)
ref_handle=appuser.test; vow_handle=appuser.localhost
signup "$REF" "$ref_handle" >/dev/null; signup "$V" "$vow_handle" >/dev/null
signer "$vow_handle" "http://localhost:$VOW_PORT"
e2e/appview/node_modules/.bin/node e2e/oauth/bench-tokens.mjs --n "${N:-400}" --c "${C:-8}" --plc "http://localhost:$PLC_PORT" \
  --target "vow=http://localhost:$VOW_PORT=$vow_handle" --target "reference=http://localhost:$REF_PORT=$ref_handle"

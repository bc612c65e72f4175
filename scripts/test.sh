#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, and the Rust test suites (the server's
# integration tests start the real PLC directory server, the reference PDS, the real Bluesky
# AppView with PostgreSQL, and run @atproto/* clients and headless Chromium from e2e/, all
# installed here from npm and apt).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing e2e components (PLC directory server, ATProto clients, playwright-core) from npm"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
# js-ipfs 0.66: the IPFS node the storage tests run against (Kubo cannot be installed from the
# registries; js-ipfs serves the same RPC API). One optional dependency points at a GitHub
# tarball that cannot be fetched here; no retries keeps that failure quick.
echo "== installing js-ipfs from npm"
(cd e2e/ipfs && npm ci --no-audit --no-fund --loglevel=error --fetch-retries=0)

# The real Bluesky AppView (@atproto/bsky) and Node 22, which it needs, both from npm.
echo "== installing the Bluesky AppView and Node 22 from npm"
(cd e2e/appview && npm ci --no-audit --no-fund --loglevel=error)
# The reference PDS (@atproto/pds): the migration tests move an account in from it and out to
# another of it; the side-by-side benchmarks use the same install.
echo "== installing the reference PDS from npm"
(cd bench && npm ci --no-audit --no-fund --loglevel=error)
# An ATProto OAuth client app (@atproto/oauth-client-node; the lock pins the registry's
# handle-resolver-node), run on the Node 22 above.
echo "== installing the OAuth client from npm"
(cd e2e/oauth && npm ci --no-audit --no-fund --loglevel=error)
# A real SMTP server for the mail tests (aiosmtpd) and the Prometheus text parser the metrics
# test reads /metrics with (prometheus-client), from PyPI, in a virtualenv of their own.
echo "== installing aiosmtpd and prometheus-client from PyPI"
if [ ! -x e2e/smtp/venv/bin/python ] && ! python3 -m venv e2e/smtp/venv; then
  echo "== installing python3-venv from apt"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  rm -rf e2e/smtp/venv && python3 -m venv e2e/smtp/venv
fi
e2e/smtp/venv/bin/pip install -q --disable-pip-version-check -r e2e/smtp/requirements.txt
# The AppView keeps its index in PostgreSQL; the test starts a private cluster on loopback.
if [ -z "${PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing postgresql from apt"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
export PG_BIN="${PG_BIN:-$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")}"

# The OAuth test makes a test CA and a certificate for a confidential client's metadata host
# with the openssl command.
if ! command -v openssl >/dev/null; then
  echo "== installing openssl from apt"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null
fi

# The passkey end-to-end test drives Debian's Chromium (a real browser with a virtual
# authenticator); install it from apt when it is missing.
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  echo "== installing chromium from apt"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# Every step runs even when an earlier one fails, so one run reports every failure.
failed=()
step() {
  local name="$1"; shift
  echo "== $name"
  if ! "$@"; then failed+=("$name"); fi
}
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The servers and signers the tests start log here, at info (debug for Vow's own lines), and the
# harness notes every secret it handles; the last step searches the whole log for them.
export VOW_TEST_LOG_DIR="$PWD/target/test-logs"
export VOW_TEST_LOG_LEVEL="${VOW_TEST_LOG_LEVEL:-info,vow=debug}"
rm -rf "$VOW_TEST_LOG_DIR" && mkdir -p "$VOW_TEST_LOG_DIR"
# --no-fail-fast: every test binary runs and every failing test is listed at the end.
step "cargo test" cargo test --workspace --locked --no-fail-fast
step "secrets in the run's log" cargo test -p vow --locked --test log_scan -- --ignored --nocapture

if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
echo "== all tests passed"

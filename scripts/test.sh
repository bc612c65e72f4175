#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, and the Rust test suites (the server's
# integration tests start the real PLC directory server from e2e/, installed here from npm).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing e2e components (PLC directory server, ATProto clients) from npm"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== all tests passed"

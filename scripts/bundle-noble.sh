#!/usr/bin/env bash
# Rebuilds crates/vow/assets/noble-secp256k1.js: the one JavaScript dependency of the account
# page, bundled so the page loads nothing from a CDN. Run by hand when upgrading @noble/curves.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-1.9.7}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm init -y >/dev/null && npm install --no-audit --no-fund "@noble/curves@$VERSION" esbuild@0 >/dev/null)
echo "export { secp256k1 } from '@noble/curves/secp256k1';" > "$work/entry.js"
(cd "$work" && npx esbuild entry.js --bundle --format=esm --minify --legal-comments=none --outfile=out.js)
{
  echo "/* @noble/curves $VERSION (secp256k1 only), bundled with esbuild for Vow's account page."
  echo "   Source: https://github.com/paulmillr/noble-curves. MIT License, Copyright (c) 2022 Paul Miller."
  echo "   Rebuild: scripts/bundle-noble.sh */"
  cat "$work/out.js"
} > crates/vow/assets/noble-secp256k1.js
cp "$work/node_modules/@noble/curves/LICENSE" crates/vow/assets/noble-curves.LICENSE
echo "wrote crates/vow/assets/noble-secp256k1.js"

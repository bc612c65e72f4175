#!/usr/bin/env bash
# Runs js-ipfs 0.66 (npm `ipfs`, installed in e2e/ipfs by scripts/test.sh) as an offline IPFS node
# whose Kubo-compatible RPC API listens on 127.0.0.1 only. Kubo itself cannot be installed from
# the package registries; js-ipfs serves the same /api/v0 calls Vow makes.
# Usage: scripts/ipfs-node.sh REPO_DIR API_PORT GATEWAY_PORT GRPC_PORT   (runs in the foreground)
# The ports are written into a new repo's config; a restart of an existing repo keeps them.
set -euo pipefail
here="$(cd "$(dirname "$0")/../e2e/ipfs" && pwd)"
export IPFS_PATH="$(realpath -m "$1")"
api=$2 gateway=$3 grpc=$4
# Node 20 lacks Promise.withResolvers, which a dependency of js-ipfs uses.
export NODE_OPTIONS="--require $here/polyfill.cjs"
jsipfs="$here/node_modules/.bin/jsipfs"
[ -x "$jsipfs" ] || { echo "js-ipfs missing: run npm ci in e2e/ipfs (scripts/test.sh does)" >&2; exit 1; }
if [ ! -f "$IPFS_PATH/config" ]; then
  "$jsipfs" init --profile test >/dev/null
  # No swarm listeners (libp2p refuses to start with them here), no bootstrap, no discovery:
  # the node is offline and reachable only through its loopback API.
  "$jsipfs" config --json Addresses.Swarm '[]'
  "$jsipfs" config --json Bootstrap '[]'
  "$jsipfs" config --json Discovery.MDNS.Enabled false
  "$jsipfs" config Addresses.API "/ip4/127.0.0.1/tcp/$api"
  "$jsipfs" config Addresses.Gateway "/ip4/127.0.0.1/tcp/$gateway"
  "$jsipfs" config Addresses.RPC "/ip4/127.0.0.1/tcp/$grpc"
fi
exec "$jsipfs" daemon --offline

#!/usr/bin/env node
// Starts the reference PDS (@atproto/pds) on 127.0.0.1 for side-by-side benchmarks, with SQLite
// and a disk blobstore under a data directory, against a PLC directory given by URL.
// Usage: node refpds.js <port> <dataDir> <plcUrl>
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')
const pds = require('@atproto/pds')

const [port, dataDir, plcUrl] = process.argv.slice(2)
if (!port || !dataDir || !plcUrl) {
  console.error('usage: refpds.js <port> <dataDir> <plcUrl>')
  process.exit(2)
}
const blobs = path.join(dataDir, 'blobs')
fs.mkdirSync(blobs, { recursive: true })
const settings = {
  PDS_PORT: port,
  PDS_HOSTNAME: 'localhost',
  PDS_DATA_DIRECTORY: dataDir,
  PDS_BLOBSTORE_DISK_LOCATION: blobs,
  PDS_JWT_SECRET: crypto.randomBytes(16).toString('hex'),
  PDS_ADMIN_PASSWORD: 'admin-pass',
  PDS_DPOP_SECRET: crypto.randomBytes(32).toString('hex'),
  PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: crypto.randomBytes(32).toString('hex'),
  // The PDS's fetch refuses IP literals, so the PLC is named by hostname.
  PDS_DID_PLC_URL: plcUrl.replace('127.0.0.1', 'localhost'),
  PDS_DEV_MODE: 'true',
  PDS_INVITE_REQUIRED: 'false',
  PDS_SERVICE_HANDLE_DOMAINS: '.test',
  PDS_DISABLE_SSRF_PROTECTION: 'true',
  PDS_CRAWLERS: '',
  // An AppView to proxy to, when a benchmark runs one (scripts/bench-appview.sh).
  PDS_BSKY_APP_VIEW_URL: process.env.REF_APP_VIEW_URL || '',
  PDS_BSKY_APP_VIEW_DID: process.env.REF_APP_VIEW_DID || '',
  PDS_RATE_LIMITS_ENABLED: 'false',
  LOG_ENABLED: 'false',
}
Object.assign(process.env, settings)

async function main() {
  const env = pds.readEnv()
  const server = await pds.PDS.create(pds.envToCfg(env), pds.envToSecrets(env))
  // Loopback only.
  const listen = server.app.listen.bind(server.app)
  server.app.listen = (p, ...rest) => listen(p, '127.0.0.1', ...rest)
  await server.start()
  console.log(`reference PDS listening on http://127.0.0.1:${port}`)
  const stop = async () => {
    await server.destroy()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})

// The Bluesky AppView (@atproto/bsky) for Vow's tests: the API and its data plane on one
// loopback port, backed by PostgreSQL, indexing one PDS's firehose. Wired the way
// @atproto/dev-env wires its test AppView, without bsync, ozone or a cache.
//
// Usage: node22 appview.mjs   (env below; prints one JSON line {"msg":"appview up",...})
//   PORT          listen port (127.0.0.1)
//   DID           the AppView's DID (default did:web:localhost%3A<PORT>, served by bsky itself)
//   PLC_URL       PLC directory
//   PDS_WS        ws:// URL of the PDS whose subscribeRepos it indexes
//   DB_URL        postgres://… ; DB_SCHEMA (default appview)
//   KEY_HEX       optional secp256k1 private key (hex) for the AppView's own signatures
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import * as bsky from '@atproto/bsky'
import { Secp256k1Keypair } from '@atproto/crypto'
import { SECOND } from '@atproto/common-web'
import { IdResolver, MemoryCache } from '@atproto/identity'
import { expressConnectMiddleware } from '@connectrpc/connect-express'
import express from 'express'

// Nothing here listens beyond loopback: listen() calls without a host get 127.0.0.1.
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1')
  else if (args[0] && typeof args[0] === 'object' && !args[0].path && !args[0].host) args[0] = { ...args[0], host: '127.0.0.1' }
  return listen.apply(this, args)
}

const here = path.dirname(fileURLToPath(import.meta.url))
const env = (name, fallback) => process.env[name] ?? fallback
const port = Number(env('PORT', '2684'))
const did = env('DID', `did:web:localhost%3A${port}`)
const plcUrl = env('PLC_URL', 'http://localhost:2582')
const pdsWs = env('PDS_WS', 'ws://localhost:2583')
const dbUrl = env('DB_URL', 'postgres://postgres@127.0.0.1:5432/appview')
const schema = env('DB_SCHEMA', 'appview')

const started = Date.now()
const key = process.env.KEY_HEX
  ? await Secp256k1Keypair.import(process.env.KEY_HEX)
  : await Secp256k1Keypair.create({ exportable: true })

const migrator = new bsky.Database({ url: dbUrl, schema })
await migrator.migrateToLatestOrThrow()
await migrator.close()

const db = new bsky.Database({ url: dbUrl, schema, poolSize: 10 })
// The global fetch: the default one refuses plain HTTP, which the local PLC and did:web services use.
const idResolver = new IdResolver({ plcUrl, didCache: new MemoryCache(), fetch: globalThis.fetch })
const routesFile = path.join(here, 'node_modules/@atproto/bsky/dist/data-plane/server/routes/index.js')
const dataPlaneRoutes = (await import(pathToFileURL(routesFile).href)).default(db, idResolver)
const self = `http://127.0.0.1:${port}`
const config = new bsky.ServerConfig({
  version: 'vow-test',
  port,
  didPlcUrl: plcUrl,
  publicUrl: `http://localhost:${port}`,
  serverDid: did,
  alternateAudienceDids: [],
  dataplaneUrls: [self],
  dataplaneHttpVersion: '1.1',
  // No bsync: AppView-side writes (mutes, bookmarks) fail; reads work.
  bsyncUrl: self,
  bsyncHttpVersion: '1.1',
  bsyncApiKey: 'unused',
  modServiceDid: 'did:example:no-moderation',
  labelsFromIssuerDids: [],
  bigThreadUris: new Set(),
  maxThreadParents: 50,
  // Test feed generators live on localhost.
  disableSsrfProtection: true,
  searchTagsHide: new Set(),
  searchTagsHideAll: new Set(),
  threadTagsBumpDown: new Set(),
  threadTagsHide: new Set(),
  visibilityTagHide: '',
  visibilityTagRankPrefix: '',
  debugFieldAllowedDids: new Set(),
  draftsLimit: 500,
  feedGenSkeletonTimeout: 5 * SECOND,
  adminPasswords: ['admin'],
  etcdHosts: [],
})
const server = bsky.BskyAppView.create({ config, signingKey: key })
// The data plane (connect-rpc over HTTP/1.1) answers on the same port, in front of the API.
const front = express()
front.use(expressConnectMiddleware({ routes: dataPlaneRoutes }))
front.use(server.app)
server.app = front
await server.start()

const subscription = new bsky.RepoSubscription({ service: pdsWs, db, idResolver })
void subscription.start()
console.log(JSON.stringify({ msg: 'appview up', url: `http://localhost:${port}`, did, pdsWs, ms: Date.now() - started }))

const stop = async () => {
  await subscription.destroy().catch(() => {})
  await server.destroy().catch(() => {})
  await db.close().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

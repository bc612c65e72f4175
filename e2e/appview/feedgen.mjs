// A small feed generator for Vow's getFeed test, using @atproto/xrpc-server's token check: it serves
// app.bsky.feed.getFeedSkeleton and its did:web document, and verifies the service token the
// AppView passes on (signed by the viewer's key, aud = this DID, lxm = getFeedSkeleton). The
// feed lists the posts given in POSTS (comma-separated AT-URIs, settable at /set?posts=…);
// each answer says who asked, in the cursor, so the test can see the token was verified.
//
// Usage: node feedgen.mjs   (env PORT, PLC_URL; prints {"msg":"feedgen up","did":…})
import http from 'node:http'
import express from 'express'
import { IdResolver, MemoryCache } from '@atproto/identity'
import { verifyJwt } from '@atproto/xrpc-server'

const port = Number(process.env.PORT ?? '2685')
const did = `did:web:localhost%3A${port}`
const idResolver = new IdResolver({
  plcUrl: process.env.PLC_URL ?? 'http://localhost:2582',
  didCache: new MemoryCache(),
  // The default fetch refuses plain HTTP, which the local PLC and did:web services use.
  fetch: globalThis.fetch,
})
let posts = (process.env.POSTS ?? '').split(',').filter(Boolean)
const seen = []

const app = express()
app.get('/.well-known/did.json', (_req, res) =>
  res.json({
    '@context': ['https://www.w3.org/ns/did/v1'],
    id: did,
    service: [{ id: '#bsky_fg', type: 'BskyFeedGenerator', serviceEndpoint: `http://localhost:${port}` }],
  }),
)
app.get('/set', (req, res) => {
  posts = String(req.query.posts ?? '').split(',').filter(Boolean)
  res.json({ posts })
})
app.get('/seen', (_req, res) => res.json({ seen }))
app.get('/xrpc/app.bsky.feed.getFeedSkeleton', async (req, res) => {
  const header = req.headers.authorization ?? ''
  let viewer = 'anonymous'
  if (header.startsWith('Bearer ')) {
    try {
      const resolveKey = (iss, forceRefresh) => idResolver.did.resolveAtprotoKey(iss, forceRefresh)
      viewer = (await verifyJwt(header.slice(7), did, 'app.bsky.feed.getFeedSkeleton', resolveKey)).iss
    } catch (e) {
      seen.push(`refused: ${e.message}`)
      return res.status(401).json({ error: 'AuthenticationRequired', message: `token refused: ${e.message}` })
    }
  }
  seen.push(viewer)
  res.json({ feed: posts.map((post) => ({ post })), cursor: `viewer:${viewer}` })
})
http.createServer(app).listen(port, '127.0.0.1', () => console.log(JSON.stringify({ msg: 'feedgen up', did, port })))

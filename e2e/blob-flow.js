#!/usr/bin/env node
// Blobs through @atproto/api: upload a PNG and a 3 MB blob, reference the PNG from a post's image
// embed, fetch both back byte-identical with the ATProto blob CID (CIDv1 raw sha2-256 of the
// whole file), list them, and check an oversized upload is refused.
// Usage: node blob-flow.js <pdsUrl> <identifier> <password> --too-big BYTES
const crypto = require('crypto')
const { AtpAgent } = require('@atproto/api')
const { CID } = require('multiformats/cid')
const { create: digestOf } = require('multiformats/hashes/digest')

const [service, identifier, password] = process.argv.slice(2)
const i = process.argv.indexOf('--too-big')
const tooBig = i > 0 ? Number(process.argv[i + 1]) : 0
const log = []
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`)
  log.push(`ok   ${what}`)
}
const blobCid = (bytes) => CID.create(1, 0x55, digestOf(0x12, crypto.createHash('sha256').update(bytes).digest())).toString()
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64')

async function main() {
  const agent = new AtpAgent({ service })
  await agent.login({ identifier, password })
  const did = agent.session.did
  const png = (await agent.uploadBlob(PNG, { encoding: 'image/png' })).data.blob
  check(png.ref.toString() === blobCid(PNG) && png.mimeType === 'image/png' && png.size === PNG.length, 'PNG uploaded with its raw sha2-256 CID')
  const big = crypto.randomBytes(3 * 1024 * 1024)
  const bigRef = (await agent.uploadBlob(big, { encoding: 'application/octet-stream' })).data.blob
  check(bigRef.ref.toString() === blobCid(big) && bigRef.size === big.length, '3 MB blob uploaded with its CID')
  const post = await agent.com.atproto.repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: {
    $type: 'app.bsky.feed.post', text: 'with image', createdAt: new Date().toISOString(),
    embed: { $type: 'app.bsky.embed.images', images: [{ image: png, alt: 'a pixel' }] } } })
  check(post.data.validationStatus === 'valid', 'post with an image embed validates')
  for (const [bytes, ref, mime] of [[PNG, png, 'image/png'], [big, bigRef, 'application/octet-stream']]) {
    const res = await fetch(`${service}/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${ref.ref.toString()}`)
    const body = Buffer.from(await res.arrayBuffer())
    check(res.ok && body.equals(bytes), `getBlob returns the ${bytes.length} bytes unchanged`)
    check(res.headers.get('content-type') === mime, `served as ${mime}`)
    check(res.headers.get('x-content-type-options') === 'nosniff' && res.headers.get('content-security-policy').includes('sandbox'), 'served with safe headers')
  }
  const listed = (await agent.com.atproto.sync.listBlobs({ did })).data.cids
  check(listed.includes(png.ref.toString()) && listed.includes(bigRef.ref.toString()), 'listBlobs lists both')
  try {
    await agent.com.atproto.sync.getBlob({ did, cid: blobCid(Buffer.from('never uploaded')) })
    throw new Error('unknown blob was served')
  } catch (err) {
    check(err.error === 'BlobNotFound', 'unknown blob: BlobNotFound')
  }
  if (tooBig) {
    try {
      await agent.uploadBlob(crypto.randomBytes(tooBig), { encoding: 'application/octet-stream' })
      throw new Error('oversized upload accepted')
    } catch (err) {
      check(err.error === 'BlobTooLarge', `upload over the limit: ${err.error}`)
    }
  }
  console.log(log.join('\n'))
  console.log(JSON.stringify({ ok: true }))
}
main().catch((err) => {
  console.log(log.join('\n'))
  console.error(err)
  process.exit(1)
})

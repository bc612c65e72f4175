#!/usr/bin/env node
// Blobs and their references through @atproto/api, on whichever store the PDS uses: upload a
// PNG, a 3 MB and a 30 MB blob; reference the PNG from a post's image embed and the others from
// nested fields of another record; fetch all back byte-identical with the ATProto blob CID
// (CIDv1 raw sha2-256 of the whole file); list them; refuse a reference to a blob never
// uploaded; then drop the 30 MB reference and check it is no longer listed.
// Usage: node storage-flow.js <pdsUrl> <identifier> <password> [--too-big BYTES]
// Prints {"ok":true,"did":...,"png":cid,"small":cid,"big":cid} last.
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
  const repo = agent.com.atproto.repo

  const png = (await agent.uploadBlob(PNG, { encoding: 'image/png' })).data.blob
  check(png.ref.toString() === blobCid(PNG) && png.mimeType === 'image/png' && png.size === PNG.length, 'PNG uploaded with its raw sha2-256 CID')
  const small = crypto.randomBytes(3 * 1000 * 1000)
  const big = crypto.randomBytes(30 * 1000 * 1000)
  const smallRef = (await agent.uploadBlob(small, { encoding: 'application/octet-stream' })).data.blob
  check(smallRef.ref.toString() === blobCid(small) && smallRef.size === small.length, '3 MB blob uploaded with its CID')
  const started = Date.now()
  const bigRef = (await agent.uploadBlob(big, { encoding: 'video/mp4' })).data.blob
  check(bigRef.ref.toString() === blobCid(big) && bigRef.size === big.length, `30 MB blob uploaded with its CID (${Date.now() - started} ms)`)

  const post = await repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: {
    $type: 'app.bsky.feed.post', text: 'with image', createdAt: new Date().toISOString(),
    embed: { $type: 'app.bsky.embed.images', images: [{ image: png, alt: 'a pixel' }] } } })
  check(post.data.validationStatus === 'valid', 'post with an image embed validates')
  const attachment = { $type: 'com.example.attachment', name: 'files', files: [{ file: smallRef }], nested: { deeper: [{ file: bigRef }] } }
  const att = await repo.putRecord({ repo: did, collection: 'com.example.attachment', rkey: 'files', record: attachment })
  check(att.data.validationStatus === 'unknown', 'record referencing blobs in nested fields stored')
  try {
    const ghost = { $type: 'blob', ref: CID.parse(blobCid(Buffer.from('never uploaded'))), mimeType: 'text/plain', size: 14 }
    await repo.createRecord({ repo: did, collection: 'com.example.attachment', record: { $type: 'com.example.attachment', files: [{ file: ghost }] } })
    throw new Error('a reference to a blob never uploaded was accepted')
  } catch (err) {
    check(err.error === 'BlobNotFound', `reference to a blob never uploaded: ${err.error}`)
  }

  for (const [bytes, ref, mime] of [[PNG, png, 'image/png'], [small, smallRef, 'application/octet-stream'], [big, bigRef, 'video/mp4']]) {
    const t = Date.now()
    const res = await fetch(`${service}/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${ref.ref.toString()}`)
    const body = Buffer.from(await res.arrayBuffer())
    check(res.ok && body.equals(bytes) && blobCid(body) === ref.ref.toString(), `getBlob returns the ${bytes.length} bytes unchanged (${Date.now() - t} ms)`)
    check(res.headers.get('content-type') === mime, `served as ${mime}`)
    check(res.headers.get('x-content-type-options') === 'nosniff' && res.headers.get('content-security-policy').includes('sandbox'), 'served with safe headers')
  }
  const listed = async () => (await agent.com.atproto.sync.listBlobs({ did })).data.cids
  const all = await listed()
  check([png, smallRef, bigRef].every((b) => all.includes(b.ref.toString())) && all.length === 3, 'listBlobs lists the three referenced blobs')
  const missing = (await repo.listMissingBlobs({})).data.blobs
  check(missing.length === 0, 'listMissingBlobs: none missing')
  try {
    await agent.com.atproto.sync.getBlob({ did, cid: blobCid(Buffer.from('never uploaded')) })
    throw new Error('unknown blob was served')
  } catch (err) {
    check(err.error === 'BlobNotFound', 'unknown blob: BlobNotFound')
  }

  await repo.putRecord({ repo: did, collection: 'com.example.attachment', rkey: 'files', record: { ...attachment, nested: {} } })
  const after = await listed()
  check(!after.includes(bigRef.ref.toString()) && after.length === 2, 'after the update drops it, the 30 MB blob is no longer listed')

  if (tooBig) {
    try {
      await agent.uploadBlob(crypto.randomBytes(tooBig), { encoding: 'application/octet-stream' })
      throw new Error('oversized upload accepted')
    } catch (err) {
      check(err.error === 'BlobTooLarge', `upload over the limit: ${err.error}`)
    }
  }
  console.log(log.join('\n'))
  console.log(JSON.stringify({ ok: true, did, png: png.ref.toString(), small: smallRef.ref.toString(), big: bigRef.ref.toString() }))
}
main().catch((err) => {
  console.log(log.join('\n'))
  console.error(err)
  process.exit(1)
})

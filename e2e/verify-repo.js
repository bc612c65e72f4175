#!/usr/bin/env node
// Verifies a hosted repo the way a relay would, with @atproto/repo, against the signing key the
// PLC directory lists: sync.getRepo (signature, MST, every record), sync.getRecord proofs for
// every record, getLatestCommit, getRepoStatus, listRepos and getBlocks.
// Usage: node verify-repo.js <pdsUrl> <did> --plc <plcUrl>
const { AtpAgent } = require('@atproto/api')
const { verifyRepoCar, verifyRecords, readCarWithRoot } = require('@atproto/repo')

const [service, did] = process.argv.slice(2)
const i = process.argv.indexOf('--plc')
const plc = i > 0 ? process.argv[i + 1] : undefined
if (!service || !did || !plc) {
  console.error('usage: verify-repo.js <pdsUrl> <did> --plc <plcUrl>')
  process.exit(2)
}
const log = []
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`)
  log.push(`ok   ${what}`)
}

async function main() {
  const last = await (await fetch(`${plc}/${did}/log/last`)).json()
  const key = last.verificationMethods.atproto
  const agent = new AtpAgent({ service })
  const car = new Uint8Array((await agent.com.atproto.sync.getRepo({ did })).data)
  const { root } = await readCarWithRoot(car)
  const verified = await verifyRepoCar(car, did, key)
  check(verified.creates.length > 0, `getRepo verifies against ${key} (${verified.creates.length} records)`)
  const latest = (await agent.com.atproto.sync.getLatestCommit({ did })).data
  check(latest.cid === root.toString() && latest.rev === verified.commit.rev, 'getLatestCommit matches the export')
  const head = (await agent.com.atproto.sync.getHead({ did })).data
  check(head.root === root.toString(), 'getHead (deprecated) names the same head')
  const checkout = new Uint8Array((await agent.com.atproto.sync.getCheckout({ did })).data)
  const fromCheckout = await verifyRepoCar(checkout, did, key)
  check(fromCheckout.creates.length === verified.creates.length, 'getCheckout (deprecated) verifies like getRepo')
  for (const c of verified.creates) {
    const proof = new Uint8Array((await agent.com.atproto.sync.getRecord({ did, collection: c.collection, rkey: c.rkey })).data)
    const claims = await verifyRecords(proof, did, key)
    const rec = claims.find((r) => r.collection === c.collection && r.rkey === c.rkey)
    if (!rec || !rec.record) throw new Error(`proof for ${c.collection}/${c.rkey} does not verify`)
  }
  check(true, `sync.getRecord proofs verify for all ${verified.creates.length} records`)
  try {
    await agent.com.atproto.sync.getRecord({ did, collection: 'app.bsky.feed.post', rkey: 'nonexistent' })
    throw new Error('missing record returned a proof')
  } catch (err) {
    check(err.error === 'RecordNotFound', 'missing record: RecordNotFound')
  }
  const status = (await agent.com.atproto.sync.getRepoStatus({ did })).data
  check(status.active === true && status.rev === latest.rev, 'getRepoStatus: active at the head rev')
  const repos = (await agent.com.atproto.sync.listRepos({ limit: 1000 })).data.repos
  check(repos.some((r) => r.did === did && r.head === latest.cid && r.rev === latest.rev), 'listRepos lists the repo at its head')
  const blocks = new Uint8Array((await agent.com.atproto.sync.getBlocks({ did, cids: [latest.cid] })).data)
  const got = await readCarWithRoot(blocks)
  check(got.blocks.has(root), 'getBlocks returns the head commit block')
  console.log(log.join('\n'))
  console.log(JSON.stringify({ ok: true, did, records: verified.creates.length }))
}
main().catch((err) => {
  console.log(log.join('\n'))
  console.error(err)
  process.exit(1)
})

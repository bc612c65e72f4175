#!/usr/bin/env node
// An account moves from the reference PDS (@atproto/pds) to Vow and back, with @atproto/api
// driving the standard calls a migration tool makes, and `vow signer` holding the user's key.
//
//   node migration-flow.js --vow URL --ref URL --ref2 URL --plc URL --ref-data DIR
//        --mail-dir DIR --vow-bin PATH --key-file PATH --bench DIR
//
// In: an account with posts, a profile and an avatar image is created on the reference PDS.
// It moves to Vow: createAccount with a service token, importRepo, `vow signer` registers the
// user's key, getRecommendedDidCredentials, the reference PDS signs the PLC operation, Vow
// submits it and activates. Checks: the user's key is the DID's only rotation key (PLC audit
// log), Vow's firehose shows #identity, #account and #sync, every blob arrives, posting works.
// Out: to a second reference PDS (the first still holds the deactivated account), every step signed by the user's key through `vow signer`
// (the service token and the PLC operation); every record and blob arrives there.
const fs = require('fs')
const path = require('path')
const { spawn } = require('child_process')
const { AtpAgent } = require('@atproto/api')
const { verifyRepoCar } = require('@atproto/repo')
const WebSocket = require('ws')
const { option, check, steps } = require('./lib')

const args = process.argv.slice(2)
const vowUrl = option(args, '--vow')
const refUrl = option(args, '--ref')
const ref2Url = option(args, '--ref2')
const plc = option(args, '--plc')
const refData = option(args, '--ref-data')
const mailDir = option(args, '--mail-dir')
const vowBin = option(args, '--vow-bin')
const keyFile = option(args, '--key-file')
const benchDir = option(args, '--bench')
if (!vowUrl || !refUrl || !ref2Url || !plc || !refData || !mailDir || !vowBin || !keyFile || !benchDir) {
  console.error('usage: migration-flow.js --vow URL --ref URL --ref2 URL --plc URL --ref-data DIR --mail-dir DIR --vow-bin PATH --key-file PATH --bench DIR')
  process.exit(2)
}
const Database = require(path.join(benchDir, 'node_modules', 'better-sqlite3'))
const { step, run } = steps()

// A 1x1 PNG.
const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000001000000010806000000' +
    '1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082',
  'hex',
)

const plcGet = async (p) => {
  const res = await fetch(`${plc}/${p}`)
  if (!res.ok) throw new Error(`PLC ${p}: ${res.status}`)
  return res.json()
}

/** The reference PDS's mailed PLC token, read from its database (it has no SMTP here). */
function refPlcToken(did) {
  const db = new Database(path.join(refData, 'account.sqlite'), { readonly: true })
  try {
    const row = db.prepare("SELECT token FROM email_token WHERE did = ? AND purpose = 'plc_operation'").get(did)
    check(row, 'the reference PDS stored a PLC token')
    return row.token
  } finally {
    db.close()
  }
}

/** Vow's mailed PLC token, from the newest mail in its mail directory. */
function vowPlcToken(to) {
  const files = fs.readdirSync(mailDir).filter((f) => f.endsWith(`${to}.eml`)).sort()
  check(files.length > 0, `Vow mailed ${to}`)
  const text = fs.readFileSync(path.join(mailDir, files[files.length - 1]), 'utf8')
  const m = text.match(/\b([A-Z2-7]{5}-[A-Z2-7]{5})\b/)
  check(m, 'the mail holds a token')
  return m[1]
}

/** Starts `vow signer` for the account; resolves once it is connected. */
function startSigner(identifier, password) {
  const child = spawn(
    vowBin,
    ['signer', '--pds', vowUrl, '--identifier', identifier, '--password', password, '--key-file', keyFile,
      '--plc', plc, '--approve-identity'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VOW_LOG_LEVEL: 'warn' } },
  )
  const said = []
  child.stderr.on('data', (d) => said.push(String(d)))
  return new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes('signer connected')) resolve({ child, said })
    })
    child.on('exit', (code) => reject(new Error(`vow signer exited (${code}): ${said.join('')}`)))
  })
}

/** Every event of Vow's firehose from the start, until `until(events)` holds. */
function firehoseUntil(until) {
  const ws = new WebSocket(`${vowUrl.replace(/^http/, 'ws')}/xrpc/com.atproto.sync.subscribeRepos?cursor=0`)
  const events = []
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.close()
      reject(new Error(`firehose: saw ${JSON.stringify(events)}`))
    }, 60000)
    ws.on('message', (data) => {
      // Each frame is two DAG-CBOR values: the header ({op, t}) and the body. The header's
      // type is all this needs: read `t` from the header's text.
      const head = Buffer.from(data).subarray(0, 64).toString('latin1')
      const t = (head.match(/#(commit|sync|identity|account|info)/) || [])[0]
      events.push(t)
      if (until(events)) {
        clearTimeout(timer)
        ws.close()
        resolve(events)
      }
    })
    ws.on('error', reject)
  })
}

async function allRecords(agent, did) {
  const out = []
  for (const collection of (await agent.com.atproto.repo.describeRepo({ repo: did })).data.collections) {
    let cursor
    do {
      const page = (await agent.com.atproto.repo.listRecords({ repo: did, collection, limit: 100, cursor })).data
      out.push(...page.records.map((r) => `${r.uri.split('/').slice(3).join('/')} ${r.cid}`))
      cursor = page.cursor
    } while (cursor)
  }
  return out.sort()
}

/** Copies every blob `to` lacks from `from`. */
async function copyBlobs(from, to, did) {
  let copied = 0
  for (;;) {
    const missing = (await to.com.atproto.repo.listMissingBlobs({ limit: 100 })).data.blobs
    if (missing.length === 0) return copied
    for (const { cid } of missing) {
      const blob = await from.com.atproto.sync.getBlob({ did, cid })
      await to.com.atproto.repo.uploadBlob(new Uint8Array(blob.data), { encoding: blob.headers['content-type'] })
      copied++
    }
  }
}

async function main() {
  const ref = new AtpAgent({ service: refUrl })
  const vow = new AtpAgent({ service: vowUrl })
  const password = 'moving-day-password'
  let did
  const before = await step('an account on the reference PDS: posts, a profile with an avatar', async () => {
    await ref.createAccount({ handle: 'mover.test', email: 'mover@x.test', password })
    did = ref.session.did
    const avatar = (await ref.uploadBlob(PNG, { encoding: 'image/png' })).data.blob
    await ref.com.atproto.repo.putRecord({
      repo: did,
      collection: 'app.bsky.actor.profile',
      rkey: 'self',
      record: { $type: 'app.bsky.actor.profile', displayName: 'Mover', avatar },
    })
    for (let i = 0; i < 5; i++) await ref.post({ text: `post ${i} before the move`, createdAt: new Date().toISOString() })
    return allRecords(ref, did)
  })

  await step('Vow creates the account, deactivated, with a service token the old PDS signed', async () => {
    const vowDid = (await vow.com.atproto.server.describeServer()).data.did
    const token = (await ref.com.atproto.server.getServiceAuth({ aud: vowDid, lxm: 'com.atproto.server.createAccount' }))
      .data.token
    await vow.com.atproto.server.createAccount(
      { did, handle: 'mover.pds.test', email: 'mover@x.test', password },
      { headers: { authorization: `Bearer ${token}` }, encoding: 'application/json' },
    )
    await vow.login({ identifier: 'mover.pds.test', password })
    const status = (await vow.com.atproto.server.checkAccountStatus()).data
    check(status.activated === false, 'the account starts deactivated')
  })

  await step('importRepo: the old repo, then every blob', async () => {
    const car = new Uint8Array((await ref.com.atproto.sync.getRepo({ did })).data)
    await vow.com.atproto.repo.importRepo(car, { encoding: 'application/vnd.ipld.car' })
    const status = (await vow.com.atproto.server.checkAccountStatus()).data
    check(status.indexedRecords === before.length, `${status.indexedRecords} records indexed`)
    check(status.expectedBlobs === 1 && status.importedBlobs === 0, 'one blob expected, none yet')
    check((await copyBlobs(ref, vow, did)) === 1, 'the avatar copied')
    const after = (await vow.com.atproto.server.checkAccountStatus()).data
    check(after.importedBlobs === 1, 'the blob counted')
  })

  let signer
  await step('the user key: registered by vow signer, before the identity moves', async () => {
    signer = await startSigner('mover.pds.test', password)
  })

  let recommended
  await step('the old PDS signs the operation Vow recommends; Vow submits it and activates', async () => {
    recommended = (await vow.com.atproto.identity.getRecommendedDidCredentials()).data
    check(recommended.rotationKeys.length === 1, 'one rotation key recommended')
    check(recommended.rotationKeys[0] === recommended.verificationMethods.atproto, "it is the user's own key")
    await ref.com.atproto.identity.requestPlcOperationSignature()
    const op = (
      await ref.com.atproto.identity.signPlcOperation({ token: refPlcToken(did), ...recommended })
    ).data.operation
    await vow.com.atproto.identity.submitPlcOperation({ operation: op })
    await vow.com.atproto.server.activateAccount()
    await ref.com.atproto.server.deactivateAccount({})
  })

  await step("the PLC audit log: the user's key is the only rotation key", async () => {
    const audit = await plcGet(`${did}/log/audit`)
    const last = audit[audit.length - 1].operation
    check(JSON.stringify(last.rotationKeys) === JSON.stringify(recommended.rotationKeys), 'rotation keys: the user key alone')
    check(last.services.atproto_pds.endpoint === recommended.services.atproto_pds.endpoint, 'the PDS is Vow')
  })

  await step("Vow's firehose: #identity, #account, #sync", async () => {
    const seen = await firehoseUntil((e) => e.includes('#identity') && e.includes('#account') && e.includes('#sync'))
    check(seen.includes('#sync'), `events: ${seen.join(' ')}`)
  })

  await step('on Vow: every record and the blob, and posting works; the repo verifies', async () => {
    const onVow = await allRecords(vow, did)
    check(JSON.stringify(onVow) === JSON.stringify(before), 'the same records, same CIDs')
    await vow.post({ text: 'hello from Vow', createdAt: new Date().toISOString() })
    const key = (await plcGet(`${did}/log/last`)).verificationMethods.atproto
    const car = new Uint8Array((await vow.com.atproto.sync.getRepo({ did })).data)
    const verified = await verifyRepoCar(car, did, key)
    check(verified.creates.length === before.length + 1, `getRepo verifies against ${key}`)
  })

  const onVow = await allRecords(vow, did)
  const back = new AtpAgent({ service: ref2Url })
  const refDid = (await back.com.atproto.server.describeServer()).data.did
  await step('back to the reference PDS: a service token the user signs, a new account there', async () => {
    const token = (
      await vow.com.atproto.server.getServiceAuth({ aud: refDid, lxm: 'com.atproto.server.createAccount' })
    ).data.token
    await back.com.atproto.server.createAccount(
      { did, handle: 'mover.test', email: 'mover@x.test', password },
      { headers: { authorization: `Bearer ${token}` }, encoding: 'application/json' },
    )
    await back.login({ identifier: did, password })
  })

  await step('repo and blobs from Vow', async () => {
    const car = new Uint8Array((await vow.com.atproto.sync.getRepo({ did })).data)
    await back.com.atproto.repo.importRepo(car, { encoding: 'application/vnd.ipld.car' })
    check((await copyBlobs(vow, back, did)) === 1, 'the avatar copied back')
  })

  await step("the user's key signs the PLC operation to the reference PDS; Vow deactivates", async () => {
    const creds = (await back.com.atproto.identity.getRecommendedDidCredentials()).data
    await vow.com.atproto.identity.requestPlcOperationSignature()
    const token = vowPlcToken('mover@x.test')
    // The user keeps their key as the first rotation key, above the new PDS's.
    const rotationKeys = [recommended.rotationKeys[0], ...creds.rotationKeys]
    const op = (await vow.com.atproto.identity.signPlcOperation({ token, ...creds, rotationKeys })).data.operation
    await back.com.atproto.identity.submitPlcOperation({ operation: op })
    await back.com.atproto.server.activateAccount()
    await vow.com.atproto.server.deactivateAccount({})
    const reused = await vow.com.atproto.identity
      .signPlcOperation({ token, ...creds, rotationKeys })
      .then(() => 'accepted', (e) => e.error)
    check(reused === 'InvalidToken', `a used token is refused (${reused})`)
  })

  await step('on the reference PDS: every record and blob; the DID points there', async () => {
    const there = await allRecords(back, did)
    check(JSON.stringify(there) === JSON.stringify(onVow), `the same ${there.length} records`)
    const blobs = (await back.com.atproto.sync.listBlobs({ did })).data.cids
    check(blobs.length === 1, 'the blob is there')
    const last = await plcGet(`${did}/log/last`)
    const port = new URL(ref2Url).port
    check(last.services.atproto_pds.endpoint === `http://localhost:${port}`, `the DID names the new PDS (${last.services.atproto_pds.endpoint})`)
    check(last.rotationKeys[0] === recommended.rotationKeys[0], "the user's key still ranks first")
    const status = (await vow.com.atproto.server.checkAccountStatus()).data
    check(status.activated === false, 'deactivated on Vow')
  })

  signer.child.kill()
  return { did, records: onVow.length }
}

run(main)

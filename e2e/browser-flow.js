#!/usr/bin/env node
// End to end in headless Chromium with a CDP virtual authenticator that supports PRF:
// sign up (@atproto/api), sign in on the account page, register a passkey (the page derives the
// key and the PDS hands the DID over to it), then create, update and delete records through
// @atproto/api while the page signs. Verifies the exported repo with @atproto/repo against the
// key the real PLC returns, and that the PLC lists the user's key as the only rotation key.
// Usage: node browser-flow.js <pdsUrl> --plc <plcUrl> [--chromium /usr/bin/chromium]
const { AtpAgent } = require('@atproto/api')
const { verifyRepoCar } = require('@atproto/repo')
const { verifySignature, Secp256k1Keypair } = require('@atproto/crypto')
const plcLib = require('@did-plc/lib')

const { option, check, steps, launchChromium, addVirtualPasskey } = require('./lib')

const args = process.argv.slice(2)
const opt = (name, dflt) => option(args, name, dflt)
const service = args[0]
const plc = opt('--plc')
if (!service || !plc) {
  console.error('usage: browser-flow.js <pdsUrl> --plc <plcUrl>')
  process.exit(2)
}
const { log, step, run } = steps()

// Appendix D of the behaviour study: PRF output -> did:key.
const VECTORS = [
  ['00'.repeat(32), 'did:key:zQ3shTAwMcX1Fn1brQnoBpZ5RmBrNhDWqLLuvnkEoSs9dfHoJ'],
  ['01'.repeat(32), 'did:key:zQ3shs5AchQhZeUF1xpuD1aVNyFNPWsq2TaMrC8GRodxRCmmX'],
  [[...Array(32).keys()].map((i) => i.toString(16).padStart(2, '0')).join(''), 'did:key:zQ3shs2jSZFGAtCmLe2WzbdtqSTXfPC9vo6ogWuooXPjAw4py'],
]

async function main() {
  const agent = new AtpAgent({ service })
  const desc = (await agent.com.atproto.server.describeServer()).data
  const handle = `b${Date.now().toString(36).slice(-7)}${desc.availableUserDomains[0]}`
  const password = `pw-${Math.random().toString(36).slice(2)}`
  const account = await step('createAccount', async () =>
    (await agent.createAccount({ handle, email: `${handle.split('.')[0]}@example.com`, password })).data)
  const did = account.did

  const { context, page } = await launchChromium(opt('--chromium'))
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`))
  try {
    await step('sign in on the account page', async () => {
      await page.goto(`${service}/account`)
      check(page.url().endsWith('/account/signin'), 'redirected to sign-in')
      await page.fill('input[name=identifier]', handle)
      await page.fill('input[name=password]', 'wrong password')
      await page.click('button[type=submit]')
      check((await page.textContent('[role=alert]')).includes('incorrect'), 'wrong password refused')
      await page.fill('input[name=identifier]', handle)
      await page.fill('input[name=password]', password)
      await page.click('button[type=submit]')
      await page.waitForSelector('body[data-ready="1"]')
      check(page.url().endsWith('/account'), 'on the account page')
    })

    await step('key derivation vectors in the page', async () => {
      for (const [prf, expected] of VECTORS) {
        const got = await page.evaluate((p) => window.vowDeriveDidKey(p), prf)
        check(got === expected, `${prf.slice(0, 8)}… derives ${got}, expected ${expected}`)
      }
    })

    await step('the page stores nothing in web storage', async () => {
      const stored = await page.evaluate(() => localStorage.length + sessionStorage.length)
      check(stored === 0, 'web storage is empty')
    })

    await addVirtualPasskey(context, page)

    const writer = new AtpAgent({ service })
    await writer.login({ identifier: handle, password })
    await step('writes are refused before a key exists', async () => {
      try {
        await writer.com.atproto.repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: { $type: 'app.bsky.feed.post', text: 'early', createdAt: new Date().toISOString() } })
      } catch (err) {
        check(err.error === 'SigningKeyRequired', `error ${err.error}`)
        return
      }
      throw new Error('a write succeeded without a key')
    })

    const signingKey = await step('register a passkey (PRF-derived key, DID handed over)', async () => {
      await page.click('#register')
      await page.waitForFunction(() => document.getElementById('signer-state').textContent.startsWith('Connected'), null, { timeout: 60000 })
      const statusText = await page.textContent('#status')
      const m = statusText.match(/did:key:z[1-9A-HJ-NP-Za-km-z]+/)
      check(m, `status names the key: ${statusText}`)
      return m[0]
    })

    await step('the PLC lists the user key as the only rotation key and as #atproto', async () => {
      const audit = await (await fetch(`${plc}/${did}/log/audit`)).json()
      const last = audit[audit.length - 1].operation
      check(JSON.stringify(last.rotationKeys) === JSON.stringify([signingKey]), `rotationKeys ${JSON.stringify(last.rotationKeys)}`)
      check(last.verificationMethods.atproto === signingKey, 'atproto verification method')
    })

    const post = (text) => ({ $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() })
    const created = await step('createRecord x3 while the page signs', async () => {
      const out = []
      for (let i = 0; i < 3; i++) {
        const r = (await writer.com.atproto.repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: post(`from the browser ${i}`) })).data
        check(r.validationStatus === 'valid', 'validated')
        out.push(r)
      }
      return out
    })
    await step('putRecord (profile) twice: create then update', async () => {
      for (const name of ['Browser User', 'Browser User (edited)']) {
        await writer.com.atproto.repo.putRecord({ repo: did, collection: 'app.bsky.actor.profile', rkey: 'self', record: { $type: 'app.bsky.actor.profile', displayName: name } })
      }
      const r = (await writer.com.atproto.repo.getRecord({ repo: did, collection: 'app.bsky.actor.profile', rkey: 'self' })).data
      check(r.value.displayName === 'Browser User (edited)', 'updated profile')
    })
    await step('deleteRecord', async () => {
      await writer.com.atproto.repo.deleteRecord({ repo: did, collection: 'app.bsky.feed.post', rkey: created[1].uri.split('/').pop() })
      const r = (await writer.com.atproto.repo.listRecords({ repo: did, collection: 'app.bsky.feed.post' })).data
      check(r.records.length === 2, `2 posts left, got ${r.records.length}`)
    })
    await step('the page signs service tokens: read tokens in advance, and on demand', async () => {
      // The read tokens (for when no signer is open) are signed right after the page connects.
      let status
      for (let i = 0; i < 600; i++) {
        const res = await fetch(`${service}/xrpc/app.vow.signer.getStatus`, { headers: { authorization: `Bearer ${writer.session.accessJwt}` } })
        status = await res.json()
        if (status.readTokens.stored > 0 && status.readTokens.stored === status.readTokens.methods) break
        await new Promise((r) => setTimeout(r, 100))
      }
      check(status.readTokens.stored === status.readTokens.methods, `read tokens signed: ${JSON.stringify(status.readTokens)}`)
      const { token } = (await writer.com.atproto.server.getServiceAuth({ aud: 'did:web:api.bsky.app', lxm: 'app.bsky.feed.getTimeline' })).data
      const [h, c, sig] = token.split('.')
      const claims = JSON.parse(Buffer.from(c, 'base64url'))
      check(claims.iss === did && claims.aud === 'did:web:api.bsky.app' && claims.lxm === 'app.bsky.feed.getTimeline', 'claims')
      const ok = await verifySignature(signingKey, Buffer.from(`${h}.${c}`), Buffer.from(sig, 'base64url'))
      check(ok, "the token verifies against the page's key")
    })
    await step('the page logged what it signed', async () => {
      const all = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent))
      check(all.some((e) => e.includes('a token for app.bsky.feed.getTimeline at did:web:api.bsky.app')), 'tokens logged')
      const entries = all.filter((e) => !e.includes('a token for'))
      // Six writes, and first the head re-signed with the new key (the genesis commit was signed
      // by the PDS key), announced as #sync.
      check(entries.length === 7, `7 signatures logged, got ${entries.length}`)
      check(entries.some((e) => e.includes('signed the same records at revision')), 're-signed head logged')
      // Each line says what was signed, from the verified records themselves.
      check(entries.some((e) => /signed create app\.bsky\.feed\.post\/\w+: "/.test(e)), `a post's text logged: ${entries.join(' | ')}`)
      check(entries.some((e) => e.includes('delete app.bsky.feed.post')), 'delete logged')
    })

    await step('getRepo verifies with @atproto/repo against the key from the PLC', async () => {
      const doc = await (await fetch(`${plc}/${did}`)).json()
      check(doc.service[0].serviceEndpoint, 'DID document resolves')
      const car = new Uint8Array((await writer.com.atproto.sync.getRepo({ did })).data)
      const verified = await verifyRepoCar(car, did, signingKey)
      const paths = verified.creates.map((c) => `${c.collection}/${c.rkey}`).sort()
      check(paths.length === 3, `3 records in the repo, got ${paths.join(', ')}`)
      check(paths.includes('app.bsky.actor.profile/self'), 'profile present')
      let rejected = false
      try {
        await verifyRepoCar(car, did, 'did:key:zQ3shTAwMcX1Fn1brQnoBpZ5RmBrNhDWqLLuvnkEoSs9dfHoJ')
      } catch {
        rejected = true
      }
      check(rejected, 'verification with another key fails')
    })

    await step('after a reload the page must be unlocked again (no key kept)', async () => {
      await page.reload()
      await page.waitForSelector('body[data-ready="1"]')
      check((await page.textContent('#signer-state')) === 'Locked', 'locked after reload')
      await page.click('#unlock')
      await page.waitForFunction(() => document.getElementById('signer-state').textContent.startsWith('Connected'), null, { timeout: 60000 })
      const r = (await writer.com.atproto.repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: post('after unlock') })).data
      check(r.uri.startsWith(`at://${did}/`), 'write after unlock')
    })

    await step('replace the passkey: the change is signed by the current key in the tab', async () => {
      // Identity changes always ask, spelling out the change; removing the tab's own key asks
      // a second time.
      const dialogs = []
      const accept = (d) => {
        dialogs.push(d.message())
        d.accept()
      }
      page.on('dialog', accept)
      await page.click('#replace')
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Passkey replaced'), null, { timeout: 60000 })
      page.off('dialog', accept)
      check(dialogs.length === 2, `two confirmations, got ${JSON.stringify(dialogs)}`)
      check(dialogs[0].includes('changes who controls') && dialogs[0].includes(`signing key: ${signingKey} →`), `the change is shown: ${dialogs[0]}`)
      check(dialogs[1].includes('can no longer change or recover'), `the loss of the key is named: ${dialogs[1]}`)
      const newKey = (await page.textContent('#status')).match(/did:key:z[1-9A-HJ-NP-Za-km-z]+/)[0]
      check(newKey !== signingKey, 'a new credential derives a new key')
      const audit = await (await fetch(`${plc}/${did}/log/audit`)).json()
      const last = audit[audit.length - 1].operation
      check(JSON.stringify(last.rotationKeys) === JSON.stringify([newKey]), `rotationKeys ${JSON.stringify(last.rotationKeys)}`)
      check(last.verificationMethods.atproto === newKey, 'atproto key replaced')
      await writer.com.atproto.repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: post('signed by the new key') })
      const car = new Uint8Array((await writer.com.atproto.sync.getRepo({ did })).data)
      await verifyRepoCar(car, did, newKey)
      const entries = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent))
      check(entries.some((e) => e.includes('signed PLC operation: rotation keys:')), 'the key change was logged as signed')
    })

    await step('the leave page moves the DID with the passkey alone, talking only to the PLC, and back', async () => {
      await page.reload()
      await page.waitForSelector('body[data-ready="1"]')
      const href = await page.getAttribute('#leave-link', 'href')
      check(href.includes(`did=${did}`) && href.includes('credential='), `the account page links to it: ${href}`)
      await page.goto(`${service}${href}`)
      await page.waitForSelector('body[data-ready="1"]')
      const endpoint = async () => (await (await fetch(`${plc}/${did}/log/last`)).json()).services.atproto_pds.endpoint
      const move = async (to) => {
        await page.fill('#pds', to)
        await page.click('#prepare')
        await page.waitForSelector('#confirm:not([hidden])', { timeout: 60000 })
        const lines = await page.$$eval('#changes li', (lis) => lis.map((li) => li.textContent))
        check(lines.length === 1 && lines[0].startsWith('PDS: ') && lines[0].endsWith(`→ ${to}`), `the change is shown: ${lines}`)
        await page.click('#send')
        await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Done'), null, { timeout: 60000 })
        check((await endpoint()) === to, `the PLC names ${to}`)
      }
      const home = await endpoint()
      // The page recomputes the CID of the operation it builds on (a directory that lies about
      // the current state is caught): the same computation agrees with the real directory, and
      // catches a changed operation.
      const { cidFor, encodeCbor } = await import(require('url').pathToFileURL(require('path').join(__dirname, '../crates/vow/assets/verify.js')))
      const audit = await (await fetch(`${plc}/${did}/log/audit`)).json()
      const lastEntry = audit[audit.length - 1]
      check((await cidFor(encodeCbor(lastEntry.operation), 0x71)).toString() === lastEntry.cid, 'the CID check agrees with the PLC directory')
      const forged = { ...lastEntry.operation, rotationKeys: ['did:key:zQ3shTAwMcX1Fn1brQnoBpZ5RmBrNhDWqLLuvnkEoSs9dfHoJ'] }
      check((await cidFor(encodeCbor(forged), 0x71)).toString() !== lastEntry.cid, 'a forged state does not pass it')
      await move('https://elsewhere.example')
      await move(home)
      // A key that is not a rotation key is refused before anything is signed.
      await page.check('#use-secret')
      await page.fill('#secret', '11'.repeat(32))
      await page.fill('#pds', 'https://elsewhere.example')
      await page.click('#prepare')
      await page.waitForFunction(() => document.getElementById('status').textContent.includes('is not a rotation key'), null, { timeout: 60000 })
      check((await endpoint()) === home, 'nothing changed')
      await page.goto(`${service}/account`)
      await page.waitForSelector('body[data-ready="1"]')
      await page.click('#unlock')
      await page.waitForFunction(() => document.getElementById('signer-state').textContent.startsWith('Connected'), null, { timeout: 60000 })
    })

    await step('a recovery key: made in the page, shown once, added above the passkey key by the tab', async () => {
      const newKey = await page.textContent('#signing-key')
      await page.waitForFunction(() => document.getElementById('recovery-state').textContent.includes('no recovery key'), null, { timeout: 60000 })
      await page.click('#recovery-create')
      const secret = await page.textContent('#recovery-secret')
      const recoveryDid = await page.textContent('#recovery-did')
      check(/^[0-9a-f]{64}$/.test(secret), 'a 32-byte secret is shown')
      const recoveryKey = await Secp256k1Keypair.import(secret)
      check(recoveryKey.did() === recoveryDid, 'the secret shown is the key named')
      check(await page.isDisabled('#recovery-add'), 'adding waits until the person says the key is saved')
      const dialogs = []
      const accept = (d) => {
        dialogs.push(d.message())
        d.accept()
      }
      page.on('dialog', accept)
      await page.check('#recovery-saved')
      await page.click('#recovery-add')
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Recovery key added'), null, { timeout: 60000 })
      page.off('dialog', accept)
      check(dialogs.length === 1 && dialogs[0].includes('changes who controls') && dialogs[0].includes(recoveryDid), `the change is shown: ${JSON.stringify(dialogs)}`)
      check((await page.textContent('#recovery-secret')) === '', 'the secret is gone from the page')
      await page.waitForFunction(() => document.getElementById('recovery-state').textContent.includes('has a recovery key'), null, { timeout: 60000 })
      const last = await (await fetch(`${plc}/${did}/log/last`)).json()
      check(JSON.stringify(last.rotationKeys) === JSON.stringify([recoveryDid, newKey]), `rotationKeys ${JSON.stringify(last.rotationKeys)}`)
      await writer.com.atproto.repo.createRecord({ repo: did, collection: 'app.bsky.feed.post', record: post('with a recovery key') })

      // The recovery key alone, as after a lost passkey, installs another key: the PLC accepts it.
      const replacement = await Secp256k1Keypair.create()
      const client = new plcLib.Client(plc)
      const op = await plcLib.createUpdateOp(await client.getLastOp(did), recoveryKey, (n) => ({
        ...n,
        rotationKeys: [recoveryDid, replacement.did()],
        verificationMethods: { ...n.verificationMethods, atproto: replacement.did() },
      }))
      await client.sendOperation(did, op)
      const after = await (await fetch(`${plc}/${did}/log/last`)).json()
      check(after.verificationMethods.atproto === replacement.did(), 'the recovery key installed a new key')
    })
  } finally {
    await context.close()
  }
  return { did, handle }
}

run(main)

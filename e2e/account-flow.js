#!/usr/bin/env node
// Sign-up and login through @atproto/api (AtpAgent), the way an ATProto app does it, then checks
// that the new DID resolves on the PLC directory to this PDS.
// Usage: node account-flow.js <pdsUrl> --plc <plcUrl> [--invite CODE]
// Exits non-zero on the first failed step; prints one line per step and a JSON summary.
const { AtpAgent } = require('@atproto/api')

const { option, check, steps } = require('./lib')

const args = process.argv.slice(2)
const opt = (name) => option(args, name)
const service = args[0]
const plc = opt('--plc')
if (!service || !plc) {
  console.error('usage: account-flow.js <pdsUrl> --plc <plcUrl> [--invite CODE]')
  process.exit(2)
}
const { step, run } = steps()

async function main() {
  const agent = new AtpAgent({ service })
  const desc = await step('describeServer', async () => (await agent.com.atproto.server.describeServer()).data)
  check(Array.isArray(desc.availableUserDomains) && desc.availableUserDomains.length > 0, 'user domains listed')
  const domain = desc.availableUserDomains[0]
  const handle = `u${Date.now().toString(36).slice(-8)}${domain}`
  const password = `pw-${Math.random().toString(36).slice(2)}`
  const email = `${handle.split('.')[0]}@example.com`

  const created = await step('createAccount', async () =>
    (await agent.createAccount({ handle, email, password, inviteCode: opt('--invite') })).data)
  check(created.did.startsWith('did:plc:'), 'a did:plc was created')
  check(created.handle === handle, 'handle echoed')
  check(agent.session && agent.session.did === created.did, 'agent holds the new session')

  const user = new AtpAgent({ service })
  await step('login', () => user.login({ identifier: handle, password }))
  await step('getSession', async () => {
    const s = (await user.com.atproto.server.getSession()).data
    check(s.did === created.did && s.handle === handle, 'session names the account')
  })
  await step('refreshSession', async () => {
    const before = user.session.refreshJwt
    await user.sessionManager.refreshSession()
    check(user.session.refreshJwt && user.session.refreshJwt !== before, 'refresh token rotated')
    const s = (await user.com.atproto.server.getSession()).data
    check(s.did === created.did, 'new access token works')
  })
  await step('describeRepo', async () => {
    const r = (await user.com.atproto.repo.describeRepo({ repo: created.did })).data
    check(r.did === created.did && r.handle === handle && r.handleIsCorrect === true, 'describeRepo fields')
    check(Array.isArray(r.collections) && r.collections.length === 0, 'new repo has no collections')
  })
  await step('listRecords', async () => {
    const r = (await user.com.atproto.repo.listRecords({ repo: created.did, collection: 'app.bsky.feed.post' })).data
    check(Array.isArray(r.records) && r.records.length === 0, 'no records yet')
  })
  await step('resolveHandle', async () => {
    const r = (await user.com.atproto.identity.resolveHandle({ handle })).data
    check(r.did === created.did, 'handle resolves to the DID')
  })
  await step('DID resolves on the PLC to this PDS', async () => {
    const res = await fetch(`${plc}/${created.did}`)
    check(res.ok, `PLC answered ${res.status}`)
    const doc = await res.json()
    check(doc.id === created.did, 'document id')
    check(doc.alsoKnownAs.includes(`at://${handle}`), 'alsoKnownAs has the handle')
    const pds = doc.service.find((s) => s.id === '#atproto_pds')
    check(pds && pds.type === 'AtprotoPersonalDataServer', 'PDS service entry')
    const expected = opt('--public-url') || service
    check(pds.serviceEndpoint === expected, `service endpoint ${pds.serviceEndpoint} is ${expected}`)
  })
  await step('wrong password is refused', async () => {
    const other = new AtpAgent({ service })
    try {
      await other.login({ identifier: handle, password: 'not-the-password' })
    } catch (err) {
      check(err.error === 'AuthenticationRequired', `error name ${err.error}`)
      return
    }
    throw new Error('login with a wrong password succeeded')
  })
  return { did: created.did, handle }
}

run(main)

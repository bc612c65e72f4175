#!/usr/bin/env node
// An app signs in to Vow with ATProto OAuth (@atproto/oauth-client-node, a loopback client) and
// uses its session: discovery, PAR with DPoP, the authorize page in headless Chromium (sign in,
// consent), the code exchange, then records created, read and deleted through the DPoP-bound
// session while `vow signer` signs the commits; refresh with rotation and reuse detection;
// revocation. Negative cases check what the server refuses.
//
// A confidential web client (private_key_jwt) serves its metadata and keys over HTTPS from
// --app-host (the test's DNS points it at 127.0.0.1; its certificate is signed by a CA Vow trusts).
//
//   node oauth-flow.mjs <publicUrl> --plc URL --handle H --password P --passkey-handle H2
//        --passkey-password P2 --app-host NAME --tls-cert PEM --tls-key PEM [--chromium PATH]
import { NodeOAuthClient, JoseKey, requestLocalLock } from '@atproto/oauth-client-node'
import https from 'node:https'
import { Agent } from '@atproto/api'
import { chromium } from 'playwright-core'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const service = args[0]
const plc = opt('--plc')
const handle = opt('--handle')
const password = opt('--password')
const log = []
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`)
}
async function step(name, fn) {
  const started = performance.now()
  try {
    const out = await fn()
    log.push(`ok   ${name} (${(performance.now() - started).toFixed(0)} ms)`)
    return out
  } catch (err) {
    log.push(`FAIL ${name}: ${err && err.message}`)
    throw err
  }
}

/** A DPoP proof signed with the session's own key (a private JWK), for hand-made requests. */
async function dpopProof(jwk, htm, htu, extra = {}) {
  const key = await crypto.subtle.importKey('jwk', { ...jwk, key_ops: ['sign'] }, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign'])
  const { kty, crv, x, y } = jwk
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } }
  const payload = { jti: crypto.randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000), ...extra }
  const input = `${b64(header)}.${b64(payload)}`
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, new TextEncoder().encode(input))
  return `${input}.${Buffer.from(sig).toString('base64url')}`
}

const ath = async (token) => Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token))).toString('base64url')

const memory = () => {
  const m = new Map()
  return { set: async (k, v) => void m.set(k, v), get: async (k) => m.get(k), del: async (k) => void m.delete(k), m }
}

/** Opens an authorize URL in a fresh Chromium, signs in with the password, allows; returns the
 * URL the browser was sent back to (the app's redirect, intercepted). */
async function signInAndAllow(url, who, pw, appOrigin = 'http://127.0.0.1:9') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vow-oauth-'))
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: opt('--chromium', '/usr/bin/chromium'),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu'],
  })
  const page = context.pages()[0] || (await context.newPage())
  let landed
  await page.route(`${appOrigin}/**`, (route) => {
    landed = route.request().url()
    return route.fulfill({ status: 200, body: 'back in the app' })
  })
  try {
    await page.goto(url.toString())
    await page.fill('input[name=identifier]', who)
    await page.fill('input[name=password]', pw)
    await page.click('button[type=submit]')
    // A consent already given is not asked again: the browser goes straight back to the app.
    await page.waitForFunction(() => document.getElementById('allow') || document.body.textContent.includes('back in the app'))
    let consent = null
    if (await page.$('#allow')) {
      consent = await page.textContent('main')
      await page.click('#allow')
      await page.waitForFunction(() => document.body.textContent.includes('back in the app'))
    }
    return { landed, consent }
  } finally {
    await context.close()
  }
}

function makeClient(scope) {
  const redirect = 'http://127.0.0.1:9/callback'
  const clientId = `http://localhost?redirect_uri=${encodeURIComponent(redirect)}&scope=${encodeURIComponent(scope)}`
  const sessions = memory()
  return {
    sessions,
    clientId,
    client: new NodeOAuthClient({
      clientMetadata: {
        client_id: clientId, redirect_uris: [redirect], scope, grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'], token_endpoint_auth_method: 'none', application_type: 'native', dpop_bound_access_tokens: true,
      },
      stateStore: memory(), sessionStore: sessions, handleResolver: service, plcDirectoryUrl: plc, allowHttp: true,
      fetch: globalThis.fetch, requestLock: requestLocalLock,
    }),
  }
}

async function main() {
  const redirect = 'http://127.0.0.1:9/callback'
  const scope = 'atproto transition:generic'
  const clientId = `http://localhost?redirect_uri=${encodeURIComponent(redirect)}&scope=${encodeURIComponent(scope)}`
  const sessions = memory()
  const client = new NodeOAuthClient({
    clientMetadata: {
      client_id: clientId,
      redirect_uris: [redirect],
      scope,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      dpop_bound_access_tokens: true,
    },
    stateStore: memory(),
    sessionStore: sessions,
    handleResolver: service,
    plcDirectoryUrl: plc,
    allowHttp: true,
    fetch: globalThis.fetch,
    requestLock: requestLocalLock,
  })

  const meta = await step('discovery: the protected resource names Vow as its authorization server', async () => {
    const res = await (await fetch(`${service}/.well-known/oauth-protected-resource`)).json()
    check(res.authorization_servers[0] === service, JSON.stringify(res))
    const as = await (await fetch(`${service}/.well-known/oauth-authorization-server`)).json()
    check(as.require_pushed_authorization_requests === true && as.dpop_signing_alg_values_supported[0] === 'ES256', 'PAR and DPoP')
    return as
  })

  await step('PAR without a DPoP proof is refused', async () => {
    const res = await fetch(meta.pushed_authorization_request_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: redirect, scope, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' }),
    })
    const body = await res.json()
    check(res.status === 400 && body.error === 'invalid_dpop_proof', `${res.status} ${JSON.stringify(body)}`)
  })

  let did
  const session = await step('authorize: the client pushes the request; the page signs in and asks; the code is exchanged', async () => {
    const url = await client.authorize(handle, { scope })
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vow-oauth-'))
    const context = await chromium.launchPersistentContext(dir, {
      executablePath: opt('--chromium', '/usr/bin/chromium'),
      headless: true,
      args: ['--no-sandbox', '--disable-gpu'],
    })
    const page = context.pages()[0] || (await context.newPage())
    let landed
    await page.route('http://127.0.0.1:9/**', (route) => {
      landed = route.request().url()
      return route.fulfill({ status: 200, body: 'back in the app' })
    })
    try {
      await page.goto(url.toString())
      await page.fill('input[name=identifier]', handle)
      await page.fill('input[name=password]', password)
      await page.click('button[type=submit]')
      await page.waitForSelector('#allow')
      const consent = await page.textContent('main')
      check(consent.includes('read and write your posts') && consent.includes(handle), `the consent names what and whom: ${consent}`)
      await page.click('#allow')
      await page.waitForFunction(() => document.body.textContent.includes('back in the app'))
    } finally {
      await context.close()
    }
    const params = new URL(landed).searchParams
    check(params.get('iss') === service, `iss in the response: ${landed}`)
    const { session } = await client.callback(params)
    did = session.did
    return session
  })

  const agent = new Agent(session)
  await step('the OAuth session writes, reads and deletes records (vow signer signs)', async () => {
    const created = await agent.com.atproto.repo.createRecord({
      repo: did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: 'posted through OAuth', createdAt: new Date().toISOString() },
    })
    const rkey = created.data.uri.split('/').pop()
    const got = await agent.com.atproto.repo.getRecord({ repo: did, collection: 'app.bsky.feed.post', rkey })
    check(got.data.value.text === 'posted through OAuth', 'read back')
    await agent.com.atproto.repo.deleteRecord({ repo: did, collection: 'app.bsky.feed.post', rkey })
    // transition:generic is not an identity or account grant.
    const rename = await agent.com.atproto.identity.updateHandle({ handle: 'renamed.localhost' }).then(() => 'accepted', (e) => `${e.status} ${e.error}`)
    check(rename === '403 ScopeMissingError', `a handle change needs identity:handle: ${rename}`)
    const status = await agent.com.atproto.server.checkAccountStatus().then(() => 'accepted', (e) => `${e.status} ${e.error}`)
    check(status === '403 ScopeMissingError', `account management is not for apps: ${status}`)
  })

  await step('DPoP is enforced: no proof, a bearer token, another URL or method, a replayed jti, a stale nonce', async () => {
    const stored = await sessions.get(did)
    const token = stored.tokenSet.access_token
    const url = `${service}/xrpc/com.atproto.server.getSession`
    const call = (headers) => fetch(url, { headers: { authorization: `DPoP ${token}`, ...headers } })
    check((await call({})).status === 401, 'no proof')
    const bearer = await fetch(url, { headers: { authorization: `Bearer ${token}` } })
    check(bearer.status >= 400, `as a bearer: ${bearer.status}`)
    const nonce = (await fetch(`${service}/xrpc/_health`)).headers.get('dpop-nonce')
    check(nonce, 'every response carries a nonce')
    const a = await ath(token)
    const good = await dpopProof(stored.dpopJwk, 'GET', url, { nonce, ath: a })
    const first = await call({ dpop: good })
    check(first.status === 200, `a good proof: ${first.status} ${await first.text()}`)
    const again = await call({ dpop: good })
    check(again.status === 401, `the same proof again (jti replay): ${again.status}`)
    const elsewhere = await call({ dpop: await dpopProof(stored.dpopJwk, 'GET', `${service}/xrpc/com.atproto.repo.listRecords`, { nonce, ath: a }) })
    check(elsewhere.status === 401, `a proof for another URL: ${elsewhere.status}`)
    const posted = await call({ dpop: await dpopProof(stored.dpopJwk, 'POST', url, { nonce, ath: a }) })
    check(posted.status === 401, `a proof for another method: ${posted.status}`)
    const stale = await call({ dpop: await dpopProof(stored.dpopJwk, 'GET', url, { nonce: 'not-a-nonce', ath: a }) })
    const staleBody = await stale.json()
    check(stale.status === 401 && staleBody.error === 'use_dpop_nonce' && (stale.headers.get('www-authenticate') || '').includes('use_dpop_nonce'), `a stale nonce: ${stale.status} ${JSON.stringify(staleBody)}`)
    const otherToken = await call({ dpop: await dpopProof(stored.dpopJwk, 'GET', url, { nonce, ath: await ath('another token') }) })
    check(otherToken.status === 401, `a proof for another token: ${otherToken.status}`)
  })

  await step('refresh rotates the refresh token; reusing the old one ends the session', async () => {
    const before = (await sessions.get(did)).tokenSet.refresh_token
    await session.getTokenInfo(true)
    const after = (await sessions.get(did)).tokenSet.refresh_token
    check(after && after !== before, 'a new refresh token')
    const res = await agent.com.atproto.server.getSession()
    check(res.data.did === did, 'the refreshed session works')
    // Replaying the old refresh token (as a thief with the key would) is refused and ends the
    // whole session.
    const stored = await sessions.get(did)
    const nonce = (await fetch(`${service}/xrpc/_health`)).headers.get('dpop-nonce')
    const replay = await fetch(meta.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await dpopProof(stored.dpopJwk, 'POST', meta.token_endpoint, { nonce }) },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: before, client_id: clientId }),
    })
    const body = await replay.json()
    check(replay.status === 400 && body.error === 'invalid_grant', `the old refresh token: ${replay.status} ${JSON.stringify(body)}`)
    const url = `${service}/xrpc/com.atproto.server.getSession`
    const token = stored.tokenSet.access_token
    const ended = await fetch(url, { headers: { authorization: `DPoP ${token}`, dpop: await dpopProof(stored.dpopJwk, 'GET', url, { nonce, ath: await ath(token) }) } })
    check(ended.status >= 400, `the session ended with the reuse: ${ended.status}`)
  })

  await step('another authorization asks who is signing in; revoking an unknown token is not an error', async () => {
    const url = await client.authorize(handle, { scope })
    const res = await fetch(url, { redirect: 'manual' })
    // No cookie here: the page asks to sign in again, but the consent is remembered.
    check(res.status === 200 && (await res.text()).includes('Sign in'), 'the page asks who you are')
    const revoked = await fetch(meta.revocation_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: 'unknown.token', client_id: clientId }),
    })
    check(revoked.status === 200, 'revoking an unknown token is not an error')
  })

  await step('passkey sign-in on the authorize page: one touch, no password typed', async () => {
    const pkHandle = opt('--passkey-handle')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vow-oauth-pk-'))
    const context = await chromium.launchPersistentContext(dir, {
      executablePath: opt('--chromium', '/usr/bin/chromium'),
      headless: true,
      args: ['--no-sandbox', '--disable-gpu'],
    })
    const page = context.pages()[0] || (await context.newPage())
    const cdp = await context.newCDPSession(page)
    await cdp.send('WebAuthn.enable', { enableUI: false })
    await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, hasPrf: true, automaticPresenceSimulation: true },
    })
    let landed
    await page.route('http://127.0.0.1:9/**', (route) => {
      landed = route.request().url()
      return route.fulfill({ status: 200, body: 'back in the app' })
    })
    try {
      // The account registers its passkey on its own page first, then signs out.
      await page.goto(`${service}/account/signin`)
      await page.fill('input[name=identifier]', pkHandle)
      await page.fill('input[name=password]', opt('--passkey-password'))
      await page.click('button[type=submit]')
      await page.waitForSelector('body[data-ready="1"]')
      await page.click('#register')
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Passkey registered'), null, { timeout: 60000 })
      await context.clearCookies()
      const url = await client.authorize(pkHandle, { scope })
      await page.goto(url.toString())
      await page.waitForSelector('body[data-ready="1"]')
      await page.click('#passkey-signin')
      await page.waitForSelector('#allow', { timeout: 60000 })
      check((await page.textContent('main')).includes(pkHandle), 'the consent names the passkey account')
      await page.click('#allow')
      await page.waitForFunction(() => document.body.textContent.includes('back in the app'))
    } finally {
      await context.close()
    }
    const { session } = await client.callback(new URL(landed).searchParams)
    const who = await new Agent(session).com.atproto.server.getSession()
    check(who.data.handle === pkHandle, `signed in as ${who.data.handle}`)
  })

  await step('by hand: redirect URI, client ID, PKCE verifier and code reuse are checked', async () => {
    const { clientId } = makeClient('atproto transition:generic')
    const key = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign'])
    const jwk = await crypto.subtle.exportKey('jwk', key.privateKey)
    const nonce = async () => (await fetch(`${service}/xrpc/_health`)).headers.get('dpop-nonce')
    const form = async (url, body) => {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await dpopProof(jwk, 'POST', url, { nonce: await nonce() }) },
        body: new URLSearchParams(body),
      })
      return { status: res.status, body: await res.json() }
    }
    const verifier = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url')
    const challenge = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))).toString('base64url')
    const par = (over = {}) =>
      form(meta.pushed_authorization_request_endpoint, {
        client_id: clientId, response_type: 'code', redirect_uri: 'http://127.0.0.1:9/callback', scope: 'atproto transition:generic',
        state: 's-1', code_challenge: challenge, code_challenge_method: 'S256', ...over,
      })
    const wrongRedirect = await par({ redirect_uri: 'http://127.0.0.1:9/elsewhere' })
    check(wrongRedirect.status === 400 && wrongRedirect.body.error === 'invalid_request', `another redirect: ${JSON.stringify(wrongRedirect)}`)
    const privateClient = await par({ client_id: 'https://127.0.0.1/client-metadata.json' })
    check(privateClient.status === 400 && privateClient.body.error === 'invalid_client', `an IP-address client: ${JSON.stringify(privateClient)}`)
    const noPkce = await par({ code_challenge: '' })
    check(noPkce.status === 400, `no PKCE: ${JSON.stringify(noPkce)}`)
    const huge = await par({ state: 'x'.repeat(2000) })
    check(huge.status === 400 && huge.body.error === 'invalid_request', `a 2 KB state: ${JSON.stringify(huge)}`)
    const approve = async () => {
      const pushed = await par()
      check(pushed.status === 201, `PAR: ${JSON.stringify(pushed)}`)
      const url = `${meta.authorization_endpoint}?client_id=${encodeURIComponent(clientId)}&request_uri=${encodeURIComponent(pushed.body.request_uri)}`
      const { landed, consent } = await signInAndAllow(url, handle, password)
      check(consent === null, 'the consent given before is remembered')
      const params = new URL(landed).searchParams
      check(params.get('state') === 's-1' && params.get('iss') === service, `state and iss: ${landed}`)
      return params.get('code')
    }
    const token = (code, codeVerifier) =>
      form(meta.token_endpoint, { grant_type: 'authorization_code', client_id: clientId, code, redirect_uri: 'http://127.0.0.1:9/callback', code_verifier: codeVerifier })
    const first = await approve()
    const wrong = await token(first, 'x'.repeat(43))
    check(wrong.status === 400 && wrong.body.error === 'invalid_grant', `a wrong verifier: ${JSON.stringify(wrong)}`)
    const second = await approve()
    const good = await token(second, verifier)
    check(good.status === 200 && good.body.token_type === 'DPoP' && good.body.sub === did, `the exchange: ${JSON.stringify(good)}`)
    const reused = await token(second, verifier)
    check(reused.status === 400 && reused.body.error === 'invalid_grant', `a reused code: ${JSON.stringify(reused)}`)
  })

  await step('a narrow grant: only likes may be written, nothing else; the email is not shown', async () => {
    const scope = 'atproto repo:app.bsky.feed.like?action=create'
    const { client: narrow, sessions: sessions2 } = makeClient(scope)
    const url = await narrow.authorize(handle, { scope })
    const { landed, consent } = await signInAndAllow(url, handle, password)
    check(consent && consent.includes('create records in app.bsky.feed.like'), `the consent says what: ${consent}`)
    const { session: s2 } = await narrow.callback(new URL(landed).searchParams)
    const a2 = new Agent(s2)
    const liked = await a2.com.atproto.repo.createRecord({
      repo: did,
      collection: 'app.bsky.feed.like',
      record: { $type: 'app.bsky.feed.like', subject: { uri: `at://${did}/app.bsky.feed.post/3kaaaaaaaaaa2`, cid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm' }, createdAt: new Date().toISOString() },
    })
    check(liked.data.uri.includes('app.bsky.feed.like'), 'a like is allowed')
    const posted = await a2.com.atproto.repo
      .createRecord({ repo: did, collection: 'app.bsky.feed.post', record: { $type: 'app.bsky.feed.post', text: 'no', createdAt: new Date().toISOString() } })
      .then(() => 'accepted', (e) => `${e.status} ${e.error}`)
    check(posted === '403 ScopeMissingError', `a post is refused: ${posted}`)
    const unliked = await a2.com.atproto.repo
      .deleteRecord({ repo: did, collection: 'app.bsky.feed.like', rkey: liked.data.uri.split('/').pop() })
      .then(() => 'accepted', (e) => `${e.status} ${e.error}`)
    check(unliked === '403 ScopeMissingError', `deleting is not granted: ${unliked}`)
    const me = (await a2.com.atproto.server.getSession()).data
    check(me.did === did && me.email === undefined, `no email without the permission: ${JSON.stringify(me)}`)
    const timeline = await a2.app.bsky.feed.getTimeline().then(() => 'accepted', (e) => `${e.status} ${e.error}`)
    check(timeline === '403 ScopeMissingError', `no proxied call without rpc permission: ${timeline}`)
    // Revocation: another client's revocation of this session is ignored; the app's own ends it.
    const refresh = (await sessions2.get(did)).tokenSet.refresh_token
    await fetch(meta.revocation_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: refresh, client_id: 'https://other.example/m.json' }),
    })
    const still = await a2.com.atproto.server.getSession().then(() => 'alive', (e) => `${e.status}`)
    check(still === 'alive', `another client cannot revoke it: ${still}`)
    await s2.signOut()
    const after = await a2.com.atproto.server.getSession().then(() => 'alive', (e) => `${e.status ?? e.message}`)
    check(after !== 'alive', `the revoked session is gone: ${after}`)
  })

  await step('a permission set (include:app.bsky.authCreatePosts) grants what its lexicon says', async () => {
    const scope = 'atproto include:app.bsky.authCreatePosts?aud=did:web:api.bsky.app%23bsky_appview'
    const { client: sets } = makeClient(scope)
    const url = await sets.authorize(handle, { scope })
    const { landed, consent } = await signInAndAllow(url, handle, password)
    check(consent && consent.includes('Create Bluesky Posts'), `the consent names the set: ${consent}`)
    const { session: s3 } = await sets.callback(new URL(landed).searchParams)
    const a3 = new Agent(s3)
    const post = await a3.com.atproto.repo.createRecord({
      repo: did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: 'through a permission set', createdAt: new Date().toISOString() },
    })
    check(post.data.uri.includes('app.bsky.feed.post'), 'a post is allowed')
    const profile = await a3.com.atproto.repo
      .putRecord({ repo: did, collection: 'app.bsky.actor.profile', rkey: 'self', record: { $type: 'app.bsky.actor.profile', displayName: 'x' } })
      .then(() => 'accepted', (e) => `${e.status} ${e.error}`)
    check(profile === '403 ScopeMissingError', `the profile is not in the set: ${profile}`)
  })

  await step('a confidential client (private_key_jwt, metadata and keys fetched over HTTPS) signs in and writes', async () => {
    const host = opt('--app-host')
    const key = await JoseKey.generate(['ES256'], 'app-key-1')
    const server = https.createServer({ cert: fs.readFileSync(opt('--tls-cert')), key: fs.readFileSync(opt('--tls-key')) }, (req, res) => {
      const body = req.url === '/client-metadata.json' ? app.clientMetadata : req.url === '/jwks.json' ? app.jwks : null
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body ?? { error: 'not found' }))
    })
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    const origin = `https://${host}:${server.address().port}`
    const scope = 'atproto transition:generic'
    const sessions = memory()
    const app = new NodeOAuthClient({
      clientMetadata: {
        client_id: `${origin}/client-metadata.json`, client_name: 'Confidential Test App', client_uri: origin,
        redirect_uris: [`${origin}/callback`], scope, grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'], application_type: 'web', token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256', jwks_uri: `${origin}/jwks.json`, dpop_bound_access_tokens: true,
      },
      keyset: [key], stateStore: memory(), sessionStore: sessions, handleResolver: service, plcDirectoryUrl: plc,
      allowHttp: true, fetch: globalThis.fetch, requestLock: requestLocalLock,
    })
    try {
      const url = await app.authorize(handle, { scope })
      const { landed, consent } = await signInAndAllow(url, handle, password, origin)
      check(consent && consent.includes('Confidential Test App'), `the consent names the app from its metadata: ${consent}`)
      const { session } = await app.callback(new URL(landed).searchParams)
      const agent = new Agent(session)
      const created = await agent.com.atproto.repo.createRecord({
        repo: session.did, collection: 'app.bsky.feed.post',
        record: { $type: 'app.bsky.feed.post', text: 'posted by a confidential client', createdAt: new Date().toISOString() },
      })
      const rkey = created.data.uri.split('/').pop()
      const got = await agent.com.atproto.repo.getRecord({ repo: session.did, collection: 'app.bsky.feed.post', rkey })
      check(got.data.value.text === 'posted by a confidential client', 'read back')
      await agent.com.atproto.repo.deleteRecord({ repo: session.did, collection: 'app.bsky.feed.post', rkey })
      // The refresh is authenticated with a new client assertion; without one it is refused.
      const before = (await sessions.get(session.did)).tokenSet.refresh_token
      await session.getTokenInfo(true)
      const after = (await sessions.get(session.did)).tokenSet.refresh_token
      check(after && after !== before, 'the refresh rotated')
      const stored = await sessions.get(session.did)
      const nonce = (await fetch(`${service}/xrpc/_health`)).headers.get('dpop-nonce')
      const bare = await fetch(meta.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await dpopProof(stored.dpopJwk, 'POST', meta.token_endpoint, { nonce }) },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: after, client_id: `${origin}/client-metadata.json` }),
      })
      const body = await bare.json()
      check(bare.status === 401 && body.error === 'invalid_client', `a refresh without the client's assertion: ${bare.status} ${JSON.stringify(body)}`)
      await session.signOut()
    } finally {
      server.close()
    }
  })

  return { did }
}

main()
  .then((summary) => {
    console.log(log.join('\n'))
    console.log(JSON.stringify({ ok: true, ...summary }))
  })
  .catch((err) => {
    console.log(log.join('\n'))
    console.error(err)
    process.exit(1)
  })

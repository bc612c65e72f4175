#!/usr/bin/env node
// OAuth side by side (run by hand, see scripts/bench-oauth.sh): the same client, with hand-made
// DPoP proofs (ES256, a fresh jti each, the server's nonce), against Vow's provider and the
// reference PDS's. Three figures per target:
//   - PAR: pushed authorization requests;
//   - token: refresh grants, each worker rotating its own session's refresh token;
//   - getRecord: DPoP-bound access tokens presented to the PDS (proof with `ath`).
// Sessions are authorized without a browser: Vow's sign-in and consent forms, or the reference's
// authorization API, called as its page calls it (CSRF cookie and header, same-origin headers).
// All requests go through node:http with keep-alive (fetch would force `sec-fetch-mode: cors`,
// which the reference's API refuses). With --pid NAME=PID the server's CPU time per request is
// reported too (from /proc), which a 2-core machine shared with the client makes the fairer figure.
// Usage: node oauth.mjs --target NAME=URL=HANDLE [--target ...] [--pid NAME=PID ...] [--n 400] [--c 8]
//        (each HANDLE's password is bench-password)
import http from 'node:http'
import fs from 'node:fs'

const args = process.argv.slice(2)
const targets = []
const pids = {}
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--target') targets.push(args[i + 1].split('='))
  if (args[i] === '--pid') {
    const [name, pid] = args[i + 1].split('=')
    pids[name] = pid
  }
}
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const n = opt('--n', 400)
const c = opt('--c', 8)

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
/** One HTTP exchange: {status, headers, text, json()}. */
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = []
      res.on('data', (d) => chunks.push(d))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        resolve({ status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) })
      })
    })
    req.on('error', reject)
    if (body) req.write(body)
    req.end()
  })
}

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
const sha256 = async (s) => Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(s))).toString('base64url')

/** A DPoP key and the proofs it signs, remembering each server's newest nonce. */
async function dpopKey() {
  const key = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign'])
  const jwk = await crypto.subtle.exportKey('jwk', key.publicKey)
  const nonces = new Map()
  const prepared = new Map() // `htm url ath nonce` -> proofs signed ahead
  const slot = (htm, url, accessToken) => {
    const u = new URL(url)
    return `${htm} ${u.origin}${u.pathname} ${accessToken ?? ''} ${nonces.get(u.origin) ?? ''}`
  }
  return {
    nonces,
    /** Signs `count` proofs ahead, so the timed loop measures the server, not the signing. */
    async prepare(htm, url, accessToken, count) {
      const key = slot(htm, url, accessToken)
      const list = prepared.get(key) ?? []
      for (let i = 0; i < count; i++) list.push(await this.sign(htm, url, accessToken))
      prepared.set(key, list)
    },
    async proof(htm, url, accessToken) {
      const ready = prepared.get(slot(htm, url, accessToken))?.pop()
      return ready ?? this.sign(htm, url, accessToken)
    },
    async sign(htm, url, accessToken) {
      const u = new URL(url)
      const htu = `${u.origin}${u.pathname}`
      const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } }
      const nonce = nonces.get(u.origin)
      const payload = {
        jti: crypto.randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000),
        ...(nonce ? { nonce } : {}), ...(accessToken ? { ath: await sha256(accessToken) } : {}),
      }
      const input = `${b64(header)}.${b64(payload)}`
      const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, new TextEncoder().encode(input))
      return `${input}.${Buffer.from(sig).toString('base64url')}`
    },
  }
}

/** A DPoP request, retried once per fresh nonce the server asks for. */
async function withDpop(key, method, url, { headers = {}, body, accessToken } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const dpop = await key.proof(method, url, accessToken)
    const auth = accessToken ? { authorization: `DPoP ${accessToken}` } : {}
    const res = await request(url, { method, headers: { ...headers, ...auth, dpop }, body })
    const fresh = res.headers['dpop-nonce']
    if (fresh) key.nonces.set(new URL(url).origin, fresh)
    const askedNonce = res.text.includes('use_dpop_nonce') || (res.headers['www-authenticate'] ?? '').includes('use_dpop_nonce')
    if ((res.status === 400 || res.status === 401) && askedNonce) continue
    return res
  }
  throw new Error(`${method} ${url}: no nonce accepted`)
}

const redirect = 'http://127.0.0.1/callback'
const scope = 'atproto transition:generic'
const clientId = `http://localhost?redirect_uri=${encodeURIComponent(redirect)}&scope=${encodeURIComponent(scope)}`
const form = (o) => new URLSearchParams(o).toString()
const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' }

/** A cookie jar for one browser-less user agent. */
function jar() {
  const cookies = new Map()
  return {
    take(res) {
      for (const line of res.headers['set-cookie'] ?? []) {
        const [pair] = line.split(';')
        const eq = pair.indexOf('=')
        cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim())
      }
    },
    header: () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; '),
    get: (k) => cookies.get(k),
  }
}

/** Approves on Vow: its sign-in form, then its consent form. Returns the redirect URL. */
async function approveOnVow(service, authorizeUrl, handle) {
  const u = new URL(authorizeUrl)
  const common = { client_id: u.searchParams.get('client_id'), request_uri: u.searchParams.get('request_uri') }
  const cookies = jar()
  const post = async (path, fields) => {
    const res = await request(`${service}${path}`, {
      method: 'POST',
      headers: { ...formHeaders, origin: service, cookie: cookies.header() },
      body: form({ ...common, ...fields }),
    })
    cookies.take(res)
    return res
  }
  await post('/oauth/authorize/signin', { identifier: handle, password: 'bench-password' })
  const res = await post('/oauth/authorize', { decision: 'allow' })
  if (!res.headers.location) throw new Error(`vow consent: ${res.status} ${res.text}`)
  return new URL(res.headers.location)
}

/** Approves on the reference PDS through the API its authorization page calls. */
async function approveOnReference(service, authorizeUrl, handle) {
  const cookies = jar()
  cookies.take(await request(authorizeUrl, { headers: { accept: 'text/html' } }))
  const api = async (path, body) => {
    const res = await request(`${service}/@atproto/oauth-provider/~api${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json', origin: service, referer: authorizeUrl, 'sec-fetch-mode': 'same-origin',
        'sec-fetch-site': 'same-origin', 'x-csrf-token': cookies.get('csrf-token'), cookie: cookies.header(),
      },
      body: JSON.stringify(body),
    })
    cookies.take(res)
    if (res.status !== 200) throw new Error(`reference ${path}: ${res.status} ${res.text}`)
    return res.json()
  }
  const signed = await api('/sign-in', { locale: 'en', username: handle, password: 'bench-password', remember: true })
  const consent = await api('/consent', { sub: signed.account.sub, scope })
  return new URL(consent.url)
}

async function pushRequest(meta, key, challenge) {
  const res = await withDpop(key, 'POST', meta.pushed_authorization_request_endpoint, {
    headers: formHeaders,
    body: form({
      client_id: clientId, response_type: 'code', redirect_uri: redirect, scope, state: 'bench',
      code_challenge: challenge, code_challenge_method: 'S256',
    }),
  })
  if (res.status !== 201 && res.status !== 200) throw new Error(`PAR: ${res.status} ${res.text}`)
  return res.json().request_uri
}

/** A whole authorization: PAR, approval, code for tokens. Returns a session to refresh. */
async function authorize(name, service, handle, meta) {
  const key = await dpopKey()
  const verifier = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url')
  const requestUri = await pushRequest(meta, key, await sha256(verifier))
  const authorizeUrl = `${meta.authorization_endpoint}?${form({ client_id: clientId, request_uri: requestUri })}`
  const back = name === 'reference'
    ? await approveOnReference(service, authorizeUrl, handle)
    : await approveOnVow(service, authorizeUrl, handle)
  const code = back.searchParams.get('code')
  if (!code) throw new Error(`${name}: no code in ${back}`)
  const res = await withDpop(key, 'POST', meta.token_endpoint, {
    headers: formHeaders,
    body: form({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirect, client_id: clientId }),
  })
  if (res.status !== 200) throw new Error(`${name} code exchange: ${res.status} ${res.text}`)
  const t = res.json()
  return { key, access: t.access_token, refresh: t.refresh_token, did: t.sub }
}

function cpuTicks(pid) {
  if (!pid) return null
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return Number(fields[11]) + Number(fields[12]) // utime + stime, in clock ticks (1/100 s)
}

async function measure(name, label, op) {
  for (let w = 0; w < c; w++) await op(w) // warm up
  const latencies = []
  let next = 0
  const cpu0 = cpuTicks(pids[name])
  const started = performance.now()
  await Promise.all(
    Array.from({ length: c }, async (_, w) => {
      while (next < n) {
        next++
        const t = performance.now()
        await op(w)
        latencies.push(performance.now() - t)
      }
    }),
  )
  const secs = (performance.now() - started) / 1000
  const cpu = cpu0 === null ? '' : `, server CPU ${((cpuTicks(pids[name]) - cpu0) * 10 / n).toFixed(2)} ms per request`
  latencies.sort((a, b) => a - b)
  const p = (q) => latencies[Math.floor(q * (latencies.length - 1))].toFixed(2)
  console.log(`${name}: ${n} ${label} at concurrency ${c}: ${(n / secs).toFixed(0)}/s, p50 ${p(0.5)} ms, p90 ${p(0.9)} ms${cpu}`)
}

for (const [name, service, handle] of targets) {
  const meta = (await request(`${service}/.well-known/oauth-authorization-server`)).json()

  // PAR: one key, many requests.
  const parKey = await dpopKey()
  const challenge = await sha256('bench-verifier-bench-verifier-bench-verifier')
  await pushRequest(meta, parKey, challenge) // learns the nonce
  await parKey.prepare('POST', meta.pushed_authorization_request_endpoint, null, n + c)
  await measure(name, 'PARs', () => pushRequest(meta, parKey, challenge))

  // One authorized session per worker, as separate devices would hold.
  const sessions = []
  for (let w = 0; w < c; w++) sessions.push(await authorize(name, service, handle, meta))
  for (const s of sessions) await s.key.prepare('POST', meta.token_endpoint, null, Math.ceil(n / c) + 8)
  await measure(name, 'token refreshes', async (w) => {
    const s = sessions[w]
    const res = await withDpop(s.key, 'POST', meta.token_endpoint, {
      headers: formHeaders,
      body: form({ grant_type: 'refresh_token', refresh_token: s.refresh, client_id: clientId }),
    })
    if (res.status !== 200) throw new Error(`${name} refresh: ${res.status} ${res.text}`)
    const t = res.json()
    s.access = t.access_token
    s.refresh = t.refresh_token
  })

  // A record to read, written with a password session.
  const login = (await request(`${service}/xrpc/com.atproto.server.createSession`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ identifier: handle, password: 'bench-password' }),
  })).json()
  const created = await request(`${service}/xrpc/com.atproto.repo.createRecord`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${login.accessJwt}` },
    body: JSON.stringify({
      repo: login.did, collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: 'read through OAuth', createdAt: new Date().toISOString() },
    }),
  })
  if (created.status !== 200) throw new Error(`${name} createRecord: ${created.status} ${created.text}`)
  const rkey = created.json().uri.split('/').pop()
  const readUrl = `${service}/xrpc/com.atproto.repo.getRecord?${form({ repo: login.did, collection: 'app.bsky.feed.post', rkey })}`
  for (const s of sessions) {
    // One read first learns the resource server's nonce, if it has its own.
    const res = await withDpop(s.key, 'GET', readUrl, { accessToken: s.access })
    if (res.status !== 200) throw new Error(`${name} getRecord: ${res.status} ${res.text}`)
    await s.key.prepare('GET', readUrl, s.access, Math.ceil(n / c) + 8)
  }
  await measure(name, 'DPoP getRecord calls', async (w) => {
    const s = sessions[w]
    const res = await withDpop(s.key, 'GET', readUrl, { accessToken: s.access })
    if (res.status !== 200) throw new Error(`${name} getRecord: ${res.status} ${res.text}`)
  })
}
agent.destroy()

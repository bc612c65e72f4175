#!/usr/bin/env node
// OAuth side by side (run by hand, see scripts/bench-oauth.sh): the token endpoint (refresh
// grants, each with a fresh DPoP proof) and DPoP-authenticated getRecord calls, with the same
// client (@atproto/oauth-client-node, a loopback client) against Vow and the reference PDS.
// Each target's sessions are authorized without a browser: Vow's sign-in and consent forms, or
// the reference's authorization API (CSRF cookie and header, same-origin headers), as its page
// would call them.
// Usage: node bench-tokens.mjs --target NAME=URL=HANDLE [--target ...] --plc URL [--n 400] [--c 8]
//        (each HANDLE's password is bench-password)
import { NodeOAuthClient, requestLocalLock } from '@atproto/oauth-client-node'
import { Agent } from '@atproto/api'

const args = process.argv.slice(2)
const targets = []
for (let i = 0; i < args.length; i++) if (args[i] === '--target') targets.push(args[i + 1].split('='))
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const n = Number(opt('--n', 400))
const c = Number(opt('--c', 8))
const plc = opt('--plc')
const memory = () => {
  const m = new Map()
  return { set: async (k, v) => void m.set(k, v), get: async (k) => m.get(k), del: async (k) => void m.delete(k) }
}

/** A cookie jar for one browser-less user agent. */
function jar() {
  const cookies = new Map()
  return {
    take(res) {
      for (const line of res.headers.getSetCookie()) {
        const [pair] = line.split(';')
        const eq = pair.indexOf('=')
        cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim())
      }
    },
    header: () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; '),
    get: (k) => cookies.get(k),
  }
}

/** Approves an authorization on Vow: the sign-in form, then the consent form. */
async function approveOnVow(service, url, handle) {
  const u = new URL(url)
  const common = { client_id: u.searchParams.get('client_id'), request_uri: u.searchParams.get('request_uri') }
  const cookies = jar()
  const post = async (path, form) => {
    const res = await fetch(`${service}${path}`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: service, cookie: cookies.header() },
      body: new URLSearchParams({ ...common, ...form }),
    })
    cookies.take(res)
    return res
  }
  await post('/oauth/authorize/signin', { identifier: handle, password: 'bench-password' })
  const res = await post('/oauth/authorize', { decision: 'allow' })
  return new URL(res.headers.get('location'))
}

/** Approves an authorization on the reference PDS through its page's API. */
async function approveOnReference(service, url, handle) {
  const cookies = jar()
  const page = await fetch(url, { headers: { accept: 'text/html' }, redirect: 'manual' })
  cookies.take(page)
  const api = async (path, body) => {
    const res = await fetch(`${service}/@atproto/oauth-provider/~api${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json', origin: service, referer: url.toString(), 'sec-fetch-mode': 'same-origin',
        'sec-fetch-site': 'same-origin', 'x-csrf-token': cookies.get('csrf-token'), cookie: cookies.header(),
      },
      body: JSON.stringify(body),
    })
    cookies.take(res)
    const out = await res.json()
    if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(out)}`)
    return out
  }
  const signed = await api('/sign-in', { locale: 'en', username: handle, password: 'bench-password', remember: true })
  const consent = await api('/consent', { sub: signed.account.sub, scope: 'atproto transition:generic' })
  return new URL(consent.url)
}

for (const [name, service, handle] of targets) {
  const redirect = 'http://127.0.0.1/callback'
  const scope = 'atproto transition:generic'
  const clientId = `http://localhost?redirect_uri=${encodeURIComponent(redirect)}&scope=${encodeURIComponent(scope)}`
  const sessions = []
  for (let i = 0; i < c; i++) {
    // One client per session: each keeps its own store, as separate devices would.
    const client = new NodeOAuthClient({
      clientMetadata: {
        client_id: clientId, redirect_uris: [redirect], scope, grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'], token_endpoint_auth_method: 'none', application_type: 'native', dpop_bound_access_tokens: true,
      },
      stateStore: memory(), sessionStore: memory(), handleResolver: service, plcDirectoryUrl: plc, allowHttp: true,
      fetch: globalThis.fetch, requestLock: requestLocalLock,
    })
    const url = await client.authorize(handle, { scope })
    const back = name === 'reference' ? await approveOnReference(service, url, handle) : await approveOnVow(service, url, handle)
    const { session } = await client.callback(back.searchParams)
    sessions.push(session)
  }
  const agent = new Agent(sessions[0])
  const did = sessions[0].did
  const created = await agent.com.atproto.repo.createRecord({
    repo: did, collection: 'app.bsky.feed.post',
    record: { $type: 'app.bsky.feed.post', text: 'read through OAuth', createdAt: new Date().toISOString() },
  })
  const rkey = created.data.uri.split('/').pop()
  const agents = sessions.map((s) => new Agent(s))

  const measure = async (label, op) => {
    for (let i = 0; i < c; i++) await op(i) // warm up
    const latencies = []
    let next = 0
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
    latencies.sort((a, b) => a - b)
    const p = (q) => latencies[Math.floor(q * (latencies.length - 1))].toFixed(2)
    console.log(`${name}: ${n} ${label} at concurrency ${c}: ${(n / secs).toFixed(0)}/s, p50 ${p(0.5)} ms, p90 ${p(0.9)} ms`)
  }
  await measure('token refreshes', (w) => sessions[w].getTokenInfo(true))
  await measure('DPoP getRecord calls', (w) => agents[w].com.atproto.repo.getRecord({ repo: did, collection: 'app.bsky.feed.post', rkey }))
}

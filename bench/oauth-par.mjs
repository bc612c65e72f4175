#!/usr/bin/env node
// OAuth side by side (run by hand, see scripts/bench-oauth.sh): pushed authorization requests
// with DPoP, the same loopback client and the same hand-made proofs against Vow and the
// reference PDS. Each request carries a fresh proof (a new jti) with the server's nonce.
// Usage: node oauth-par.mjs --target NAME=URL [--target NAME=URL] [--n 400] [--c 8]
const args = process.argv.slice(2)
const targets = []
for (let i = 0; i < args.length; i++) if (args[i] === '--target') targets.push(args[i + 1].split('='))
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const n = opt('--n', 400)
const c = opt('--c', 8)

const key = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign'])
const jwk = await crypto.subtle.exportKey('jwk', key.publicKey)
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
async function proof(htu, nonce) {
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } }
  const payload = { jti: crypto.randomUUID(), htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), ...(nonce ? { nonce } : {}) }
  const input = `${b64(header)}.${b64(payload)}`
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, new TextEncoder().encode(input))
  return `${input}.${Buffer.from(sig).toString('base64url')}`
}

const redirect = 'http://127.0.0.1/callback'
const scope = 'atproto transition:generic'
const clientId = `http://localhost?redirect_uri=${encodeURIComponent(redirect)}&scope=${encodeURIComponent(scope)}`
const verifier = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url')
const challenge = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))).toString('base64url')
const body = new URLSearchParams({
  client_id: clientId, response_type: 'code', redirect_uri: redirect, scope, state: 'bench',
  code_challenge: challenge, code_challenge_method: 'S256',
}).toString()

for (const [name, url] of targets) {
  const meta = await (await fetch(`${url}/.well-known/oauth-authorization-server`)).json()
  const endpoint = meta.pushed_authorization_request_endpoint
  let nonce = null
  const push = async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await proof(endpoint, nonce) },
        body,
      })
      const fresh = res.headers.get('dpop-nonce')
      if (fresh) nonce = fresh
      const out = await res.json()
      if (res.status === 201 || res.status === 200) return
      if (out.error !== 'use_dpop_nonce') throw new Error(`${name}: ${res.status} ${JSON.stringify(out)}`)
    }
    throw new Error(`${name}: no nonce accepted`)
  }
  for (let i = 0; i < 20; i++) await push() // warm up
  const latencies = []
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) {
        next++
        const t = performance.now()
        await push()
        latencies.push(performance.now() - t)
      }
    }),
  )
  const secs = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const p = (q) => latencies[Math.floor(q * (latencies.length - 1))].toFixed(2)
  console.log(`${name}: ${n} PARs at concurrency ${c}: ${(n / secs).toFixed(0)}/s, p50 ${p(0.5)} ms, p90 ${p(0.9)} ms`)
}

// Runs the account page's signing decisions (crates/vow/assets/verify.js, the very module the
// page loads) as a signer process, so the hostile-server tests can put the browser signer's
// checks through the same requests as `vow signer`. The page asks a person; here a policy
// stands in for them: routine writes are approved, identity changes only with
// --approve-identity, and removing this key only with --approve-key-removal as well.
// Usage: node js-signer.mjs <pdsUrl> <did> <accessJwt> <keyFile> <plcUrl> [flags]
// Prints "signer connected for <did>" once the server has registered it, then one line per
// request: "signed <what>" or "refused to sign <why>".
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { secp256k1 } from '@noble/curves/secp256k1'

const here = path.dirname(fileURLToPath(import.meta.url))
const { decide, didKeyOf, verifierFor } = await import(path.join(here, '../crates/vow/assets/verify.js'))

const [pds, did, access, keyFile, plc, ...flags] = process.argv.slice(2)
const approveIdentity = flags.includes('--approve-identity')
const approveKeyRemoval = flags.includes('--approve-key-removal')
const priv = new Uint8Array(fs.readFileSync(keyFile))
const sha256 = async (b) => new Uint8Array(await crypto.subtle.digest('SHA-256', b))
const ownKey = didKeyOf(secp256k1.getPublicKey(priv, true))
const verify = verifierFor(secp256k1)

let lastRev = null
const approve = async (c) => (!c.identity || approveIdentity) && (!c.removesOwnKey || approveKeyRemoval)
const ws = new WebSocket(`${pds.replace(/^http/, 'ws')}/xrpc/com.atproto.server.signerConnect`, {
  headers: { authorization: `Bearer ${access}` },
})
ws.on('ping', () => console.log(`signer connected for ${did}`))
ws.on('message', async (data) => {
  const msg = JSON.parse(data.toString())
  if (msg.type !== 'sign_request') return
  const d = await decide(msg, { did, ownKey, plc, lastRev, verify, approve })
  if (d.sign) {
    if (d.rev) lastRev = d.rev
    const sig = secp256k1.sign(await sha256(Buffer.from(msg.payload, 'base64url')), priv, { lowS: true }).toCompactRawBytes()
    ws.send(JSON.stringify({ type: 'sign_response', requestId: msg.requestId, commitSignature: Buffer.from(sig).toString('base64url') }))
    console.error(`signed ${d.summary}`)
  } else {
    ws.send(JSON.stringify({ type: 'sign_reject', requestId: msg.requestId, reason: d.why }))
    console.error(`refused to sign ${d.why}`)
  }
})
ws.on('close', () => process.exit(0))
ws.on('error', (e) => {
  console.error(`signer connection failed: ${e.message}`)
  process.exit(1)
})

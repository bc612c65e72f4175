// Vow account page: registers a passkey, derives the signing key from its PRF output, and signs
// this account's commits over the signer WebSocket while the tab is open.
//
// The PRF output and the derived private key live only in this module's variables: never in
// localStorage, sessionStorage or cookies. Closing or reloading the tab forgets them.
import { secp256k1 } from '/account/noble-secp256k1.js'
import { decide, didKeyOf, verifierFor } from '/account/verify.js'
import { NO_PRF, deriveKey, prfFirst, prfFromAssertion } from '/account/passkey.js'

const $ = (id) => document.getElementById(id)
const root = $('vow')
const account = {
  did: root.dataset.did,
  handle: root.dataset.handle,
  signingKey: root.dataset.signingKey || null,
  credentialId: root.dataset.credentialId || null,
  // The PLC directory, asked directly (never through this server) before an identity change.
  plc: root.dataset.plc,
}

// ---- encodings -----------------------------------------------------------------------------

const b64url = (bytes) => {
  let s = ''
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
const unb64url = (s) => {
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4))
  return Uint8Array.from(bin, (c) => c.charCodeAt(0))
}
const didKey = didKeyOf

// For the end-to-end test of the derivation vectors; needs no secret.
window.vowDeriveDidKey = async (prfHex) =>
  (await deriveKey(Uint8Array.from(prfHex.match(/../g), (h) => parseInt(h, 16)))).did

let key = null // the derived signing key, in memory only

function status(text, isError) {
  const el = $('status')
  el.textContent = text
  el.className = isError ? 'error' : ''
}

async function postJson(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body || {}),
    credentials: 'same-origin',
  })
  const data = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(data.message || data.error || `HTTP ${res.status}`)
  return data
}

async function registerPasskey() {
  const replacing = !!account.signingKey
  if (replacing && !key) throw new Error('Unlock the signer first: your current key signs the change.')
  const recoveryKey = ($('recovery-key') && $('recovery-key').value.trim()) || ''
  if (recoveryKey && !/^did:key:zQ3s[1-9A-HJ-NP-Za-km-z]{44,}$/.test(recoveryKey)) {
    throw new Error('That recovery key is not a secp256k1 did:key (did:key:zQ3s…). Fix it or leave it empty; no passkey was made.')
  }
  status('Creating your passkey…')
  const opts = await postJson('/account/passkey/challenge')
  const challenge = unb64url(opts.challenge)
  const credential = await navigator.credentials.create({
    publicKey: {
      rp: opts.rp,
      user: { ...opts.user, id: unb64url(opts.user.id) },
      challenge,
      pubKeyCredParams: opts.pubKeyCredParams,
      authenticatorSelection: opts.authenticatorSelection,
      attestation: opts.attestation,
      timeout: opts.timeout,
      extensions: { prf: { eval: { first: unb64url(opts.prfSalt) } } },
    },
  })
  // Some authenticators only evaluate PRF during an assertion: ask once more if needed.
  const prf = prfFirst(credential) || (await prfFromAssertion(credential.rawId))
  if (!prf) throw new Error(NO_PRF)
  const derived = await deriveKey(prf)
  status(replacing ? 'Approve the key change in this tab…' : 'Handing your identity over to your key…')
  const res = await postJson('/account/passkey/register', {
    challenge: opts.challenge,
    clientDataJSON: b64url(credential.response.clientDataJSON),
    attestationObject: b64url(credential.response.attestationObject),
    publicKey: derived.did,
    signature: b64url(await derived.sign(challenge)),
    recoveryKey: recoveryKey || undefined,
  })
  account.signingKey = res.signingKey
  account.credentialId = res.credentialId
  key = derived
  $('key-status').replaceChildren(
    Object.assign(document.createElement('p'), {
      textContent: `Your signing key is ${res.signingKey}. Only this key can change your identity or sign your repo; the PDS holds no key for you.`,
    }),
  )
  status(`Passkey ${replacing ? 'replaced' : 'registered'}. Your signing key is ${res.signingKey}.`)
  const btn = $('register')
  if (btn) btn.remove()
  $('signer-panel').hidden = false
  if ($('compose')) $('compose').hidden = false
  if ($('welcome')) $('welcome').remove()
  if ($('recovery')) {
    $('recovery').hidden = false
    showRecoveryState()
  }
  connect()
}

async function unlock() {
  if (!account.credentialId) throw new Error('Register a passkey first.')
  status('Unlocking with your passkey…')
  const prf = await prfFromAssertion(unb64url(account.credentialId))
  if (!prf) throw new Error(NO_PRF)
  const derived = await deriveKey(prf)
  if (derived.did !== account.signingKey) {
    throw new Error(`This passkey derives ${derived.did}, but the account's key is ${account.signingKey}.`)
  }
  key = derived
  status('Unlocked.')
  connect()
}

// ---- the signer socket ---------------------------------------------------------------------

let socket = null
let wanted = false
let backoff = 3000

function signerState(text, dot) {
  $('signer-state').textContent = text
  $('dot').className = 'dot ' + (dot || '')
  // The buttons follow the state: unlock while locked, lock while unlocked.
  $('unlock').disabled = !!key
  $('disconnect').disabled = !key
}

function logLine(text) {
  const li = document.createElement('li')
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`
  $('log').prepend(li)
}

function connect() {
  if (!key) return
  wanted = true
  if (socket && socket.readyState <= 1) return
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/account/signer`
  signerState('Connecting…', 'wait')
  socket = new WebSocket(url)
  socket.onopen = () => {
    backoff = 3000
    signerState('Connected: signing for this account', 'on')
  }
  socket.onmessage = (ev) => onMessage(ev.data).catch((e) => logLine(`error: ${e.message}`))
  socket.onclose = (ev) => {
    socket = null
    if (ev.code === 4000) {
      wanted = false
      signerState('Another signer took over for this account', '')
      return
    }
    if (!wanted) return signerState(key ? 'Disconnected' : 'Locked', '')
    signerState(`Disconnected; retrying in ${backoff / 1000} s`, 'wait')
    setTimeout(connect, backoff)
    backoff = Math.min(backoff * 2, 60000)
  }
}

function disconnect() {
  wanted = false
  key = null
  if (socket) socket.close(1000, 'locked')
  signerState('Locked', '')
}

/// What a person is asked before a signature: every identity change, each of its changes
/// spelled out, and a second time when it removes this key; writes only when they asked to be.
async function approve(c) {
  const who = account.handle
  if (c.kind === 'commit') return !$('ask-each').checked || window.confirm(`Sign for ${who}:\n${c.lines.join('\n')}`)
  if (c.kind === 'token') {
    return !c.identity || window.confirm(`Allow a service to act for ${who}?\n${c.lines.join('\n')}`)
  }
  const head = c.identity ? `This changes who controls ${who}:` : `Change the identity of ${who}?`
  if (!window.confirm(`${head}\n${c.lines.join('\n')}`)) return false
  return (
    !c.removesOwnKey ||
    window.confirm(`After this, the key in this browser can no longer change or recover ${who}. Sign anyway?`)
  )
}

let lastRev = null

async function onMessage(data) {
  let msg
  try {
    msg = JSON.parse(data)
  } catch {
    return
  }
  if (msg.type === 'sign_error') return logLine(`refused by the PDS: ${msg.message}`)
  if (msg.type !== 'sign_request' || !msg.requestId) return
  const reject = (why) => {
    socket.send(JSON.stringify({ type: 'sign_reject', requestId: msg.requestId, reason: why }))
    logLine(`declined: ${why}`)
  }
  if (typeof msg.payload !== 'string') return reject('a request without a payload')
  if (msg.did !== account.did) return reject('not this account')
  if (msg.expiresAt && Date.parse(msg.expiresAt) < Date.now()) return reject('expired')
  // What is signed is decided from the payload itself, never from the server's description.
  const d = await decide(msg, {
    did: account.did,
    ownKey: account.signingKey,
    plc: account.plc,
    lastRev,
    verify: verifierFor(secp256k1),
    approve,
  })
  if (!d.sign) return reject(d.why)
  if (d.rev) lastRev = d.rev
  const signature = await key.sign(unb64url(msg.payload))
  socket.send(JSON.stringify({ type: 'sign_response', requestId: msg.requestId, commitSignature: b64url(signature) }))
  logLine(`signed ${d.summary}`)
}

// ---- the recovery key ----------------------------------------------------------------------

// The recovery key's secret lives only here until the person saves it; the server gets its
// did:key, in an operation this tab's key signs.
let recovery = null

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')

async function showRecoveryState() {
  const el = $('recovery-state')
  if (!el || !account.signingKey) return
  try {
    const last = await (await fetch(`${account.plc}/${account.did}/log/last`)).json()
    const own = (last.rotationKeys || []).indexOf(account.signingKey)
    const above = own > 0 ? last.rotationKeys.slice(0, own) : []
    el.textContent = above.length
      ? `Your identity has a recovery key: ${above.join(', ')}. Creating another replaces it.`
      : 'Your identity has no recovery key yet: what your passkey’s key signs is final, and a lost passkey is a lost identity.'
  } catch (e) {
    el.textContent = `Could not ask the PLC directory about your identity (${e.message}).`
  }
}

function createRecovery() {
  let secret
  for (;;) {
    secret = crypto.getRandomValues(new Uint8Array(32))
    try {
      recovery = { secret, did: didKey(secp256k1.getPublicKey(secret, true)) }
      break
    } catch {
      // Outside the curve's range (vanishingly rare): draw again.
    }
  }
  $('recovery-secret').textContent = hex(secret)
  $('recovery-did').textContent = recovery.did
  const link = $('recovery-download')
  if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href)
  link.href = URL.createObjectURL(new Blob([secret], { type: 'application/octet-stream' }))
  link.download = `recovery-${account.handle}.key`
  $('recovery-saved').checked = false
  $('recovery-add').disabled = true
  $('recovery-new').hidden = false
}

function forgetRecovery() {
  const link = $('recovery-download')
  if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href)
  link.href = '#'
  $('recovery-secret').textContent = ''
  $('recovery-new').hidden = true
  if (recovery) recovery.secret.fill(0)
  recovery = null
}

async function addRecovery() {
  if (!recovery) throw new Error('Create a recovery key first.')
  if (!key) throw new Error('Unlock the signer first: your key signs the change.')
  connect()
  status('Approve the change in this tab: your recovery key goes above your passkey’s key…')
  await postJson('/account/recovery-key', { recoveryKey: recovery.did })
  const added = recovery.did
  forgetRecovery()
  status(`Recovery key added: ${added}. Keep it safe; it is not stored anywhere else.`)
  await showRecoveryState()
}

// ---- email, sessions, app passwords, deletion ------------------------------------------------

function note(id, text, isError) {
  $(id).textContent = text
  $(id).className = isError ? 'error' : ''
}

async function emailSend() {
  await postJson('/account/email/send')
  note('email-status', 'A code is on its way to your address; it works once, within 24 hours.')
}

async function emailConfirm() {
  await postJson('/account/email/confirm', { token: $('email-code').value.trim() })
  note('email-status', 'Your email address is confirmed.')
  $('email-send').remove()
}

async function revoke(url, body, button) {
  await postJson(url, body)
  button.closest('li').remove()
}

async function writePost() {
  if (!key) throw new Error('Unlock the signer first: your posts are signed here.')
  note('post-status', 'Signing and posting…')
  const { uri } = await postJson('/account/post', { text: $('post-text').value })
  $('post-text').value = ''
  note('post-status', `Posted: ${uri}`)
}

async function deleteSend() {
  await postJson('/account/delete/send')
  note('delete-status', 'A code is on its way to your address; it works once, within 15 minutes.')
}

async function deleteAccount() {
  const token = $('delete-code').value.trim()
  const password = $('delete-password').value
  const tombstone = $('delete-tombstone').checked
  if (!token || !password) throw new Error('Enter the code from the mail and your password.')
  const question = tombstone
    ? 'Delete your account and tombstone your DID? Both are final.'
    : 'Delete your account and everything this server holds for you? This is final.'
  if (!window.confirm(question)) return
  if (tombstone && !key) throw new Error('Unlock the signer first: your key signs the tombstone.')
  if (tombstone) connect()
  const body = { token, password, tombstone }
  if (account.credentialId) {
    // The passkey confirms it is you, here and now.
    const { challenge } = await postJson('/account/delete/challenge')
    const assertion = await navigator.credentials.get({
      publicKey: {
        challenge: unb64url(challenge),
        allowCredentials: [{ type: 'public-key', id: unb64url(account.credentialId) }],
        userVerification: 'preferred',
        timeout: 60000,
      },
    })
    Object.assign(body, {
      challenge,
      clientDataJSON: b64url(assertion.response.clientDataJSON),
      authenticatorData: b64url(assertion.response.authenticatorData),
      signature: b64url(assertion.response.signature),
    })
  }
  await postJson('/account/delete', body)
  wanted = false
  key = null
  document.body.replaceChildren(
    Object.assign(document.createElement('main'), {
      textContent: tombstone ? 'Your account is deleted and your DID is tombstoned.' : 'Your account is deleted.',
      id: 'deleted',
    }),
  )
}

// ---- wiring --------------------------------------------------------------------------------

const guard = (fn) => () => fn().catch((e) => status(e.message || String(e), true))
if ($('register')) $('register').addEventListener('click', guard(registerPasskey))
$('unlock').addEventListener('click', guard(unlock))
$('replace').addEventListener('click', guard(registerPasskey))
$('disconnect').addEventListener('click', disconnect)
if ($('recovery')) {
  $('recovery').hidden = !account.signingKey
  $('recovery-create').addEventListener('click', createRecovery)
  $('recovery-saved').addEventListener('change', () => ($('recovery-add').disabled = !$('recovery-saved').checked))
  $('recovery-add').addEventListener('click', guard(addRecovery))
  showRecoveryState()
}
if (!account.signingKey) $('signer-panel').hidden = true
$('unlock').disabled = !account.signingKey
$('disconnect').disabled = true
const noteGuard = (id, fn) => () => fn().catch((e) => note(id, e.message || String(e), true))
if ($('email-send')) $('email-send').addEventListener('click', noteGuard('email-status', emailSend))
if ($('email-confirm')) $('email-confirm').addEventListener('click', noteGuard('email-status', emailConfirm))
for (const b of document.querySelectorAll('.revoke-session')) {
  b.addEventListener('click', guard(() => revoke('/account/sessions/revoke', { id: b.dataset.id }, b)))
}
for (const b of document.querySelectorAll('.revoke-app-password')) {
  b.addEventListener('click', guard(() => revoke('/account/app-passwords/revoke', { name: b.dataset.name }, b)))
}
if ($('post-send')) $('post-send').addEventListener('click', noteGuard('post-status', writePost))
$('delete-send').addEventListener('click', noteGuard('delete-status', deleteSend))
$('delete-confirm').addEventListener('click', noteGuard('delete-status', deleteAccount))
document.body.dataset.ready = '1'

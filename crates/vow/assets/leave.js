// Leaving (or recovering) without any PDS: this page reads the DID's state from the PLC
// directory, builds the next operation (a new PDS, and optionally a new signing key), shows
// what changes, signs it here with the user's key and sends it to the PLC directory itself.
// It needs nothing from the server that served it, so the same files work from any static host
// on this hostname (passkeys are bound to it) or, with a pasted key, from anywhere.
import { cidFor, encodeCbor, plcChange, plcHistory } from './verify.js'
import { NO_PRF, deriveKey, keyFromSecret, prfFromAssertion } from './passkey.js'

const $ = (id) => document.getElementById(id)
const params = new URLSearchParams(location.search)
const root = $('leave')

const b64url = (bytes) => {
  let s = ''
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
const unb64url = (s) => {
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4))
  return Uint8Array.from(bin, (c) => c.charCodeAt(0))
}
const fromHex = (hex) => Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16))

function status(text, isError) {
  $('status').textContent = text
  $('status').className = isError ? 'error' : ''
}

/** The user's key: from the passkey, a key file (32 raw bytes) or a pasted hex secret. */
async function userKey() {
  if ($('use-passkey').checked) {
    const credential = params.get('credential')
    const prf = await prfFromAssertion(credential ? unb64url(credential) : null)
    if (!prf) throw new Error(NO_PRF)
    return deriveKey(prf)
  }
  const file = $('key-file').files[0]
  if (file) {
    const bytes = new Uint8Array(await file.arrayBuffer())
    if (bytes.length !== 32) throw new Error(`A key file holds 32 bytes; this one holds ${bytes.length}.`)
    return keyFromSecret(bytes)
  }
  const hex = $('secret').value.trim().toLowerCase()
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error('Paste the 64 hexadecimal characters of your key, or choose its file.')
  return keyFromSecret(fromHex(hex))
}

/** A plc_operation with the fields of `op` (a legacy `create` is read as its modern form). */
function normalized(op) {
  if (op.type === 'create') {
    return {
      type: 'plc_operation',
      rotationKeys: [op.recoveryKey, op.signingKey],
      verificationMethods: { atproto: op.signingKey },
      alsoKnownAs: [`at://${op.handle}`],
      services: { atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: op.service } },
    }
  }
  const { type, rotationKeys, verificationMethods, alsoKnownAs, services } = op
  return { type, rotationKeys, verificationMethods, alsoKnownAs, services }
}

let pending = null

async function prepare() {
  pending = null
  $('confirm').hidden = true
  const did = $('did').value.trim()
  const plc = $('plc').value.trim().replace(/\/+$/, '')
  const pds = $('pds').value.trim().replace(/\/+$/, '')
  const newKey = $('new-key').value.trim()
  const pdsKey = $('pds-key').value.trim()
  const pdsRotationKey = $('pds-rotation-key').value.trim()
  if (!did.startsWith('did:plc:')) throw new Error('Enter your DID (did:plc:…).')
  if (!pds && !newKey) throw new Error('Enter the new PDS, a new signing key, or both.')
  if (pds && !/^https?:\/\/[^/]+$/.test(pds)) throw new Error('The new PDS is a URL such as https://pds.example.')
  for (const k of [newKey, pdsKey, pdsRotationKey]) {
    if (k && !k.startsWith('did:key:z')) throw new Error(`${k} is not a did:key:z… value.`)
  }
  if (newKey && pdsKey) throw new Error('Give either a new signing key of yours or the new PDS’s, not both.')
  status('Asking the PLC directory…')
  const res = await fetch(`${plc}/${did}/log/audit`)
  if (!res.ok) throw new Error(`The PLC directory answered ${res.status} for ${did}.`)
  const audit = await res.json()
  const history = plcHistory(audit)
  const live = audit.filter((e) => !e.nullified)
  const last = live[live.length - 1].operation
  if (last.type === 'plc_tombstone') throw new Error(`${did} is tombstoned: it can no longer change.`)
  // The directory's word is checked: the operation built on must hash to the CID it names, so
  // a directory that lies about the current state cannot slip a change past the list below.
  const computed = (await cidFor(encodeCbor(last), 0x71)).toString()
  if (computed !== history.cid) {
    throw new Error(`The PLC directory at ${plc} answered inconsistently (operation ${computed}, listed as ${history.cid}); nothing was signed.`)
  }
  status('Unlocking your key…')
  const key = await userKey()
  if (!history.current.rotationKeys.includes(key.did)) {
    throw new Error(
      `${key.did} is not a rotation key of ${did} (its rotation keys: ${history.current.rotationKeys.join(', ')}).`,
    )
  }
  const op = { ...normalized(last), prev: history.cid }
  if (pds) op.services = { ...op.services, atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: pds } }
  if (pdsKey) op.verificationMethods = { ...op.verificationMethods, atproto: pdsKey }
  if (pdsRotationKey && !op.rotationKeys.includes(pdsRotationKey)) op.rotationKeys = [...op.rotationKeys, pdsRotationKey]
  if (newKey) {
    // The new key takes the old signing key's place among the rotation keys; the key signing
    // this (a recovery key) keeps its own place.
    const old = op.verificationMethods.atproto
    op.verificationMethods = { ...op.verificationMethods, atproto: newKey }
    const keys = op.rotationKeys.map((k) => (k === old && k !== key.did ? newKey : k))
    if (!keys.includes(newKey)) keys.push(newKey)
    op.rotationKeys = [...new Set(keys)]
  }
  const change = plcChange(history, op, key.did)
  $('changes').replaceChildren(
    ...change.lines.map((l) => Object.assign(document.createElement('li'), { textContent: l })),
  )
  $('warning').textContent = change.removesOwnKey
    ? 'After this, the key you used can no longer change or recover this DID.'
    : ''
  pending = { op, key, did, plc }
  $('confirm').hidden = false
  status(`Signed by ${key.did}, once you confirm.`)
}

async function send() {
  if (!pending) throw new Error('Prepare the change first.')
  const { op, key, did, plc } = pending
  const sig = b64url(await key.sign(encodeCbor(op)))
  const res = await fetch(`${plc}/${did}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...op, sig }),
  })
  if (!res.ok) throw new Error(`The PLC directory refused the operation: ${await res.text()}`)
  pending = null
  $('confirm').hidden = true
  status(`Done: the PLC directory accepted the change for ${did}.`)
}

const guard = (fn) => () => fn().catch((e) => status(e.message || String(e), true))
$('did').value = params.get('did') || ''
// The directory comes from this page, not from a link someone sent: the person may change it,
// and is warned when it is not the usual one.
const defaultPlc = root.dataset.plc || 'https://plc.directory'
$('plc').value = defaultPlc
$('plc').addEventListener('input', () => {
  const other = $('plc').value.trim().replace(/\/+$/, '') !== defaultPlc
  status(other ? `Careful: ${defaultPlc} is the usual PLC directory. Use another only if you run it or trust it.` : '', other)
})
$('prepare').addEventListener('click', guard(prepare))
$('send').addEventListener('click', guard(send))
document.body.dataset.ready = '1'

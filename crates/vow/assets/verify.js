// What the account page's signer checks before it signs, from the bytes alone. The server that
// sends sign requests may be hostile (its operator can serve the signer socket), so the `ops`
// label it sends is never trusted: the payload is decoded and recognised as exactly one of
//   - an unsigned repo commit, checked against its evidence: the previous signed commit (which
//     this account's key, an earlier key of the DID, or an empty tree vouches for) and the
//     blocks of both trees along the changed keys; the two trees must differ in exactly the
//     listed records, at a newer revision;
//   - a PLC operation, compared with the DID's state as the PLC directory itself reports it;
//   - a service-auth token issued by this DID, short-lived.
// Anything else is refused. Pure functions over WebCrypto: the same module runs under Node for
// its tests (e2e/signer-verify.mjs).

const te = new TextEncoder()
const td = new TextDecoder('utf-8', { fatal: true })

export class Refusal extends Error {}
const refuse = (why) => {
  throw new Refusal(why)
}

// ---- CIDs ----------------------------------------------------------------------------------

const B32 = 'abcdefghijklmnopqrstuvwxyz234567'
function base32(bytes) {
  let out = ''
  let bits = 0
  let value = 0
  for (const b of bytes) {
    value = (value << 8) | b
    bits += 8
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31]
  return out
}
function unbase32(s) {
  const out = []
  let bits = 0
  let value = 0
  for (const c of s) {
    const i = B32.indexOf(c)
    if (i < 0) refuse(`bad base32 in ${s}`)
    value = (value << 5) | i
    bits += 5
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255)
      bits -= 8
    }
  }
  return Uint8Array.from(out)
}

export class CID {
  constructor(bytes) {
    this.bytes = bytes
    this.str = 'b' + base32(bytes)
  }
  static parse(s) {
    if (typeof s !== 'string' || !s.startsWith('b')) refuse(`not a CID: ${s}`)
    return new CID(unbase32(s.slice(1)))
  }
  toString() {
    return this.str
  }
}

const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])

/// CIDv1, sha2-256, with the given codec (0x71 dag-cbor, 0x55 raw).
export async function cidFor(bytes, codec) {
  return new CID(Uint8Array.from([1, codec, 0x12, 0x20, ...(await sha256(bytes))]))
}

// ---- did:key (secp256k1) ------------------------------------------------------------------

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
function base58(bytes) {
  let n = 0n
  for (const b of bytes) n = n * 256n + BigInt(b)
  let out = ''
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out
    n /= 58n
  }
  for (const b of bytes) {
    if (b !== 0) break
    out = '1' + out
  }
  return out
}
function unbase58(s) {
  let n = 0n
  for (const c of s) {
    const i = B58.indexOf(c)
    if (i < 0) return new Uint8Array(0)
    n = n * 58n + BigInt(i)
  }
  const out = []
  while (n > 0n) {
    out.unshift(Number(n % 256n))
    n /= 256n
  }
  for (const c of s) {
    if (c !== '1') break
    out.unshift(0)
  }
  return Uint8Array.from(out)
}

/// The did:key of a compressed secp256k1 public key.
export const didKeyOf = (compressed) => 'did:key:z' + base58(Uint8Array.of(0xe7, 0x01, ...compressed))

/// The `verify` that decide() takes, from noble's `secp256k1`: a compact low-S signature by a
/// secp256k1 did:key over SHA-256 of the message.
export const verifierFor = (secp256k1) => async (didKey, message, sig) => {
  const bytes = unbase58(String(didKey).replace(/^did:key:z/, ''))
  if (bytes[0] !== 0xe7 || bytes[1] !== 0x01) return false
  try {
    return secp256k1.verify(sig, await sha256(message), bytes.slice(2), { lowS: true })
  } catch {
    return false
  }
}

// ---- DAG-CBOR ------------------------------------------------------------------------------

/// Decodes strict DAG-CBOR: definite lengths, string map keys, tag 42 links, nothing after.
export function decodeCbor(bytes) {
  let pos = 0
  const need = (n) => {
    if (pos + n > bytes.length) refuse('truncated CBOR')
  }
  const arg = (info) => {
    if (info < 24) return info
    const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[info]
    if (!size) refuse('unsupported CBOR length')
    need(size)
    let v = 0
    for (let i = 0; i < size; i++) v = v * 256 + bytes[pos++]
    if (v > Number.MAX_SAFE_INTEGER) refuse('CBOR integer too large')
    return v
  }
  const item = (depth) => {
    if (depth > 64) refuse('CBOR nested too deep')
    need(1)
    const first = bytes[pos++]
    const major = first >> 5
    const info = first & 31
    switch (major) {
      case 0:
        return arg(info)
      case 1:
        return -1 - arg(info)
      case 2: {
        const n = arg(info)
        need(n)
        return bytes.slice(pos, (pos += n))
      }
      case 3: {
        const n = arg(info)
        need(n)
        return td.decode(bytes.slice(pos, (pos += n)))
      }
      case 4: {
        const n = arg(info)
        const out = []
        for (let i = 0; i < n; i++) out.push(item(depth + 1))
        return out
      }
      case 5: {
        const n = arg(info)
        const out = {}
        for (let i = 0; i < n; i++) {
          const k = item(depth + 1)
          if (typeof k !== 'string') refuse('CBOR map key is not a string')
          if (Object.hasOwn(out, k)) refuse('CBOR map key repeated')
          out[k] = item(depth + 1)
        }
        return out
      }
      case 6: {
        if (arg(info) !== 42) refuse('unsupported CBOR tag')
        const b = item(depth + 1)
        if (!(b instanceof Uint8Array) || b[0] !== 0) refuse('bad CID link')
        return new CID(b.slice(1))
      }
      case 7:
        if (info === 20) return false
        if (info === 21) return true
        if (info === 22) return null
        return refuse('unsupported CBOR simple value or float')
    }
  }
  const value = item(0)
  if (pos !== bytes.length) refuse('bytes after the CBOR value')
  return value
}

/// Canonical DAG-CBOR, for the values decodeCbor returns.
export function encodeCbor(value) {
  const out = []
  const head = (major, n) => {
    if (n < 24) out.push((major << 5) | n)
    else if (n < 256) out.push((major << 5) | 24, n)
    else if (n < 65536) out.push((major << 5) | 25, n >> 8, n & 255)
    else if (n < 2 ** 32) out.push((major << 5) | 26, (n >>> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
    else {
      const hi = Math.floor(n / 2 ** 32)
      const lo = n >>> 0
      out.push((major << 5) | 27, (hi >>> 24) & 255, (hi >> 16) & 255, (hi >> 8) & 255, hi & 255)
      out.push((lo >>> 24) & 255, (lo >> 16) & 255, (lo >> 8) & 255, lo & 255)
    }
  }
  const item = (v) => {
    if (v === null) out.push(0xf6)
    else if (v === true) out.push(0xf5)
    else if (v === false) out.push(0xf4)
    else if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) refuse('not an integer')
      v >= 0 ? head(0, v) : head(1, -1 - v)
    } else if (typeof v === 'string') {
      const b = te.encode(v)
      head(3, b.length)
      out.push(...b)
    } else if (v instanceof Uint8Array) {
      head(2, v.length)
      out.push(...v)
    } else if (v instanceof CID) {
      head(6, 42)
      head(2, v.bytes.length + 1)
      out.push(0, ...v.bytes)
    } else if (Array.isArray(v)) {
      head(4, v.length)
      v.forEach(item)
    } else {
      const keys = Object.keys(v).sort((a, b) => {
        const ea = te.encode(a)
        const eb = te.encode(b)
        if (ea.length !== eb.length) return ea.length - eb.length
        for (let i = 0; i < ea.length; i++) if (ea[i] !== eb[i]) return ea[i] - eb[i]
        return 0
      })
      head(5, keys.length)
      for (const k of keys) {
        item(k)
        item(v[k])
      }
    }
  }
  item(value)
  return Uint8Array.from(out)
}

// ---- CAR and the tree ----------------------------------------------------------------------

function varint(bytes, at) {
  let v = 0
  let shift = 0
  for (let i = at; i < bytes.length && i < at + 9; i++) {
    v += (bytes[i] & 127) * 2 ** shift
    shift += 7
    if (!(bytes[i] & 128)) return [v, i + 1]
  }
  return refuse('bad varint in CAR')
}

/// Reads a CAR, checking every block against its CID. Returns the blocks by CID string.
export async function readCar(bytes) {
  let [len, pos] = varint(bytes, 0)
  decodeCbor(bytes.slice(pos, pos + len))
  pos += len
  const blocks = new Map()
  while (pos < bytes.length) {
    ;[len, pos] = varint(bytes, pos)
    const end = pos + len
    if (end > bytes.length || len < 36) refuse('truncated CAR block')
    const cidBytes = bytes.slice(pos, pos + 36)
    if (cidBytes[0] !== 1 || cidBytes[2] !== 0x12 || cidBytes[3] !== 0x20) refuse('unsupported CID in CAR')
    const data = bytes.slice(pos + 36, end)
    if (!eq(await sha256(data), cidBytes.slice(4))) refuse('a CAR block does not match its CID')
    blocks.set(new CID(cidBytes).toString(), data)
    pos = end
  }
  return blocks
}

/// The entries of the tree at `root` found in `blocks`, and the subtrees not there (by CID,
/// counted): two trees hold the same records outside their entries exactly when their missing
/// subtrees are the same.
function walk(blocks, root) {
  const entries = new Map()
  const opaque = new Map()
  const visit = (cid, depth) => {
    if (depth > 64) refuse('tree too deep')
    const bytes = blocks.get(cid.toString())
    if (!bytes) {
      opaque.set(cid.toString(), (opaque.get(cid.toString()) || 0) + 1)
      return
    }
    const node = decodeCbor(bytes)
    if (!Array.isArray(node.e)) refuse('bad tree node')
    if (node.l) visit(node.l, depth + 1)
    let last = new Uint8Array(0)
    for (const e of node.e) {
      if (!(e.k instanceof Uint8Array) || !(e.v instanceof CID) || !Number.isInteger(e.p) || e.p > last.length) {
        refuse('bad tree entry')
      }
      const key = Uint8Array.from([...last.slice(0, e.p), ...e.k])
      const name = td.decode(key)
      if (entries.has(name)) refuse(`key ${name} appears twice`)
      entries.set(name, e.v.toString())
      last = key
      if (e.t) visit(e.t, depth + 1)
    }
  }
  visit(root, 0)
  return { entries, opaque }
}

// ---- what a payload is ---------------------------------------------------------------------

const COMMIT_KEYS = 'data,did,prev,rev,version'
export const EMPTY_TREE = 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm'

/// Recognises a payload for the account `did`: { kind: 'commit' | 'plc' | 'token', ... }.
export function classify(did, payload) {
  let value
  try {
    value = decodeCbor(payload)
  } catch {
    value = undefined
  }
  if (value && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array)) {
    if (Object.keys(value).sort().join() === COMMIT_KEYS) {
      if (value.version !== 3 || value.prev !== null || !(value.data instanceof CID) || typeof value.rev !== 'string') {
        refuse('a malformed commit')
      }
      if (value.did !== did) refuse(`a commit for another account (${value.did})`)
      if (!eq(encodeCbor(value), payload)) refuse('a commit that is not canonically encoded')
      return { kind: 'commit', commit: value }
    }
    if (value.type === 'plc_operation' || value.type === 'plc_tombstone') {
      if ('sig' in value) refuse('a PLC operation that is already signed')
      if (!eq(encodeCbor(value), payload)) refuse('a PLC operation that is not canonically encoded')
      return { kind: 'plc', op: value }
    }
    refuse(`a DAG-CBOR object that is neither a commit nor a PLC operation`)
  }
  let text
  try {
    text = td.decode(payload)
  } catch {
    refuse('a payload that is not a commit, a PLC operation or a token')
  }
  const parts = text.split('.')
  const json = (p) => {
    try {
      return JSON.parse(atob(p.replace(/-/g, '+').replace(/_/g, '/')))
    } catch {
      return null
    }
  }
  const header = parts.length === 2 && json(parts[0])
  const claims = parts.length === 2 && json(parts[1])
  if (!header || !claims) refuse('a payload that is not a commit, a PLC operation or a token')
  if (header.alg !== 'ES256K') refuse(`a token for ${header.alg}, not ES256K`)
  if (String(claims.iss || '').split('#')[0] !== did) refuse(`a token issued as ${claims.iss}, not as ${did}`)
  if (typeof claims.aud !== 'string' || !Number.isInteger(claims.exp)) refuse('a token without aud or exp')
  return { kind: 'token', claims }
}

// ---- commits -------------------------------------------------------------------------------

const b64 = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0))

/// Checks a commit against its evidence. `ctx`: { ownKey, earlierKeys: async () => [did:key],
/// verify: async (didKey, message, sig) => bool, lastRev }. Returns the changes, each with its
/// decoded record, for display.
export async function checkCommit(commit, evidence, ctx) {
  if (!evidence || typeof evidence.prevCommit !== 'string' || !Array.isArray(evidence.ops)) {
    refuse('a commit without the evidence of what it changes')
  }
  const prev = decodeCbor(b64(evidence.prevCommit))
  if (prev.did !== commit.did || !(prev.data instanceof CID) || !(prev.sig instanceof Uint8Array)) {
    refuse('the previous commit is another account’s, or malformed')
  }
  const { sig, ...unsignedPrev } = prev
  const prevBytes = encodeCbor(unsignedPrev)
  let vouched = (await ctx.verify(ctx.ownKey, prevBytes, sig)) || prev.data.toString() === EMPTY_TREE
  if (!vouched) {
    for (const k of await ctx.earlierKeys()) if (!vouched) vouched = await ctx.verify(k, prevBytes, sig)
  }
  if (!vouched) {
    refuse('the previous commit is not signed by this account’s key, now or before')
  }
  // TIDs sort as strings.
  if (!(commit.rev > prev.rev)) refuse(`revision ${commit.rev} is not newer than the previous ${prev.rev}`)
  if (ctx.lastRev && !(commit.rev > ctx.lastRev)) refuse(`revision ${commit.rev} was already signed or is older`)

  const blocks = evidence.blocks ? await readCar(b64(evidence.blocks)) : new Map()
  const after = walk(blocks, commit.data)
  const before = walk(blocks, prev.data)
  const listed = new Map()
  const changes = []
  for (const op of evidence.ops) {
    const shape = `${op.action}:${op.cid ? 'cid' : '-'}:${op.prev ? 'prev' : '-'}`
    if (!['create:cid:-', 'update:cid:prev', 'delete:-:prev'].includes(shape)) refuse(`a malformed op on ${op.path}`)
    if (listed.has(op.path)) refuse(`${op.path} is changed twice`)
    listed.set(op.path, op)
    let record = null
    if (op.cid) {
      const bytes = blocks.get(op.cid)
      if (!bytes) refuse(`the record of ${op.path} is missing`)
      record = decodeCbor(bytes)
      if (record.$type !== op.path.split('/')[0]) refuse(`the record at ${op.path} is a ${record.$type}`)
    }
    changes.push({ action: op.action, path: op.path, record })
  }
  // The records outside the entries found are the same on both sides…
  const same = (a, b) => a.size === b.size && [...a].every(([k, n]) => b.get(k) === n)
  if (!same(after.opaque, before.opaque)) refuse('the evidence does not show everything the commit changes')
  // …and the entries found differ in exactly the listed changes.
  for (const key of new Set([...after.entries.keys(), ...before.entries.keys()])) {
    const now = after.entries.get(key) || null
    const was = before.entries.get(key) || null
    const op = listed.get(key)
    if (now === was) {
      if (op) refuse(`${key} is listed but does not change`)
      continue
    }
    if (!op || (op.cid || null) !== now || (op.prev || null) !== was) refuse(`${key} changes, and not as listed`)
  }
  for (const key of listed.keys()) {
    if ((after.entries.get(key) || null) === (before.entries.get(key) || null)) refuse(`${key} is not shown to change`)
  }
  return changes
}

/// A line for a person: action, path and what the record says.
export function describeChange(c) {
  const r = c.record || {}
  const gist =
    (typeof r.text === 'string' && JSON.stringify(r.text.slice(0, 120))) ||
    (r.subject && typeof r.subject.uri === 'string' && r.subject.uri) ||
    (typeof r.subject === 'string' && r.subject) ||
    (typeof r.displayName === 'string' && JSON.stringify(r.displayName))
  return `${c.action} ${c.path}${gist ? ': ' + gist : ''}`
}

// ---- PLC operations ------------------------------------------------------------------------

function plcFields(op) {
  return {
    tombstone: op.type === 'plc_tombstone',
    rotationKeys: op.rotationKeys || [],
    atproto: (op.verificationMethods || {}).atproto || null,
    pds: ((op.services || {}).atproto_pds || {}).endpoint || null,
    handles: op.alsoKnownAs || [],
  }
}

/// The DID's current state from its PLC audit log: { current, cid, keys (every #atproto key) }.
export function plcHistory(audit) {
  const live = (Array.isArray(audit) ? audit : []).filter((e) => !e.nullified)
  const last = live[live.length - 1]
  if (!last || typeof last.cid !== 'string') refuse('the PLC directory has no operations for this DID')
  const keys = [...new Set(live.map((e) => ((e.operation || {}).verificationMethods || {}).atproto).filter(Boolean))]
  return { current: plcFields(last.operation), cid: last.cid, keys }
}

/// How `op` changes the DID for the signer holding `ownKey`: { lines, identity, removesOwnKey }.
export function plcChange(history, op, ownKey) {
  if (op.prev !== history.cid) refuse('a PLC operation that does not follow this DID’s current state')
  const before = history.current
  const after = plcFields(op)
  if (after.tombstone) return { lines: ['the DID is tombstoned: deleted for good'], identity: true, removesOwnKey: true }
  const show = (v) => (Array.isArray(v) ? v.join(', ') || '(none)' : v || '(none)')
  const lines = []
  const diff = (label, a, b) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) lines.push(`${label}: ${show(a)} → ${show(b)}`)
  }
  diff('rotation keys', before.rotationKeys, after.rotationKeys)
  diff('signing key', before.atproto, after.atproto)
  diff('PDS', before.pds, after.pds)
  diff('handle', before.handles, after.handles)
  const was = before.rotationKeys.indexOf(ownKey)
  const now = after.rotationKeys.indexOf(ownKey)
  const removesOwnKey = was >= 0 && now < 0
  const demoted = was >= 0 && now > was
  const outranked = now >= 0 && after.rotationKeys.slice(0, now).some((k) => !before.rotationKeys.includes(k))
  // Moving to another PDS is a move of the account: asked like a change of control.
  const identity = before.atproto !== after.atproto || before.pds !== after.pds || removesOwnKey || demoted || outranked
  return { lines, identity, removesOwnKey }
}

// ---- tokens --------------------------------------------------------------------------------

export const MAX_TOKEN_SECS = 7 * 24 * 60 * 60

/// Checks a token's life; returns whether it can move the account (and so must be asked for).
export function checkToken(claims, nowSecs) {
  if (claims.exp <= nowSecs) refuse('a token that has already expired')
  if (claims.exp - nowSecs > MAX_TOKEN_SECS) refuse(`a token valid for ${claims.exp - nowSecs} s`)
  const lxm = claims.lxm
  return (
    typeof lxm !== 'string' ||
    lxm.startsWith('com.atproto.identity.') ||
    lxm.startsWith('com.atproto.admin.') ||
    ['com.atproto.server.createAccount', 'com.atproto.server.deleteAccount', 'com.atproto.server.deactivateAccount', 'com.atproto.repo.importRepo'].includes(lxm)
  )
}

// ---- the decision ----------------------------------------------------------------------------

/// Decides one sign request. `ctx`: { did, ownKey (did:key), plc (URL), lastRev,
///   verify: async (didKey, message, sig) => bool,
///   approve: async ({ kind, lines, identity, removesOwnKey }) => bool  (a person, or a policy) }.
/// Returns { sign: true, summary, rev } or { sign: false, why }. Never trusts `msg.ops`.
export async function decide(msg, ctx) {
  try {
    const payload = b64(msg.payload)
    const what = classify(ctx.did, payload)
    const audit = async () => {
      const res = await fetch(`${ctx.plc}/${ctx.did}/log/audit`)
      if (!res.ok) refuse(`the PLC directory answered ${res.status}`)
      return plcHistory(await res.json())
    }
    if (what.kind === 'commit') {
      const changes = await checkCommit(what.commit, msg.commit, {
        ownKey: ctx.ownKey,
        earlierKeys: async () => (await audit()).keys,
        verify: ctx.verify,
        lastRev: ctx.lastRev,
      })
      const lines = changes.length ? changes.map(describeChange) : [`the same records at revision ${what.commit.rev}`]
      if (!(await ctx.approve({ kind: 'commit', lines, identity: false, removesOwnKey: false }))) refuse('you declined')
      return { sign: true, summary: lines.join('; '), rev: what.commit.rev }
    }
    if (what.kind === 'plc') {
      const change = plcChange(await audit(), what.op, ctx.ownKey)
      if (!(await ctx.approve({ kind: 'plc', ...change }))) {
        refuse(`a PLC operation you did not approve (${change.lines.join('; ')})`)
      }
      return { sign: true, summary: `PLC operation: ${change.lines.join('; ')}` }
    }
    const movesAccount = checkToken(what.claims, Math.floor(Date.now() / 1000))
    const lines = [`a token for ${what.claims.lxm || 'any method'} at ${what.claims.aud}`]
    if (what.claims.lxm === 'com.atproto.server.createAccount') {
      lines.push(`It lets ${what.claims.aud} create your account there: the first step of moving to that server.`)
    }
    if (!(await ctx.approve({ kind: 'token', lines, identity: movesAccount, removesOwnKey: false }))) {
      refuse(`${lines[0]}, which you did not approve`)
    }
    return { sign: true, summary: lines[0] }
  } catch (e) {
    if (e instanceof Refusal) return { sign: false, why: e.message }
    return { sign: false, why: `a request that could not be checked (${e.message})` }
  }
}

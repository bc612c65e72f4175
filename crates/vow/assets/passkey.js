// The user's signing key, derived in the browser from a passkey's PRF output: the same
// derivation as the original Vow's (see signer/derive.rs). Shared by the account page and the
// leave page. Nothing here stores anything.
import { secp256k1 } from './noble-secp256k1.js'
import { didKeyOf } from './verify.js'

const te = new TextEncoder()
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
export const PRF_SALT = sha256(te.encode('Vow PDS Commit Signing Key Derivation'))

export const NO_PRF =
  'This passkey cannot derive keys (no PRF support). Use a recent browser and authenticator ' +
  '(Chrome 118+, Safari 18+, a recent security key or platform passkey).'

/** A signing key from raw secp256k1 private key bytes: { did, sign(message) }. */
export function keyFromSecret(priv) {
  const pub = secp256k1.getPublicKey(priv, true)
  return {
    did: didKeyOf(pub),
    // Compact 64-byte r||s, low-S, RFC 6979, over SHA-256 of the message.
    sign: async (message) => secp256k1.sign(await sha256(message), priv, { lowS: true }).toCompactRawBytes(),
  }
}

/** The signing key a passkey's PRF output derives. */
export async function deriveKey(prfOutput) {
  const ikm = await crypto.subtle.importKey('raw', prfOutput, 'HKDF', false, ['deriveBits'])
  const bits = await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: te.encode('Vow PDS Signing Key'), info: te.encode('K256') },
    ikm,
    256,
  )
  return keyFromSecret(new Uint8Array(bits))
}

export function prfFirst(credential) {
  const ext = credential.getClientExtensionResults()
  const first = ext && ext.prf && ext.prf.results && ext.prf.results.first
  return first ? new Uint8Array(first) : null
}

/** The PRF output of an assertion by `credentialId` (or any passkey of this site when null). */
export async function prfFromAssertion(credentialId) {
  const assertion = await navigator.credentials.get({
    publicKey: {
      challenge: crypto.getRandomValues(new Uint8Array(32)),
      allowCredentials: credentialId ? [{ type: 'public-key', id: credentialId }] : [],
      userVerification: 'preferred',
      timeout: 60000,
      extensions: { prf: { eval: { first: await PRF_SALT } } },
    },
  })
  return prfFirst(assertion)
}

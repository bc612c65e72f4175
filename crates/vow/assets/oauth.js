// The OAuth authorize page's passkey sign-in: one touch, no password typed. The server sends a
// challenge; any passkey of this site answers it (discoverable credentials); the server finds the
// account by the credential and checks the assertion against its registered public key.
const $ = (id) => document.getElementById(id)
const b64url = (bytes) => {
  let s = ''
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

async function post(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), credentials: 'same-origin' })
  const data = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(data.message || data.error || `HTTP ${res.status}`)
  return data
}

async function passkeySignIn() {
  $('passkey-status').textContent = 'Waiting for your passkey…'
  const { challenge } = await post('/oauth/authorize/passkey-challenge', {})
  const assertion = await navigator.credentials.get({
    publicKey: { challenge: new TextEncoder().encode(challenge), allowCredentials: [], userVerification: 'preferred', timeout: 60000 },
  })
  await post('/oauth/authorize/passkey', {
    challenge,
    credentialId: b64url(assertion.rawId),
    clientDataJSON: b64url(assertion.response.clientDataJSON),
    authenticatorData: b64url(assertion.response.authenticatorData),
    signature: b64url(assertion.response.signature),
  })
  location.reload()
}

if ($('passkey-signin')) {
  $('passkey-signin').addEventListener('click', () =>
    passkeySignIn().catch((e) => {
      $('passkey-status').textContent = e.message || String(e)
      $('passkey-status').className = 'error'
    }),
  )
}
document.body.dataset.ready = '1'

-- The passkey an account registered (WebAuthn credential id, base64url, and its P-256 key),
-- alongside accounts.signing_key, the did:key of the user's secp256k1 key.
ALTER TABLE accounts ADD COLUMN passkey_credential_id TEXT;
ALTER TABLE accounts ADD COLUMN passkey_public_key BLOB;

-- Single-use challenges for key registration (WebAuthn ceremonies and proofs of possession).
CREATE TABLE key_challenges (
    challenge TEXT PRIMARY KEY NOT NULL,
    did TEXT NOT NULL REFERENCES accounts(did) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

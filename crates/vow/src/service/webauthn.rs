//! The WebAuthn checks Vow needs, for ES256 passkeys only: a registration ceremony (attestation
//! `none`, or a `packed` self-attestation, whose statement is not checked) and assertions over
//! caller-chosen challenges. Hand-written rather than webauthn-rs because the signer uses the
//! bytes to sign as the assertion challenge, which that library's ceremony API does not allow,
//! and because the subset is small: parse, compare, verify one P-256 signature.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Who the ceremonies are for.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    /// The RP ID: the PDS hostname.
    pub id: String,
    /// The origin the account pages are served from, e.g. `https://pds.example`.
    pub origin: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebauthnError {
    #[error("clientDataJSON is malformed")]
    ClientData,
    #[error("wrong ceremony type {0:?}")]
    Type(String),
    #[error("the challenge is not the one issued")]
    Challenge,
    #[error("origin {0:?} is not this PDS")]
    Origin(String),
    #[error("authenticator data is malformed")]
    AuthData,
    #[error("the RP ID hash is not this PDS's")]
    RpId,
    #[error("user presence flag not set")]
    UserPresence,
    #[error("attestation object is malformed")]
    Attestation,
    #[error("only ES256 (P-256) passkeys are supported")]
    Algorithm,
    #[error("signature does not verify")]
    Signature,
}

/// A verified new credential.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub id: Vec<u8>,
    /// The P-256 public key, SEC1 compressed.
    pub public_key: Vec<u8>,
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
}

fn check_client_data(rp: &RelyingParty, raw: &[u8], kind: &str, challenge: &[u8]) -> Result<(), WebauthnError> {
    let data: ClientData = serde_json::from_slice(raw).map_err(|_| WebauthnError::ClientData)?;
    if data.kind != kind {
        return Err(WebauthnError::Type(data.kind));
    }
    let got = URL_SAFE_NO_PAD.decode(data.challenge.trim_end_matches('=')).map_err(|_| WebauthnError::Challenge)?;
    if got != challenge {
        return Err(WebauthnError::Challenge);
    }
    if data.origin != rp.origin {
        return Err(WebauthnError::Origin(data.origin));
    }
    Ok(())
}

/// Checks the RP ID hash and flags; returns the flags byte.
fn check_auth_data(rp: &RelyingParty, auth: &[u8]) -> Result<u8, WebauthnError> {
    if auth.len() < 37 {
        return Err(WebauthnError::AuthData);
    }
    if auth[..32] != Sha256::digest(rp.id.as_bytes())[..] {
        return Err(WebauthnError::RpId);
    }
    let flags = auth[32];
    if flags & 0x01 == 0 {
        return Err(WebauthnError::UserPresence);
    }
    Ok(flags)
}

/// Verifies a registration: `clientDataJSON` of type `webauthn.create` over `challenge` from
/// our origin, and an attestation object whose authenticator data carries an ES256 key.
pub fn verify_registration(
    rp: &RelyingParty,
    challenge: &[u8],
    client_data_json: &[u8],
    attestation_object: &[u8],
) -> Result<NewCredential, WebauthnError> {
    check_client_data(rp, client_data_json, "webauthn.create", challenge)?;
    let att: cbor::Value = cbor::decode(attestation_object).map_err(|_| WebauthnError::Attestation)?;
    let auth = att.get_bytes("authData").ok_or(WebauthnError::Attestation)?;
    let flags = check_auth_data(rp, auth)?;
    if flags & 0x40 == 0 || auth.len() < 55 {
        return Err(WebauthnError::AuthData);
    }
    let id_len = u16::from_be_bytes([auth[53], auth[54]]) as usize;
    let id_end = 55 + id_len;
    let id = auth.get(55..id_end).ok_or(WebauthnError::AuthData)?.to_vec();
    let cose = cbor::decode_prefix(&auth[id_end..]).map_err(|_| WebauthnError::AuthData)?;
    let (kty, alg, crv) = (cose.get_int(1), cose.get_int(3), cose.get_int(-1));
    if kty != Some(2) || alg != Some(-7) || crv != Some(1) {
        return Err(WebauthnError::Algorithm);
    }
    let (x, y) = (cose.get_int_bytes(-2), cose.get_int_bytes(-3));
    let (Some(x), Some(y)) = (x, y) else { return Err(WebauthnError::AuthData) };
    if x.len() != 32 || y.len() != 32 {
        return Err(WebauthnError::AuthData);
    }
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| WebauthnError::Algorithm)?;
    Ok(NewCredential { id, public_key: key.to_sec1_point(true).as_bytes().to_vec() })
}

/// Verifies an assertion by the passkey `public_key` (SEC1) over `challenge`.
pub fn verify_assertion(
    rp: &RelyingParty,
    public_key: &[u8],
    challenge: &[u8],
    authenticator_data: &[u8],
    client_data_json: &[u8],
    der_signature: &[u8],
) -> Result<(), WebauthnError> {
    check_client_data(rp, client_data_json, "webauthn.get", challenge)?;
    check_auth_data(rp, authenticator_data)?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| WebauthnError::Algorithm)?;
    let sig = p256::ecdsa::Signature::from_der(der_signature).map_err(|_| WebauthnError::Signature)?;
    // Authenticators do not normalise S; WebAuthn accepts either form.
    let sig = sig.normalize_s();
    let mut signed = authenticator_data.to_vec();
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    key.verify(&signed, &sig).map_err(|_| WebauthnError::Signature)
}

/// Just enough CBOR for attestation objects and COSE keys (maps keyed by text or integers,
/// byte and text strings, integers, arrays). WebAuthn CBOR is not DAG-CBOR (integer map keys),
/// so the data-model decoder does not apply.
mod cbor {
    #[derive(Debug)]
    pub enum Value<'a> {
        Int(i64),
        Bytes(&'a [u8]),
        Text(&'a str),
        Map(Vec<(Value<'a>, Value<'a>)>),
        Other,
    }

    impl<'a> Value<'a> {
        fn entry(&self, pred: impl Fn(&Value<'a>) -> bool) -> Option<&Value<'a>> {
            match self {
                Value::Map(entries) => entries.iter().find(|(k, _)| pred(k)).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn get_bytes(&self, key: &str) -> Option<&'a [u8]> {
            match self.entry(|k| matches!(k, Value::Text(t) if *t == key)) {
                Some(Value::Bytes(b)) => Some(b),
                _ => None,
            }
        }
        pub fn get_int(&self, key: i64) -> Option<i64> {
            match self.entry(|k| matches!(k, Value::Int(i) if *i == key)) {
                Some(Value::Int(v)) => Some(*v),
                _ => None,
            }
        }
        pub fn get_int_bytes(&self, key: i64) -> Option<&'a [u8]> {
            match self.entry(|k| matches!(k, Value::Int(i) if *i == key)) {
                Some(Value::Bytes(b)) => Some(b),
                _ => None,
            }
        }
    }

    pub struct Malformed;

    pub fn decode(bytes: &[u8]) -> Result<Value<'_>, Malformed> {
        let (v, rest) = item(bytes, 0)?;
        if rest.is_empty() { Ok(v) } else { Err(Malformed) }
    }

    /// Decodes one item and ignores what follows (COSE keys are followed by extensions).
    pub fn decode_prefix(bytes: &[u8]) -> Result<Value<'_>, Malformed> {
        item(bytes, 0).map(|(v, _)| v)
    }

    fn head(bytes: &[u8]) -> Result<(u8, u64, &[u8]), Malformed> {
        let (&first, rest) = bytes.split_first().ok_or(Malformed)?;
        let major = first >> 5;
        let info = first & 0x1f;
        let (arg, rest) = match info {
            0..=23 => (info as u64, rest),
            24..=27 => {
                let n = 1usize << (info - 24);
                if rest.len() < n {
                    return Err(Malformed);
                }
                let arg = rest[..n].iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
                (arg, &rest[n..])
            }
            _ => return Err(Malformed),
        };
        Ok((major, arg, rest))
    }

    fn take(rest: &[u8], len: u64) -> Result<(&[u8], &[u8]), Malformed> {
        let n = usize::try_from(len).map_err(|_| Malformed)?;
        if rest.len() < n { Err(Malformed) } else { Ok(rest.split_at(n)) }
    }

    fn item(bytes: &[u8], depth: usize) -> Result<(Value<'_>, &[u8]), Malformed> {
        if depth > 8 {
            return Err(Malformed);
        }
        let (major, arg, rest) = head(bytes)?;
        let take = |rest| take(rest, arg);
        match major {
            0 => Ok((Value::Int(i64::try_from(arg).map_err(|_| Malformed)?), rest)),
            1 => Ok((Value::Int(-1 - i64::try_from(arg).map_err(|_| Malformed)?), rest)),
            2 => take(rest).map(|(b, r)| (Value::Bytes(b), r)),
            3 => {
                let (b, r) = take(rest)?;
                Ok((Value::Text(std::str::from_utf8(b).map_err(|_| Malformed)?), r))
            }
            4 | 5 => {
                let n = usize::try_from(arg).map_err(|_| Malformed)?;
                if n > rest.len() {
                    return Err(Malformed);
                }
                let mut rest = rest;
                if major == 4 {
                    for _ in 0..n {
                        rest = item(rest, depth + 1)?.1; // arrays are skipped, not needed
                    }
                    Ok((Value::Other, rest))
                } else {
                    let mut entries = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (k, r) = item(rest, depth + 1)?;
                        let (v, r) = item(r, depth + 1)?;
                        entries.push((k, v));
                        rest = r;
                    }
                    Ok((Value::Map(entries), rest))
                }
            }
            7 => Ok((Value::Other, rest)),
            _ => Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;

    fn rp() -> RelyingParty {
        RelyingParty { id: "pds.test".into(), origin: "https://pds.test".into() }
    }

    /// What an authenticator would send for an assertion over `challenge`.
    fn assertion(key: &SigningKey, rp_id: &str, origin: &str, challenge: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut auth = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth.push(0x05); // UP | UV
        auth.extend_from_slice(&7u32.to_be_bytes());
        let client = serde_json::to_vec(&serde_json::json!({
            "type": "webauthn.get", "challenge": URL_SAFE_NO_PAD.encode(challenge), "origin": origin,
        }))
        .unwrap();
        let mut signed = auth.clone();
        signed.extend_from_slice(&Sha256::digest(&client));
        let sig: p256::ecdsa::Signature = key.sign(&signed);
        (auth, client, sig.to_der().as_bytes().to_vec())
    }

    #[test]
    fn assertions_are_checked_against_key_challenge_origin_and_rp() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let public = key.verifying_key().to_sec1_point(true).as_bytes().to_vec();
        let challenge = b"unsigned commit bytes";
        let (auth, client, sig) = assertion(&key, "pds.test", "https://pds.test", challenge);
        assert_eq!(verify_assertion(&rp(), &public, challenge, &auth, &client, &sig), Ok(()));
        assert_eq!(verify_assertion(&rp(), &public, b"other", &auth, &client, &sig), Err(WebauthnError::Challenge));
        let (a, c, s) = assertion(&key, "pds.test", "https://evil.test", challenge);
        assert!(matches!(verify_assertion(&rp(), &public, challenge, &a, &c, &s), Err(WebauthnError::Origin(_))));
        let (a, c, s) = assertion(&key, "evil.test", "https://pds.test", challenge);
        assert_eq!(verify_assertion(&rp(), &public, challenge, &a, &c, &s), Err(WebauthnError::RpId));
        let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let (a, c, s) = assertion(&other, "pds.test", "https://pds.test", challenge);
        assert_eq!(verify_assertion(&rp(), &public, challenge, &a, &c, &s), Err(WebauthnError::Signature));
        let mut no_presence = auth.clone();
        no_presence[32] = 0;
        assert_eq!(
            verify_assertion(&rp(), &public, challenge, &no_presence, &client, &sig),
            Err(WebauthnError::UserPresence)
        );
    }

    #[test]
    fn malformed_registrations_are_errors_not_panics() {
        let client = serde_json::to_vec(&serde_json::json!({
            "type": "webauthn.create", "challenge": URL_SAFE_NO_PAD.encode(b"c"), "origin": "https://pds.test",
        }))
        .unwrap();
        for junk in
            [&b""[..], &[0xa1, 0x68][..], &[0xff; 40][..], &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..]]
        {
            assert!(verify_registration(&rp(), b"c", &client, junk).is_err());
        }
        assert_eq!(verify_registration(&rp(), b"other", &client, &[]).unwrap_err(), WebauthnError::Challenge);
    }
}

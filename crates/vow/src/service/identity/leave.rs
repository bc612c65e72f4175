//! Leaving, or recovering, without this PDS: with only their key, a user changes their DID.
//! Vow need not be running; the PLC directory is asked directly. The key must be one of the
//! DID's rotation keys, as the user's key is after the handover and a recovery key is once
//! added.

use atproto::crypto::{Keypair, PublicKey};

use super::plc::{Operation, PlcClient, Service};

/// What a PDS that holds keys of its own asks of the DID (its `getRecommendedDidCredentials`):
/// its signing key as `#atproto`, and its rotation key among the rotation keys.
#[derive(Debug, Default, Clone)]
pub struct PdsKeys<'a> {
    pub signing_key: Option<&'a str>,
    /// Added after the DID's current rotation keys, so the user's key keeps its rank.
    pub rotation_key: Option<&'a str>,
}

/// Signs and submits an operation that changes the DID's PDS endpoint to `pds`, with the keys
/// the new PDS asks for; the user's own rotation key stays first. Returns the operation.
pub async fn set_pds(
    plc: &PlcClient,
    key: &Keypair,
    did: &str,
    pds: &str,
    keys: PdsKeys<'_>,
) -> Result<Operation, String> {
    let url = reqwest::Url::parse(pds).map_err(|e| format!("{pds} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{pds} is not an http(s) URL"));
    }
    let parse = |k: Option<&str>| {
        k.map(|k| {
            PublicKey::from_did_key(k).map(|p| p.to_did_key()).map_err(|e| format!("{k} is not a usable did:key: {e}"))
        })
        .transpose()
    };
    let (signing_key, rotation_key) = (parse(keys.signing_key)?, parse(keys.rotation_key)?);
    let endpoint = pds.trim_end_matches('/').to_owned();
    update(plc, key, did, |op| {
        op.services.insert("atproto_pds".into(), Service { kind: "AtprotoPersonalDataServer".into(), endpoint });
        if let Some(k) = signing_key {
            op.verification_methods.insert("atproto".into(), k);
        }
        if let Some(k) = rotation_key
            && !op.rotation_keys.contains(&k)
        {
            op.rotation_keys.push(k);
        }
    })
    .await
}

/// A service-auth token issued by `did` and signed by `key` (its `#atproto` key), for `aud`
/// and the method `lxm`, valid for `secs`: what another PDS's `createAccount` asks of an
/// account moving there, made without the old PDS.
pub fn service_token(key: &Keypair, did: &str, aud: &str, lxm: &str, secs: i64) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256K"}"#);
    let jti = crate::service::auth::random_code(16);
    let claims = serde_json::json!({ "iss": did, "aud": aud, "lxm": lxm, "iat": now, "exp": now + secs, "jti": jti });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{claims}");
    let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()));
    format!("{input}.{sig}")
}

/// Signs and submits an operation that installs `new_key` as the DID's `#atproto` key, in
/// place of the old one among the rotation keys too (a recovery key signing this stays where
/// it is, above it); returns it. This is how a recovery key restores an account whose passkey
/// was lost or whose key was misused.
pub async fn set_key(plc: &PlcClient, key: &Keypair, did: &str, new_key: &str) -> Result<Operation, String> {
    let parsed = PublicKey::from_did_key(new_key).map_err(|e| format!("{new_key} is not a usable did:key: {e}"))?;
    let new_key = parsed.to_did_key();
    let signer = key.public_key().to_did_key();
    update(plc, key, did, |op| {
        let old = op.verification_methods.insert("atproto".into(), new_key.clone());
        let mut keys: Vec<String> = Vec::with_capacity(op.rotation_keys.len() + 1);
        for k in op.rotation_keys.drain(..) {
            let k = if Some(&k) == old.as_ref() && k != signer { new_key.clone() } else { k };
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        if !keys.contains(&new_key) {
            keys.push(new_key.clone());
        }
        op.rotation_keys = keys;
    })
    .await
}

/// The operation after the DID's latest, changed by `change`, signed by `key` (which must be a
/// rotation key) and submitted.
async fn update(
    plc: &PlcClient,
    key: &Keypair,
    did: &str,
    change: impl FnOnce(&mut Operation),
) -> Result<Operation, String> {
    let last =
        plc.last_operation(did).await.map_err(|e| format!("the PLC directory has no usable log for {did}: {e}"))?;
    let mine = key.public_key().to_did_key();
    if !last.rotation_keys.contains(&mine) {
        return Err(format!(
            "{mine} is not a rotation key of {did} (its rotation keys: {}); the PLC directory would refuse the change",
            last.rotation_keys.join(", ")
        ));
    }
    let mut op = last.successor();
    change(&mut op);
    let op = op.sign(key);
    plc.submit(did, &op).await.map_err(|e| format!("the PLC directory refused the operation: {e}"))?;
    Ok(op)
}

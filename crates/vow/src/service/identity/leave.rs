//! Leaving, or recovering, without this PDS: with only their key, a user changes their DID.
//! Vow need not be running; the PLC directory is asked directly. The key must be one of the
//! DID's rotation keys, as the user's key is after the handover and a recovery key is once
//! added.

use atproto::crypto::{Keypair, PublicKey};

use super::plc::{Operation, PlcClient, Service};

/// Signs and submits an operation that changes only the DID's PDS endpoint to `pds`; returns it.
pub async fn set_pds(plc: &PlcClient, key: &Keypair, did: &str, pds: &str) -> Result<Operation, String> {
    let url = reqwest::Url::parse(pds).map_err(|e| format!("{pds} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{pds} is not an http(s) URL"));
    }
    let endpoint = pds.trim_end_matches('/').to_owned();
    update(plc, key, did, |op| {
        op.services.insert("atproto_pds".into(), Service { kind: "AtprotoPersonalDataServer".into(), endpoint });
    })
    .await
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

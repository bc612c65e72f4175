//! Leaving without this PDS: with only their key, a user points their DID at another PDS. Vow
//! need not be running; the PLC directory is asked directly. The key must be one of the DID's
//! rotation keys, as the user's key is after the handover.

use atproto::crypto::Keypair;

use super::plc::{Operation, PlcClient, Service};

/// Signs and submits an operation that changes only the DID's PDS endpoint to `pds`; returns it.
pub async fn set_pds(plc: &PlcClient, key: &Keypair, did: &str, pds: &str) -> Result<Operation, String> {
    let url = reqwest::Url::parse(pds).map_err(|e| format!("{pds} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{pds} is not an http(s) URL"));
    }
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
    let endpoint = pds.trim_end_matches('/').to_owned();
    op.services.insert("atproto_pds".into(), Service { kind: "AtprotoPersonalDataServer".into(), endpoint });
    let op = op.sign(key);
    plc.submit(did, &op).await.map_err(|e| format!("the PLC directory refused the operation: {e}"))?;
    Ok(op)
}

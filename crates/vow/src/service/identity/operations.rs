//! User-signed identity operations: the mailed token that guards `signPlcOperation`, the
//! operation built from the DID's latest PLC state and signed by the user's signer (which
//! shows the person every change before it signs), and the checks before an operation is
//! submitted for an account that lives here.

use std::collections::BTreeMap;

use super::handover::{Handover, sign_operation};
use super::plc::{Operation, Service};
use crate::error::{XrpcError, XrpcResult};
use crate::store::db::accounts::Account;

use crate::service::auth::codes::{self, Purpose};

/// A fresh token for `did` (replacing any earlier one), stored hashed; returns it in clear,
/// to be mailed.
pub async fn issue_token(h: &Handover, did: &str) -> XrpcResult<String> {
    Ok(codes::issue(&h.db, did, Purpose::PlcOperation).await?)
}

/// The fields a caller asks for; those left out keep their current value.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requested {
    pub rotation_keys: Option<Vec<String>>,
    pub also_known_as: Option<Vec<String>>,
    pub verification_methods: Option<BTreeMap<String, String>>,
    pub services: Option<BTreeMap<String, Service>>,
}

/// `signPlcOperation`: checks the mailed token, builds the operation that follows the DID's
/// latest one with the requested fields, has it signed (by the user's signer once the account
/// has a key), and only then uses the token up.
pub async fn sign_requested(h: &Handover, account: &Account, token: &str, req: Requested) -> XrpcResult<Operation> {
    if !account.did.starts_with("did:plc:") {
        return Err(XrpcError::invalid_request("Only did:plc identities have PLC operations"));
    }
    match codes::check(&h.db, token, Purpose::PlcOperation).await? {
        Ok(owner) if owner == account.did => {}
        Ok(_) => return Err(codes::Refused::Invalid.into()),
        Err(refused) => return Err(refused.into()),
    }
    for key in req.rotation_keys.iter().flatten().chain(req.verification_methods.iter().flat_map(|m| m.values())) {
        atproto::crypto::PublicKey::from_did_key(key)
            .map_err(|e| XrpcError::invalid_request(format!("{key:?} is not a usable did:key: {e}")))?;
    }
    let last = h
        .plc
        .last_operation(&account.did)
        .await
        .map_err(|e| XrpcError::upstream("Could not read the DID's PLC log", e))?;
    let mut op = last.successor();
    if let Some(keys) = req.rotation_keys {
        op.rotation_keys = keys;
    }
    if let Some(aka) = req.also_known_as {
        op.also_known_as = aka;
    }
    if let Some(methods) = req.verification_methods {
        op.verification_methods = methods;
    }
    if let Some(services) = req.services {
        op.services = services;
    }
    if op.rotation_keys.is_empty() {
        return Err(XrpcError::invalid_request("An operation needs at least one rotation key"));
    }
    let signed = sign_operation(h, account, op, "sign_plc_operation").await?;
    // Used up only now: a declined or timed-out signature leaves the token for another try.
    codes::take(&h.db, Some(&account.did), token, Purpose::PlcOperation).await??;
    tracing::info!(did = %account.did, "PLC operation signed at the user's request");
    Ok(signed)
}

/// What `submitPlcOperation` accepts for an account that lives here: a signed operation that
/// keeps this PDS as the account's PDS and the account's registered key as its `#atproto` key
/// (a change of either is a move, which the new PDS submits).
pub fn check_submission(account: &Account, op: &Operation, public_url: &str) -> Result<(), String> {
    if op.kind != "plc_operation" {
        return Err(format!("a {:?} cannot be submitted here; only plc_operation", op.kind));
    }
    if op.sig.is_none() {
        return Err("the operation is not signed".into());
    }
    let pds = op.services.get("atproto_pds");
    if pds.map(|s| (s.kind.as_str(), s.endpoint.trim_end_matches('/')))
        != Some(("AtprotoPersonalDataServer", public_url))
    {
        return Err(format!("the operation must keep {public_url} as the account's PDS (atproto_pds)"));
    }
    let key = op.verification_methods.get("atproto");
    match (&account.signing_key, key) {
        (Some(ours), Some(theirs)) if ours == theirs => {}
        (Some(ours), _) => return Err(format!("the operation must keep the account's key {ours} as its #atproto key")),
        (None, _) => return Err("register a signing key (a passkey or `vow signer`) first".into()),
    }
    if op.rotation_keys.is_empty() {
        return Err("the operation has no rotation keys".into());
    }
    // The handle changes through updateHandle, which checks it; here it must stay.
    let handle = format!("at://{}", account.handle);
    if op.also_known_as.first() != Some(&handle) {
        return Err(format!(
            "the operation must keep {handle} as the first alsoKnownAs (change handles with updateHandle)"
        ));
    }
    Ok(())
}

/// Submits an operation for an account that lives here (checked by [`check_submission`], or
/// built here) and announces it with `#identity`; the PLC directory's refusal is an error.
/// After it the DID's cached document is stale: the caller forgets it.
pub async fn submit(h: &Handover, account: &Account, op: &Operation) -> XrpcResult<()> {
    let did = account.did.as_str();
    h.plc.submit(did, op).await.map_err(|e| XrpcError::upstream("The PLC directory refused the operation", e))?;
    tracing::info!(%did, "PLC operation submitted");
    let mut events = h.firehose.sequencer().await?;
    let mut tx = h.db.begin().await?;
    events
        .append(&mut tx, crate::service::events::Event::Identity { did, handle: Some(account.handle.as_str()) })
        .await?;
    tx.commit().await?;
    events.publish();
    Ok(())
}

/// Makes `recovery` the DID's first rotation key, above the user's key (replacing any other
/// key there), with an operation the user's signer signs after the person approves it. Within
/// the PLC directory's 72-hour window the recovery key can then undo what the user's key signs,
/// and at any time install a new key (`vow identity set-key`).
pub async fn set_recovery_key(h: &Handover, account: &Account, recovery: &str) -> XrpcResult<Operation> {
    let Some(user_key) = account.signing_key.clone() else {
        return Err(XrpcError::named("SigningKeyRequired", "Register a passkey first: it signs the change"));
    };
    if !account.did.starts_with("did:plc:") {
        return Err(XrpcError::invalid_request("Only did:plc identities have rotation keys"));
    }
    let recovery = atproto::crypto::PublicKey::from_did_key(recovery.trim())
        .map_err(|e| XrpcError::invalid_request(format!("The recovery key is not a usable did:key: {e}")))?
        .to_did_key();
    if recovery == user_key {
        return Err(XrpcError::invalid_request("The recovery key must be another key than your signing key"));
    }
    let last = h
        .plc
        .last_operation(&account.did)
        .await
        .map_err(|e| XrpcError::upstream("Could not read the DID's PLC log", e))?;
    if !last.rotation_keys.contains(&user_key) {
        return Err(XrpcError::invalid_request("Your key is not a rotation key of your DID; it cannot add one"));
    }
    let mut op = last.successor();
    op.rotation_keys = vec![recovery, user_key];
    let op = sign_operation(h, account, op, "set_recovery_key").await?;
    submit(h, account, &op).await?;
    Ok(op)
}

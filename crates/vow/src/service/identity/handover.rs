//! Key registration and the handover: one PLC operation, signed by the PDS rotation key, that
//! makes the user's key the account's `#atproto` key and its only rotation key (optionally
//! below a recovery key the user supplies, which can then undo what the user's key signs). After it the PDS can sign nothing for the
//! account.

use atproto::crypto::{Algorithm, PublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;

use crate::error::{XrpcError, XrpcResult};
use crate::service::webauthn::NewCredential;
use crate::store::db::{self, accounts};

/// How long a registration challenge stays valid.
const CHALLENGE_TTL_SECS: i64 = 5 * 60;

/// Key registration and identity operations as a service: what they need, and nothing else.
#[derive(Clone)]
pub struct Handover {
    pub db: sqlx::SqlitePool,
    pub plc: crate::service::identity::plc::PlcClient,
    /// The PDS's rotation key: it signs the handover, and nothing after it.
    pub rotation_key: std::sync::Arc<atproto::crypto::Keypair>,
    pub firehose: std::sync::Arc<crate::service::firehose::Firehose>,
    pub signers: std::sync::Arc<crate::service::signer::SignerHub>,
    /// Shared with the write pipeline: a key change is ordered with the account's writes.
    pub locks: std::sync::Arc<crate::service::repo::writer::RepoLocks>,
    pub signer_timeout: std::time::Duration,
}

/// Issues a single-use challenge for `did`; returns it base64url-encoded.
pub async fn issue_challenge(h: &Handover, did: &str, purpose: &str) -> XrpcResult<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let challenge = URL_SAFE_NO_PAD.encode(bytes);
    db::challenges::insert(&h.db, &challenge, did, purpose, db::unix_now() + CHALLENGE_TTL_SECS).await?;
    Ok(challenge)
}

/// Uses up a challenge; returns its bytes if it was issued to `did` for `purpose` and is live.
pub async fn consume_challenge(h: &Handover, did: &str, purpose: &str, challenge: &str) -> XrpcResult<Vec<u8>> {
    if !db::challenges::take(&h.db, challenge, did, purpose).await? {
        return Err(XrpcError::named(
            "InvalidChallenge",
            "The registration challenge is unknown, used or expired; request a new one",
        ));
    }
    URL_SAFE_NO_PAD.decode(challenge).map_err(|_| XrpcError::invalid_request("challenge is not base64url"))
}

/// Parses the user's key: a did:key for secp256k1 (the curve the signer derives).
pub fn parse_user_key(did_key: &str) -> XrpcResult<PublicKey> {
    let key = PublicKey::from_did_key(did_key)
        .map_err(|e| XrpcError::invalid_request(format!("Invalid signing key {did_key:?}: {e}")))?;
    if key.algorithm() != Algorithm::K256 {
        return Err(XrpcError::invalid_request("The signing key must be a secp256k1 did:key"));
    }
    Ok(key)
}

/// Checks the proof of possession: a signature by `key` over the challenge bytes.
pub fn check_possession(key: &PublicKey, challenge: &[u8], signature_b64: &str) -> XrpcResult<()> {
    let sig = URL_SAFE_NO_PAD
        .decode(signature_b64.trim_end_matches('='))
        .map_err(|_| XrpcError::invalid_request("signature is not base64url"))?;
    key.verify(challenge, &sig).map_err(|_| {
        XrpcError::named("InvalidSignature", "The signature over the challenge does not verify with the supplied key")
    })
}

/// Whether a registration may replace a key the account already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Only for accounts without a key (the PDS signs the handover).
    No,
    /// Also replace an existing key; the operation is then signed by the current key through
    /// the user's signer.
    ThroughSigner,
}

/// Registers `user_key` and makes it the DID's `#atproto` key and only rotation key (below
/// `recovery_key`, if given). For an account without a key this is the handover, signed by
/// the PDS; replacing a key is signed by the current key through the signer.
pub async fn register_and_hand_over(
    h: &Handover,
    did: &str,
    user_key: &PublicKey,
    passkey: Option<&NewCredential>,
    recovery_key: Option<&str>,
    replace: Replace,
) -> XrpcResult<()> {
    // Writes need the key; holding the repo lock keeps any in-flight write ordered around us.
    let mut guard = h.locks.lock(did).await;
    // Whatever happens below, the next write reads the account's key afresh.
    guard.forget_account();
    let account =
        accounts::by_did(&h.db, did).await?.ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))?;
    let user_did_key = user_key.to_did_key();
    let last = if did.starts_with("did:plc:") {
        Some(h.plc.last_operation(did).await.map_err(|e| XrpcError::upstream("Could not read the DID's PLC log", e))?)
    } else {
        None
    };
    // A key the DID already names, as a recovery key installs it after a lost passkey: the PLC
    // directory (signed by a rotation key) says it is the account's, and the caller holds it.
    let installed = last.as_ref().is_some_and(|l| {
        l.verification_methods.get("atproto") == Some(&user_did_key) && l.rotation_keys.contains(&user_did_key)
    });
    if installed && account.signing_key.as_deref() != Some(user_did_key.as_str()) && account.signing_key.is_some() {
        return adopt_installed_key(h, &account, &user_did_key, passkey).await;
    }
    if account.signing_key.is_some() && replace == Replace::No {
        return Err(XrpcError::named(
            "KeyAlreadyRegistered",
            "This account already has a signing key; replace it from the account page, where your current key signs \
             the change",
        ));
    }
    if let Some(recovery) = recovery_key {
        PublicKey::from_did_key(recovery)
            .map_err(|e| XrpcError::invalid_request(format!("Invalid recovery key: {e}")))?;
    }
    if let Some(last) = last {
        let ours = h.rotation_key.public_key().to_did_key();
        // An account moving here: its DID is still controlled by its old PDS, which will sign
        // the operation getRecommendedDidCredentials describes. Only the key is recorded now.
        let arriving = account.signing_key.is_none() && account.deactivated_at.is_some();
        if account.signing_key.is_none() && !last.rotation_keys.contains(&ours) && !arriving {
            return Err(XrpcError::named(
                "KeyAlreadyRegistered",
                "The PDS rotation key no longer controls this DID on the PLC directory",
            ));
        }
        if arriving && !last.rotation_keys.contains(&ours) {
            return record_key(h, &account, &user_did_key, passkey).await;
        }
        let mut op = last.successor();
        // Keep any recovery keys already listed unless the user names a new one.
        let others: Vec<String> = match recovery_key {
            Some(r) => vec![r.to_owned()],
            None => last
                .rotation_keys
                .iter()
                .filter(|k| **k != ours && Some(*k) != account.signing_key.as_ref())
                .cloned()
                .collect(),
        };
        // A recovery key goes above the user's key: within the PLC directory's 72-hour window it
        // can undo an operation the user's key signed, even one the user was tricked into.
        op.rotation_keys = others.into_iter().chain(std::iter::once(user_did_key.clone())).collect();
        op.verification_methods.insert("atproto".into(), user_did_key.clone());
        let op = sign_operation(h, &account, op, "replace_signing_key").await?;
        h.plc
            .submit(did, &op)
            .await
            .map_err(|e| XrpcError::upstream("The PLC directory refused the key handover", e))?;
    }
    let mut events = h.firehose.sequencer().await?;
    let mut tx = h.db.begin().await?;
    let updated = accounts::set_signing_key(
        &mut tx,
        did,
        account.signing_key.as_deref(),
        &user_did_key,
        passkey.map(|p| URL_SAFE_NO_PAD.encode(&p.id)),
        passkey.map(|p| p.public_key.clone()),
    )
    .await?;
    if !updated {
        return Err(XrpcError::internal("signing key changed concurrently", did));
    }
    // Service tokens the old key signed would fail once services see the new key.
    crate::store::db::service_tokens::discard(&mut *tx, did).await?;
    events.append(&mut tx, crate::service::events::Event::Identity { did, handle: Some(&account.handle) }).await?;
    tx.commit().await?;
    events.publish();
    tracing::info!(%did, key = %user_did_key, "signing key registered; DID handed over");
    Ok(())
}

/// Replaces the account's key with one its DID already names (installed by a recovery key):
/// no PLC operation, `#identity` so relays look again; the head is re-signed by the new key
/// when its signer connects.
async fn adopt_installed_key(
    h: &Handover,
    account: &accounts::Account,
    user_did_key: &str,
    passkey: Option<&NewCredential>,
) -> XrpcResult<()> {
    let mut events = h.firehose.sequencer().await?;
    let mut tx = h.db.begin().await?;
    let updated = accounts::set_signing_key(
        &mut tx,
        &account.did,
        account.signing_key.as_deref(),
        user_did_key,
        passkey.map(|p| URL_SAFE_NO_PAD.encode(&p.id)),
        passkey.map(|p| p.public_key.clone()),
    )
    .await?;
    if !updated {
        return Err(XrpcError::internal("signing key changed concurrently", &account.did));
    }
    crate::store::db::service_tokens::discard(&mut *tx, &account.did).await?;
    events
        .append(&mut tx, crate::service::events::Event::Identity { did: &account.did, handle: Some(&account.handle) })
        .await?;
    tx.commit().await?;
    events.publish();
    tracing::info!(did = %account.did, key = %user_did_key, "signing key replaced by the one the DID now names");
    Ok(())
}

/// Records the key of an account moving here, without any PLC operation (its old PDS moves the
/// DID; see `getRecommendedDidCredentials`).
async fn record_key(
    h: &Handover,
    account: &accounts::Account,
    user_did_key: &str,
    passkey: Option<&NewCredential>,
) -> XrpcResult<()> {
    let mut tx = h.db.begin().await?;
    let updated = accounts::set_signing_key(
        &mut tx,
        &account.did,
        None,
        user_did_key,
        passkey.map(|p| URL_SAFE_NO_PAD.encode(&p.id)),
        passkey.map(|p| p.public_key.clone()),
    )
    .await?;
    if !updated {
        return Err(XrpcError::internal("signing key changed concurrently", &account.did));
    }
    tx.commit().await?;
    tracing::info!(did = %account.did, key = %user_did_key, "signing key recorded for an account moving here");
    Ok(())
}

/// Signs a PLC operation for an account: with the PDS rotation key while the account has no
/// key of its own, otherwise by the user through their signer (identity operations always ask
/// in the browser). `what` names the change for the person approving it.
pub async fn sign_operation(
    h: &Handover,
    account: &accounts::Account,
    op: crate::service::identity::plc::Operation,
    what: &str,
) -> XrpcResult<crate::service::identity::plc::Operation> {
    let Some(key_did) = &account.signing_key else {
        return Ok(op.sign(&h.rotation_key));
    };
    let sig = sign_by_user(h, account, key_did, op.unsigned_bytes(), what).await?;
    Ok(crate::service::identity::plc::Operation { sig: Some(sig), ..op })
}

/// The user's signer's signature (base64url) over an unsigned PLC operation or tombstone.
async fn sign_by_user(
    h: &Handover,
    account: &accounts::Account,
    key_did: &str,
    bytes: Vec<u8>,
    what: &str,
) -> XrpcResult<String> {
    let key = PublicKey::from_did_key(key_did).map_err(|e| XrpcError::internal("stored signing key is invalid", e))?;
    let summary = crate::service::signer::OpSummary {
        kind: "plc_operation".into(),
        collection: "identity".into(),
        rkey: Some(what.to_owned()),
    };
    let sig = h.signers.request_with_deadline(&account.did, key, bytes, vec![summary], None, h.signer_timeout).await?;
    Ok(URL_SAFE_NO_PAD.encode(sig))
}

/// Tombstones the account's DID with a tombstone the user's signer signs (only their key
/// can: it is the only rotation key), and submits it to the PLC directory.
pub async fn tombstone(h: &Handover, account: &accounts::Account) -> XrpcResult<()> {
    let Some(key_did) = &account.signing_key else {
        return Err(XrpcError::named("SigningKeyRequired", "Only your key can tombstone your DID; register one first"));
    };
    if !account.did.starts_with("did:plc:") {
        return Err(XrpcError::invalid_request("Only did:plc identities can be tombstoned"));
    }
    let last = h
        .plc
        .last_operation(&account.did)
        .await
        .map_err(|e| XrpcError::upstream("Could not read the DID's PLC log", e))?;
    let mut stone = crate::service::identity::plc::Tombstone::after(&last.cid().to_string());
    stone.sig = Some(sign_by_user(h, account, key_did, stone.unsigned_bytes(), "tombstone").await?);
    h.plc
        .submit(&account.did, &stone)
        .await
        .map_err(|e| XrpcError::upstream("The PLC directory refused the tombstone", e))?;
    tracing::warn!(did = %account.did, "DID tombstoned by its user");
    Ok(())
}

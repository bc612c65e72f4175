//! The signer endpoints for programmatic signers (Bearer auth): key registration with a proof
//! of possession, key status, and the WebSocket the signer keeps open.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{FromRequestParts, Query, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcJson;
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::{self, AccessAuth, password};
use crate::service::identity::handover;
use crate::service::signer::ws::{self, ConnectionInfo};
use crate::state::AppState;
use crate::store::db::accounts;

const PURPOSE_KEY: &str = "signing-key";

pub async fn get_key_challenge(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let challenge = handover::issue_challenge(&state.handover, &auth.did, PURPOSE_KEY).await?;
    Ok(Json(json!({ "challenge": challenge })))
}

pub async fn get_status(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_not_oauth()?;
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))?;
    let key = account.signing_key.as_deref().and_then(|k| atproto::crypto::PublicKey::from_did_key(k).ok());
    let (stored, until) = match &key {
        Some(key) => state.proxy.tokens.stored(&auth.did, key).await?,
        None => (0, None),
    };
    Ok(Json(json!({
        "did": account.did,
        "signingKey": account.signing_key,
        "passkey": account.passkey_credential_id.is_some(),
        "signerConnected": state.signers.is_connected(&auth.did),
        // Read tokens signed in advance: how many of how many methods, and until when (unix
        // seconds) reading works with no signer open.
        "readTokens": { "stored": stored, "methods": state.proxy.tokens.stored_methods(), "validUntil": until },
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterKeyInput {
    /// did:key of the user's secp256k1 key.
    public_key: String,
    /// A challenge from getKeyChallenge.
    challenge: String,
    /// base64url compact signature by the key over the challenge bytes.
    signature: String,
    /// The account password, again: a session token alone cannot hand the DID over.
    password: String,
    /// Optional did:key placed after the user's key in the rotation keys.
    recovery_key: Option<String>,
}

pub async fn register_key(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<RegisterKeyInput>,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))?;
    if !password::verify_async(input.password, account.password_hash.clone()).await? {
        return Err(XrpcError::auth_required("Invalid password"));
    }
    let key = handover::parse_user_key(&input.public_key)?;
    let challenge = handover::consume_challenge(&state.handover, &auth.did, PURPOSE_KEY, &input.challenge).await?;
    handover::check_possession(&key, &challenge, &input.signature)?;
    handover::register_and_hand_over(
        &state.handover,
        &auth.did,
        &key,
        None,
        input.recovery_key.as_deref(),
        handover::Replace::No,
    )
    .await?;
    // Proxied calls now need tokens of the new key.
    state.proxy.tokens.forget_key(&auth.did);
    Ok(Json(json!({ "did": auth.did, "signingKey": key.to_did_key() })))
}

/// The access token of a WebSocket request: the header, or `?access_token=` for clients that
/// cannot set headers.
pub struct WsToken(String);

impl FromRequestParts<AppState> for WsToken {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        if let Some(token) = auth::bearer_token(parts) {
            return Ok(Self(token.to_owned()));
        }
        #[derive(Deserialize)]
        struct Q {
            access_token: Option<String>,
        }
        let Query(q) = Query::<Q>::from_request_parts(parts, state)
            .await
            .map_err(|_| XrpcError::invalid_request("Invalid query string"))?;
        q.access_token
            .map(Self)
            .ok_or_else(|| XrpcError::auth_required("Authentication required: Bearer header or access_token"))
    }
}

pub async fn signer_connect(
    State(state): State<AppState>,
    WsToken(token): WsToken,
    upgrade: WebSocketUpgrade,
) -> XrpcResult<Response> {
    let (auth, exp) = state.tokens.access(&token).await?;
    auth.require_full_access()?;
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))?;
    if account.signing_key.is_none() {
        return Err(XrpcError::named(
            "SigningKeyRequired",
            "No signing key is registered for this account; register one before connecting a signer",
        ));
    }
    let info = ConnectionInfo {
        did: auth.did,
        passkey: account.passkey_public_key,
        rp: state.relying_party(),
        expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64)),
    };
    let hub = state.signers.clone();
    let ready = state.on_signer_ready(&info.did, account.signing_key.as_deref());
    Ok(upgrade
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| async move { ws::serve(socket, &hub, info, ready).await }))
}

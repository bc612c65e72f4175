//! `com.atproto.identity.*`

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::XrpcQuery;
use crate::error::{XrpcError, XrpcResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ResolveHandleParams {
    handle: Option<String>,
}

pub async fn resolve_handle(
    State(state): State<AppState>,
    XrpcQuery(params): XrpcQuery<ResolveHandleParams>,
) -> XrpcResult<Json<serde_json::Value>> {
    let raw = params.handle.ok_or_else(|| XrpcError::invalid_request("Handle must be supplied in request"))?;
    let handle = atproto::syntax::Handle::new(raw).map_err(|e| XrpcError::invalid_request(e.to_string()))?;
    match state.handles.resolve(&state.db, &handle).await? {
        Some(did) => Ok(Json(serde_json::json!({ "did": did }))),
        None => Err(XrpcError::named("HandleNotFound", format!("Unable to resolve handle {handle}"))),
    }
}

#[derive(Deserialize)]
pub struct UpdateHandleInput {
    handle: String,
}

/// Changes the account's handle (one under this PDS's domains). After the handover the PLC
/// operation is signed by the user through their signer.
pub async fn update_handle(
    State(state): State<AppState>,
    auth: crate::service::auth::AccessAuth,
    super::XrpcJson(input): super::XrpcJson<UpdateHandleInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    auth.require_identity("handle")?;
    if auth.grant.is_none() {
        auth.require_full_access()?;
    }
    change_handle(&state, &auth.did, &input.handle).await?;
    Ok(Json(serde_json::json!({})))
}

/// Gives the account `raw` as its handle (see [`update_handle`]; the operator's
/// `updateAccountHandle` too): the PLC operation is the user's to sign.
pub(crate) async fn change_handle(state: &AppState, did: &str, raw: &str) -> XrpcResult<()> {
    let _guard = state.repo_locks.lock(did).await;
    let account = crate::store::db::accounts::by_did(&state.db, did)
        .await?
        .ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))?;
    if raw.trim().eq_ignore_ascii_case(&account.handle) {
        return Ok(());
    }
    let handle = match super::check_new_handle(state, raw).await {
        // A handle on another domain is the account's once that domain says so.
        Err(e) if e.error == "UnsupportedDomain" => check_external_handle(state, raw, &account.did).await?,
        checked => checked?,
    };
    if account.did.starts_with("did:plc:") {
        let last = state
            .plc
            .last_operation(&account.did)
            .await
            .map_err(|e| XrpcError::upstream("Could not read the DID's PLC log", e))?;
        let mut op = last.successor();
        op.also_known_as = std::iter::once(format!("at://{handle}"))
            .chain(last.also_known_as.iter().filter(|a| !a.starts_with("at://")).cloned())
            .collect();
        let op =
            crate::service::identity::handover::sign_operation(&state.handover, &account, op, "update_handle").await?;
        state
            .plc
            .submit(&account.did, &op)
            .await
            .map_err(|e| XrpcError::upstream("The PLC directory refused the handle change", e))?;
    }
    let mut events = state.firehose.sequencer().await?;
    let mut tx = state.db.begin().await?;
    crate::store::db::accounts::set_handle(&mut tx, &account.did, handle.as_str()).await?;
    events
        .append(&mut tx, crate::service::events::Event::Identity { did: &account.did, handle: Some(handle.as_str()) })
        .await?;
    tx.commit().await?;
    events.publish();
    Ok(())
}

/// `com.atproto.identity.requestPlcOperationSignature`: mails the account a single-use token
/// that `signPlcOperation` requires (see [`crate::service::auth::codes::Purpose`]).
pub async fn request_plc_token(
    State(state): State<AppState>,
    auth: crate::service::auth::AccessAuth,
) -> XrpcResult<Json<serde_json::Value>> {
    auth.require_full_access()?;
    let account = account_of(&state, &auth.did).await?;
    let email = account
        .email
        .clone()
        .ok_or_else(|| XrpcError::invalid_request("This account has no email address to send the token to"))?;
    state.mailer.require()?;
    let token = crate::service::identity::operations::issue_token(&state.handover, &account.did).await?;
    let lifetime = crate::service::auth::codes::Purpose::PlcOperation.lifetime();
    let vars = [
        ("handle", account.handle.as_str()),
        ("host", state.config.hostname.as_str()),
        ("token", token.as_str()),
        ("lifetime", lifetime.as_str()),
    ];
    state
        .mailer
        .send(&email, crate::service::mail::Template::PlcOperation, &vars)
        .await
        .map_err(|e| XrpcError::internal("could not send the token mail", e))?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
pub struct SignPlcOperationInput {
    token: Option<String>,
    #[serde(flatten)]
    requested: crate::service::identity::operations::Requested,
}

/// `com.atproto.identity.signPlcOperation`: an operation following the DID's latest, with the
/// fields asked for, signed by the user's signer after the person approves it there.
pub async fn sign_plc_operation(
    State(state): State<AppState>,
    auth: crate::service::auth::AccessAuth,
    super::XrpcJson(input): super::XrpcJson<SignPlcOperationInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    auth.require_full_access()?;
    let account = account_of(&state, &auth.did).await?;
    if account.takedown_ref.is_some() {
        return Err(XrpcError::named("AccountTakedown", "This account has been taken down"));
    }
    let token = input.token.ok_or_else(|| {
        XrpcError::invalid_request("A token is required: request one with requestPlcOperationSignature; it is mailed")
    })?;
    let op = crate::service::identity::operations::sign_requested(&state.handover, &account, &token, input.requested)
        .await?;
    Ok(Json(serde_json::json!({ "operation": op })))
}

#[derive(Deserialize)]
pub struct SubmitPlcOperationInput {
    operation: serde_json::Value,
}

/// `com.atproto.identity.submitPlcOperation`: for an account that lives here, an operation that
/// keeps this PDS and the account's key; the PLC directory's answer is checked, then
/// `#identity` tells relays to look again.
pub async fn submit_plc_operation(
    State(state): State<AppState>,
    auth: crate::service::auth::AccessAuth,
    super::XrpcJson(input): super::XrpcJson<SubmitPlcOperationInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    use crate::service::identity::operations;
    auth.require_full_access()?;
    let account = account_of(&state, &auth.did).await?;
    if !account.did.starts_with("did:plc:") {
        return Err(XrpcError::invalid_request("Only did:plc identities have PLC operations"));
    }
    let op: crate::service::identity::plc::Operation = serde_json::from_value(input.operation)
        .map_err(|e| XrpcError::invalid_request(format!("operation: not a PLC operation: {e}")))?;
    operations::check_submission(&account, &op, &state.config.public_url).map_err(XrpcError::invalid_request)?;
    let mut guard = state.repo_locks.lock(&account.did).await;
    operations::submit(&state.handover, &account, &op).await?;
    guard.forget_account();
    state.proxy.resolver.forget(&account.did);
    Ok(Json(serde_json::json!({})))
}

async fn account_of(state: &AppState, did: &str) -> XrpcResult<crate::store::db::accounts::Account> {
    crate::store::db::accounts::by_did(&state.db, did)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))
}

/// A handle on a domain this server does not serve: free here, and naming `did` by DNS TXT
/// (`_atproto.<handle>` = `did=<did>`) or at `https://<handle>/.well-known/atproto-did`.
async fn check_external_handle(state: &AppState, raw: &str, did: &str) -> XrpcResult<atproto::syntax::Handle> {
    let handle = atproto::syntax::Handle::new(raw.trim().to_ascii_lowercase())
        .map_err(|e| XrpcError::named("InvalidHandle", e.to_string()))?;
    if crate::store::db::accounts::by_handle(&state.db, handle.as_str()).await?.is_some() {
        return Err(XrpcError::named("HandleNotAvailable", format!("The handle {handle} is already taken")));
    }
    match state.handles.resolve_elsewhere(handle.as_str()).await {
        Some(found) if found == did => Ok(handle),
        Some(other) => {
            Err(XrpcError::invalid_request(format!("{handle} names another DID ({other}); set it to {did} first")))
        }
        None => Err(XrpcError::invalid_request(format!(
            "{handle} does not name your DID yet: add a DNS TXT record _atproto.{handle} with the value \
             \"did={did}\", or serve {did} at https://{handle}/.well-known/atproto-did, then try again"
        ))),
    }
}

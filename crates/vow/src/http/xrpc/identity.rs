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
    match crate::service::identity::handle::resolve(&state.db, &state.http, &handle).await? {
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
    auth.require_full_access()?;
    let lock = state.repo_locks.get(&auth.did);
    let _guard = lock.lock().await;
    let account = crate::store::db::accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))?;
    if input.handle.trim().eq_ignore_ascii_case(&account.handle) {
        return Ok(Json(serde_json::json!({})));
    }
    let handle = super::check_new_handle(&state, &input.handle).await?;
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
    Ok(Json(serde_json::json!({})))
}

//! `com.atproto.identity.*`

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::XrpcQuery;
use crate::error::{XrpcError, XrpcResult};
use crate::server::AppState;

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
    match crate::identity::handle::resolve(&state, &handle).await? {
        Some(did) => Ok(Json(serde_json::json!({ "did": did }))),
        None => Err(XrpcError::named("HandleNotFound", format!("Unable to resolve handle {handle}"))),
    }
}

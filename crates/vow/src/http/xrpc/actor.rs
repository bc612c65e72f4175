//! `app.bsky.actor.getPreferences` / `putPreferences`: kept by the PDS, per account, as the
//! reference does. App-password sessions neither see nor set the personal details.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcJson;
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::{AccessAuth, jwt};
use crate::state::AppState;

/// Preferences only a session from the account password may see or set.
const FULL_ACCESS_ONLY: &[&str] = &["app.bsky.actor.defs#personalDetailsPref"];
/// Most preferences stored per account.
const MAX_PREFERENCES: usize = 500;

fn in_scope(auth: &AccessAuth, kind: &str) -> bool {
    auth.scope == jwt::ACCESS_SCOPE || !FULL_ACCESS_ONLY.contains(&kind)
}

async fn stored(state: &AppState, did: &str) -> XrpcResult<Vec<Value>> {
    let Some(text) = crate::store::db::preferences::get(&state.db, did).await? else { return Ok(Vec::new()) };
    serde_json::from_str(&text).map_err(|e| XrpcError::internal("stored preferences do not decode", e))
}

fn kind(pref: &Value) -> &str {
    pref["$type"].as_str().unwrap_or_default()
}

pub async fn get_preferences(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_rpc("app.bsky.actor.getPreferences", &state.config.proxy.appview.did)?;
    let prefs: Vec<Value> = stored(&state, &auth.did)
        .await?
        .into_iter()
        .filter(|p| kind(p).starts_with("app.bsky.") && in_scope(&auth, kind(p)))
        .collect();
    Ok(Json(json!({ "preferences": prefs })))
}

#[derive(Deserialize)]
pub struct PutPreferencesInput {
    preferences: Vec<Value>,
}

pub async fn put_preferences(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<PutPreferencesInput>,
) -> XrpcResult<Json<Value>> {
    auth.require_rpc("app.bsky.actor.putPreferences", &state.config.proxy.appview.did)?;
    if input.preferences.len() > MAX_PREFERENCES {
        return Err(XrpcError::invalid_request(format!("At most {MAX_PREFERENCES} preferences")));
    }
    for pref in &input.preferences {
        let kind = kind(pref);
        if !pref.is_object() || kind.is_empty() {
            return Err(XrpcError::invalid_request("Every preference must be an object with a $type"));
        }
        if !kind.starts_with("app.bsky.") {
            return Err(XrpcError::invalid_request(format!("Preference {kind} is not in the app.bsky namespace")));
        }
        if !in_scope(&auth, kind) {
            return Err(XrpcError::invalid_request(format!("This session may not set the preference {kind}")));
        }
    }
    // What the session could not see stays as it was.
    let mut kept: Vec<Value> =
        stored(&state, &auth.did).await?.into_iter().filter(|p| !in_scope(&auth, kind(p))).collect();
    kept.extend(input.preferences);
    crate::store::db::preferences::put(&state.db, &auth.did, &Value::Array(kept).to_string()).await?;
    Ok(Json(json!({})))
}

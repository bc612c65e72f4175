//! `/.well-known/*`: handle-to-DID for handles on this host, and the server's did:web document;
//! and `/tls-check`, which a reverse proxy with on-demand TLS asks before it gets a certificate.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/atproto-did", get(atproto_did))
        .route("/.well-known/did.json", get(did_json))
        .route("/tls-check", get(tls_check))
}

#[derive(serde::Deserialize)]
struct TlsCheck {
    domain: String,
}

/// 200 when `domain` is this server's hostname or the handle of an account hosted here, so a
/// proxy (Caddy's `on_demand_tls ask`) gets certificates for those names only.
async fn tls_check(
    State(state): State<AppState>,
    crate::http::xrpc::XrpcQuery(q): crate::http::xrpc::XrpcQuery<TlsCheck>,
) -> axum::response::Response {
    let domain = q.domain.trim_end_matches('.').to_ascii_lowercase();
    if domain == state.config.hostname {
        return (StatusCode::OK, "ok").into_response();
    }
    match crate::store::db::accounts::by_handle(&state.db, &domain).await {
        Ok(Some(_)) => (StatusCode::OK, "ok").into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "not a name served here").into_response(),
        Err(e) => crate::error::XrpcError::from(e).into_response(),
    }
}

async fn atproto_did(State(state): State<AppState>, headers: HeaderMap) -> axum::response::Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
    match crate::store::db::accounts::by_handle(&state.db, &host).await {
        Ok(Some(account)) => ([(header::CONTENT_TYPE, "text/plain")], account.did).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no user by that name").into_response(),
        Err(e) => crate::error::XrpcError::from(e).into_response(),
    }
}

async fn did_json(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": state.config.service_did,
        "service": [{
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": state.config.public_url,
        }],
    }))
}

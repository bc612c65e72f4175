//! The extractors handlers use to require a credential: they read the request and ask the
//! services (`auth::Tokens`, the configured admin password).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::error::XrpcError;
use crate::service::auth::{AccessAuth, AdminAuth, RefreshAuth, bearer, jwt};
use crate::state::AppState;

impl FromRequestParts<AppState> for AccessAuth {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        access_of(state, parts).await
    }
}

/// The access credential of a request: a session's bearer token, or (unless `VOW_OAUTH=false`) an OAuth
/// session's DPoP-bound token with its proof for this very request.
pub async fn access_of(state: &AppState, parts: &Parts) -> Result<AccessAuth, XrpcError> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    if state.config.oauth
        && let Some(token) = header.and_then(|h| h.strip_prefix("DPoP "))
    {
        let dpop = parts.headers.get("dpop").and_then(|h| h.to_str().ok());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let http = crate::service::oauth::provider::Http {
            method: parts.method.as_str(),
            url: format!("{}{path}", state.config.public_url.trim_end_matches('/')),
            dpop,
        };
        return state.oauth.access(token.trim(), &http).await;
    }
    Ok(state.tokens.access(bearer(parts)?).await?.0)
}

impl FromRequestParts<AppState> for RefreshAuth {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        let claims = state.tokens.check(bearer(parts)?, &[jwt::REFRESH_SCOPE]).await?;
        Ok(Self { claims })
    }
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        admin_check(&parts.headers, &state.config.admin_password).map(|()| AdminAuth)
    }
}

/// The client's address (the TCP peer, or the one a trusted proxy names), put on each request
/// by the rate-limiting layer; `None` when the connection gave none.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

/// Whether `headers` carry the admin's HTTP basic credentials.
pub fn admin_check(headers: &axum::http::HeaderMap, password: &str) -> Result<(), XrpcError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| XrpcError::auth_required("Admin authentication required (HTTP basic, user 'admin')"))?;
    let decoded = header
        .strip_prefix("Basic ")
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| XrpcError::auth_required("Admin authentication must be HTTP basic"))?;
    let expected = format!("admin:{password}");
    if bool::from(decoded.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(XrpcError::auth_required("Wrong admin credentials"))
    }
}

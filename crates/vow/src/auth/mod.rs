//! Authentication: passwords, session tokens, and the extractors handlers use to require them.

pub mod jwt;
pub mod password;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::error::XrpcError;
use crate::server::AppState;

/// Refresh lifetime.
pub const REFRESH_TTL_SECS: i64 = 90 * 24 * 60 * 60;

fn bearer(parts: &Parts) -> Result<&str, XrpcError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| XrpcError::auth_required("Authentication required: send 'Authorization: Bearer <accessJwt>'"))?;
    let value = header.to_str().map_err(|_| XrpcError::invalid_token("Authorization header is not valid text"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| XrpcError::invalid_token("Authorization header must be 'Bearer <token>'"))
}

/// Checks a token of the given scopes and that its session still exists.
async fn check_token(state: &AppState, token: &str, scopes: &[&str]) -> Result<jwt::Claims, XrpcError> {
    let now = crate::db::unix_now();
    // A P-256 verification costs more than the rest of a small request; a token whose
    // signature was checked before is recognised by its exact bytes. Expiry and the session
    // are still checked every time.
    let claims = match state.verified_tokens.get(token) {
        Some(claims) if claims.exp > now => claims,
        Some(_) => return Err(XrpcError::expired_token("Token has expired")),
        None => {
            let claims = jwt::verify(&state.jwk.public_key(), token, now).map_err(|e| match e {
                jwt::JwtError::Expired => XrpcError::expired_token("Token has expired"),
                other => XrpcError::invalid_token(format!("Token could not be verified: {other}")),
            })?;
            state.verified_tokens.insert(token.to_owned(), claims.clone());
            claims
        }
    };
    if !scopes.contains(&claims.scope.as_str()) {
        return Err(XrpcError::invalid_token("Token has the wrong scope for this endpoint"));
    }
    if claims.aud != state.config.service_did {
        return Err(XrpcError::invalid_token("Token was issued for another service"));
    }
    let live: Option<(String,)> = sqlx::query_as("SELECT refresh_jti FROM sessions WHERE id = ? AND did = ?")
        .bind(&claims.sid)
        .bind(&claims.sub)
        .fetch_optional(&state.db)
        .await?;
    match live {
        None => Err(XrpcError::expired_token("Token has been revoked")),
        Some(_) => Ok(claims),
    }
}

/// A request authenticated with an access token (full or app password).
#[derive(Debug, Clone)]
pub struct AccessAuth {
    pub did: String,
    pub session_id: String,
    /// The scope the token carries.
    pub scope: String,
}

impl AccessAuth {
    /// App-password sessions may not manage app passwords or the account.
    pub fn require_full_access(&self) -> Result<(), XrpcError> {
        if self.scope == jwt::ACCESS_SCOPE {
            Ok(())
        } else {
            Err(XrpcError::forbidden("This action needs a session from the account password, not an app password"))
        }
    }
}

impl FromRequestParts<AppState> for AccessAuth {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        Ok(access_from_token(state, bearer(parts)?).await?.0)
    }
}

/// Checks an access token given some other way than the header (WebSocket query string);
/// returns the account and when the token expires (unix seconds).
pub async fn access_from_token(state: &AppState, token: &str) -> Result<(AccessAuth, i64), XrpcError> {
    let claims =
        check_token(state, token, &[jwt::ACCESS_SCOPE, jwt::APP_PASS_SCOPE, jwt::APP_PASS_PRIVILEGED_SCOPE]).await?;
    let exp = claims.exp;
    Ok((AccessAuth { did: claims.sub, session_id: claims.sid, scope: claims.scope }, exp))
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer(parts).ok()
}

/// A request authenticated with a refresh token.
#[derive(Debug, Clone)]
pub struct RefreshAuth {
    pub claims: jwt::Claims,
}

impl FromRequestParts<AppState> for RefreshAuth {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        let token = bearer(parts)?;
        let claims = check_token(state, token, &[jwt::REFRESH_SCOPE]).await?;
        Ok(Self { claims })
    }
}

/// A request authenticated as the administrator (HTTP basic auth, user `admin`).
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, XrpcError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| XrpcError::auth_required("Admin authentication required (HTTP basic, user 'admin')"))?;
        let decoded = header
            .strip_prefix("Basic ")
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| XrpcError::auth_required("Admin authentication must be HTTP basic"))?;
        let expected = format!("admin:{}", state.config.admin_password);
        if bool::from(decoded.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(AdminAuth)
        } else {
            Err(XrpcError::auth_required("Wrong admin credentials"))
        }
    }
}

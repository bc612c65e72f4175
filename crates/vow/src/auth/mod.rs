//! Authentication: passwords and session tokens. The extractors handlers use to require them
//! belong to the HTTP edge (`xrpc/extract.rs`).

pub mod jwt;
pub mod password;

use axum::http::request::Parts;

use crate::error::XrpcError;

/// Refresh lifetime.
pub const REFRESH_TTL_SECS: i64 = 90 * 24 * 60 * 60;

/// The bearer token of a request's `Authorization` header.
pub fn bearer(parts: &Parts) -> Result<&str, XrpcError> {
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

/// Verifies session tokens: signature (once per token, then remembered), scope, audience,
/// expiry, and that the session still exists.
#[derive(Clone)]
pub struct Tokens {
    db: sqlx::SqlitePool,
    key: atproto::crypto::PublicKey,
    service_did: String,
    /// Tokens whose signature has been verified, by their exact text.
    verified: moka::sync::Cache<String, jwt::Claims>,
}

impl Tokens {
    pub fn new(db: sqlx::SqlitePool, key: atproto::crypto::PublicKey, service_did: String) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(std::time::Duration::from_secs(15 * 60))
            .build();
        Self { db, key, service_did, verified }
    }

    /// Checks a token of the given scopes and that its session still exists.
    pub async fn check(&self, token: &str, scopes: &[&str]) -> Result<jwt::Claims, XrpcError> {
        let now = crate::db::unix_now();
        // A P-256 verification costs more than the rest of a small request; a token whose
        // signature was checked before is recognised by its exact bytes. Expiry and the
        // session are still checked every time.
        let claims = match self.verified.get(token) {
            Some(claims) if claims.exp > now => claims,
            Some(_) => return Err(XrpcError::expired_token("Token has expired")),
            None => {
                let claims = jwt::verify(&self.key, token, now).map_err(|e| match e {
                    jwt::JwtError::Expired => XrpcError::expired_token("Token has expired"),
                    other => XrpcError::invalid_token(format!("Token could not be verified: {other}")),
                })?;
                self.verified.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        if !scopes.contains(&claims.scope.as_str()) {
            return Err(XrpcError::invalid_token("Token has the wrong scope for this endpoint"));
        }
        if claims.aud != self.service_did {
            return Err(XrpcError::invalid_token("Token was issued for another service"));
        }
        if !crate::db::sessions::is_live(&self.db, &claims.sid, &claims.sub).await? {
            return Err(XrpcError::expired_token("Token has been revoked"));
        }
        Ok(claims)
    }

    /// Checks an access token (full or app password); returns the account and when the
    /// token expires (unix seconds).
    pub async fn access(&self, token: &str) -> Result<(AccessAuth, i64), XrpcError> {
        let claims =
            self.check(token, &[jwt::ACCESS_SCOPE, jwt::APP_PASS_SCOPE, jwt::APP_PASS_PRIVILEGED_SCOPE]).await?;
        let exp = claims.exp;
        Ok((AccessAuth { did: claims.sub, session_id: claims.sid, scope: claims.scope }, exp))
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

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer(parts).ok()
}

/// A request authenticated with a refresh token.
#[derive(Debug, Clone)]
pub struct RefreshAuth {
    pub claims: jwt::Claims,
}

/// A request authenticated as the administrator (HTTP basic auth, user `admin`).
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

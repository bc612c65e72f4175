//! The one error type of the server: every failure a client sees carries an XRPC error name,
//! a message and an HTTP status, and is rendered as `{"error", "message"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error as an XRPC client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} ({status}): {message}")]
pub struct XrpcError {
    pub status: StatusCode,
    /// The lexicon error name, e.g. `InvalidHandle`.
    pub error: String,
    pub message: String,
    /// The rate limit a refusal (or the answer) reports in `ratelimit-*` headers.
    pub rate_limit: Option<RateLimitInfo>,
}

/// A rate limit's state, as the `ratelimit-limit`, `-remaining`, `-reset` (Unix seconds when
/// the count is whole again) and `-policy` headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset: u64,
    /// The policy's window, in seconds.
    pub window: u64,
}

impl RateLimitInfo {
    /// Sets the four headers on `headers`.
    pub fn write(&self, headers: &mut axum::http::HeaderMap) {
        let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: String| {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(headers, "ratelimit-limit", self.limit.to_string());
        set(headers, "ratelimit-remaining", self.remaining.to_string());
        set(headers, "ratelimit-reset", self.reset.to_string());
        set(headers, "ratelimit-policy", format!("{};w={}", self.limit, self.window));
    }
}

pub type XrpcResult<T> = Result<T, XrpcError>;

impl XrpcError {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self { status, error: error.to_owned(), message: message.into(), rate_limit: None }
    }

    /// 400 with a lexicon-declared error name.
    pub fn named(error: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::named("InvalidRequest", message)
    }

    pub fn auth_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AuthenticationRequired", message)
    }

    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidToken", message)
    }

    pub fn expired_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ExpiredToken", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub fn not_found(error: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, message)
    }

    /// 500 for failures that are ours, not the client's. The detail goes to the log only.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", format!("{context}; see the server log"))
    }

    /// 502 when an upstream service (PLC, a handle's domain) answered badly or not at all.
    pub fn upstream(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %err, "{context}");
        Self::new(StatusCode::BAD_GATEWAY, "UpstreamFailure", format!("{context}: {err}"))
    }
}

impl IntoResponse for XrpcError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "message": self.message });
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(info) = &self.rate_limit {
            info.write(res.headers_mut());
        }
        // DPoP errors also say so in the header a client's DPoP layer reads (RFC 9449 §7.1).
        if matches!(self.error.as_str(), "use_dpop_nonce" | "invalid_dpop_proof" | "invalid_token")
            && let Ok(v) = axum::http::HeaderValue::from_str(&format!("DPoP error=\"{}\"", self.error))
        {
            res.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, v);
        }
        res
    }
}

impl From<sqlx::Error> for XrpcError {
    fn from(err: sqlx::Error) -> Self {
        Self::internal("database error", err)
    }
}

//! Compact JWS for session tokens: ES256 over the PDS's P-256 key, low-S, base64url.

use atproto::crypto::{Keypair, PublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub const ACCESS_SCOPE: &str = "com.atproto.access";
pub const APP_PASS_SCOPE: &str = "com.atproto.appPass";
pub const APP_PASS_PRIVILEGED_SCOPE: &str = "com.atproto.appPassPrivileged";
pub const REFRESH_SCOPE: &str = "com.atproto.refresh";

/// Claims of Vow's session tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub scope: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The session this token belongs to; deleting the session revokes the token.
    pub sid: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

pub fn sign(key: &Keypair, typ: &str, claims: &impl Serialize) -> String {
    let header = serde_json::json!({ "alg": key.algorithm().jwt_alg(), "typ": typ });
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"))
    );
    let sig = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig));
    token
}

/// Verifies signature and expiry; the caller checks scope, audience and session.
pub fn verify(key: &PublicKey, token: &str, now: i64) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: serde_json::Value =
        URL_SAFE_NO_PAD.decode(header).ok().and_then(|h| serde_json::from_slice(&h).ok()).ok_or(JwtError::Malformed)?;
    if header["alg"] != key.algorithm().jwt_alg() {
        return Err(JwtError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| JwtError::Malformed)?;
    let signed_len = token.len() - token.rsplit('.').next().map(str::len).unwrap_or(0) - 1;
    key.verify(&token.as_bytes()[..signed_len], &sig).map_err(|_| JwtError::BadSignature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(JwtError::Malformed)?;
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atproto::crypto::Algorithm;

    fn claims(exp: i64) -> Claims {
        Claims {
            scope: ACCESS_SCOPE.into(),
            sub: "did:plc:x".into(),
            aud: "did:web:pds".into(),
            iat: 0,
            exp,
            jti: "j".into(),
            sid: "s".into(),
        }
    }

    #[test]
    fn sign_verify_expire_tamper() {
        let key = Keypair::generate(Algorithm::P256);
        let token = sign(&key, "at+jwt", &claims(100));
        assert_eq!(verify(&key.public_key(), &token, 50).unwrap(), claims(100));
        assert_eq!(verify(&key.public_key(), &token, 100), Err(JwtError::Expired));
        let other = Keypair::generate(Algorithm::P256);
        assert_eq!(verify(&other.public_key(), &token, 50), Err(JwtError::BadSignature));
        let forged = sign(&other, "at+jwt", &claims(100));
        assert!(verify(&key.public_key(), &forged, 50).is_err());
        assert_eq!(verify(&key.public_key(), "a.b", 50), Err(JwtError::Malformed));
        assert_eq!(verify(&key.public_key(), "not a token at all", 50), Err(JwtError::Malformed));
    }
}

//! The account pages' session: a cookie holding the DID and an expiry, HMAC-SHA256-signed with
//! `VOW_SESSION_SECRET` (integrity only; it carries nothing secret).

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::state::AppState;

pub const COOKIE_NAME: &str = "vow_session";
const LIFETIME_SECS: i64 = 30 * 24 * 60 * 60;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Serialize, Deserialize)]
struct Payload {
    did: String,
    exp: i64,
    /// A fingerprint of the account's password hash: a new password (a reset) ends every
    /// page sign-in, as it ends every app session.
    #[serde(default)]
    pw: String,
}

/// The fingerprint a cookie carries of the password hash (the MAC covers it; it reveals
/// nothing of the hash).
fn password_fingerprint(secret: &str, password_hash: &str) -> String {
    URL_SAFE_NO_PAD.encode(&mac(secret, password_hash.as_bytes())[..12])
}

fn mac(secret: &str, data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The `Set-Cookie` value that signs `account` in.
pub fn issue(state: &AppState, account: &crate::store::db::accounts::Account) -> HeaderValue {
    let payload = Payload {
        did: account.did.clone(),
        exp: crate::store::db::unix_now() + LIFETIME_SECS,
        pw: password_fingerprint(&state.config.session_secret, &account.password_hash),
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("serialises"));
    let sig = URL_SAFE_NO_PAD.encode(mac(&state.config.session_secret, body.as_bytes()));
    let secure = if state.config.public_url.starts_with("https://") { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={body}.{sig}; Path=/; Max-Age={LIFETIME_SECS}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie is ASCII")
}

/// The `Set-Cookie` value that signs out.
pub fn clear() -> HeaderValue {
    HeaderValue::from_static("vow_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
}

pub fn set_cookie(headers: &mut HeaderMap, value: HeaderValue) {
    headers.insert(SET_COOKIE, value);
}

fn verify(state: &AppState, value: &str) -> Option<Payload> {
    let (body, sig) = value.split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let mut m = HmacSha256::new_from_slice(state.config.session_secret.as_bytes()).ok()?;
    m.update(body.as_bytes());
    m.verify_slice(&sig).ok()?;
    let payload: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
    (payload.exp > crate::store::db::unix_now()).then_some(payload)
}

/// The signed-in account, if the request carries a valid session cookie.
pub struct MaybeSession(pub Option<String>);

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let payload = parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE_NAME).and_then(|rest| rest.strip_prefix('=')))
            .find_map(|v| verify(state, v));
        let Some(payload) = payload else { return Ok(Self(None)) };
        // Still the account's: not deleted, not taken down, the password not changed since.
        let live = match crate::store::db::accounts::by_did(&state.db, &payload.did).await {
            Ok(Some(a)) => {
                a.takedown_ref.is_none()
                    && payload.pw == password_fingerprint(&state.config.session_secret, &a.password_hash)
            }
            _ => false,
        };
        Ok(Self(live.then_some(payload.did)))
    }
}

/// Requests that change state with the cookie must come from our own pages: a cross-site
/// `Origin` is refused (SameSite=Lax already keeps the cookie off most cross-site requests).
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => origin == state.config.public_url.trim_end_matches('/'),
        None => true,
    }
}

//! Proxied XRPC: every `/xrpc/<nsid>` this PDS does not serve itself goes to the service the
//! request names (`atproto-proxy`) or the namespace's default (AppView, chat, moderation),
//! with a service-auth token from the user's signer. Also `getServiceAuth` and `getFeed`,
//! which need tokens of their own.

use atproto::crypto::PublicKey;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcQuery;
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::{AccessAuth, jwt};
use crate::service::proxy::tokens::Fallback;
use crate::service::proxy::{Target, response_headers};
use crate::service::signer::SignError;
use crate::state::AppState;

/// The error when a call needs a token signed by the user's key and none can be had.
fn no_token(nsid: &str) -> XrpcError {
    XrpcError::named(
        "SignerUnavailable",
        format!(
            "{nsid} needs a token signed by your key, and no signer is connected to sign one (and no stored token \
             covers it). Open your account page on this PDS (or run `vow signer`), then try again."
        ),
    )
}

fn sign_error(e: SignError) -> XrpcError {
    match e {
        SignError::Rejected => XrpcError::named("SigningRejected", "Your signer declined to sign the service token"),
        other => other.into(),
    }
}

/// The account's registered key, if it has one.
async fn account_key(state: &AppState, did: &str) -> XrpcResult<Option<PublicKey>> {
    Ok(state.proxy.tokens.account_key(did).await?)
}

/// An authenticated call to a service: a token for `lxm` at `aud` (kept or signed now), then
/// the call. With no token to be had the call goes out without one; if the service then
/// wants one, the client gets [`no_token`], not the service's refusal.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn call(
    state: &AppState,
    auth: &AccessAuth,
    method: &Method,
    target: &Target,
    aud: &str,
    nsid: &str,
    lxm: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Option<axum::body::Bytes>,
) -> XrpcResult<reqwest::Response> {
    // An OAuth session calls only what its grant names.
    auth.require_rpc(lxm, aud)?;
    let token = match account_key(state, &auth.did).await? {
        Some(key) => {
            state.proxy.tokens.for_call(&auth.did, &key, aud, lxm, Fallback::Sign).await.map_err(sign_error)?
        }
        None => None,
    };
    let response = state.proxy.forward(method, target, nsid, query, headers, body, token.as_deref()).await?;
    if token.is_none() && response.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(no_token(nsid));
    }
    Ok(response)
}

/// The service's response as the client's: status, the headers that matter, the body streamed.
pub(crate) fn relay(response: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = response_headers(response.headers());
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The request's session, checked as any handler's would be.
async fn session(state: &AppState, parts: &Parts, nsid: &str) -> XrpcResult<AccessAuth> {
    let auth = super::extract::access_of(state, parts).await?;
    // As on the reference PDS: chat needs the account password or a privileged app password.
    // (An OAuth session's grant decides for it, in `call`.)
    if nsid.starts_with("chat.bsky.") && auth.scope == jwt::APP_PASS_SCOPE && auth.grant.is_none() {
        return Err(XrpcError::forbidden("Chat needs a privileged app password"));
    }
    Ok(auth)
}

/// Every `/xrpc/` path without a handler of its own.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    match proxy(&state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn proxy(state: &AppState, request: Request) -> XrpcResult<Response> {
    let (parts, body) = request.into_parts();
    let Some(nsid) = parts.uri.path().strip_prefix("/xrpc/").map(str::to_owned) else {
        return Err(XrpcError::not_found("NotFound", "Not found"));
    };
    let not_implemented = || {
        XrpcError::new(StatusCode::NOT_IMPLEMENTED, "MethodNotImplemented", format!("/xrpc/{nsid} is not implemented"))
    };
    if atproto::syntax::Nsid::new(nsid.as_str()).is_err() {
        return Err(not_implemented());
    }
    let header = parts.headers.get("atproto-proxy").map(|h| h.to_str().unwrap_or("\u{0}"));
    let Some(target) = state.proxy.target(header, &nsid).await? else { return Err(not_implemented()) };
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(XrpcError::new(StatusCode::METHOD_NOT_ALLOWED, "InvalidRequest", "XRPC calls are GET or POST"));
    }
    let auth = session(state, &parts, &nsid).await?;
    let body = if parts.method == Method::POST {
        let limit = state.config.max_json_body;
        Some(axum::body::to_bytes(body, limit).await.map_err(|_| {
            XrpcError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("Request body is over {limit} bytes"),
            )
        })?)
    } else {
        None
    };
    let aud = target.did.clone();
    // A grant's rpc permission is checked against the service as the request named it.
    if let Some(named) = header.filter(|h| h.contains('#')) {
        auth.require_rpc(&nsid, named)?;
    }
    let (method, query) = (&parts.method, parts.uri.query());
    let response = call(state, &auth, method, &target, &aud, &nsid, &nsid, query, &parts.headers, body).await?;
    Ok(relay(response))
}

#[derive(Deserialize)]
pub struct GetServiceAuthParams {
    aud: String,
    lxm: Option<String>,
    exp: Option<i64>,
}

/// `com.atproto.server.getServiceAuth`: a token signed by the user's signer, with the
/// reference PDS's limits (an hour at most, a minute without `lxm`).
pub async fn get_service_auth(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcQuery(p): XrpcQuery<GetServiceAuthParams>,
) -> XrpcResult<Json<Value>> {
    super::did_param(&p.aud, "aud")?;
    let now = crate::store::db::unix_now();
    let exp = p.exp.unwrap_or(now + 60);
    let bad_exp = |m: &str| XrpcError::named("BadExpiration", m.to_owned());
    if exp <= now {
        return Err(bad_exp("expiration is in the past"));
    }
    match &p.lxm {
        Some(lxm) => {
            atproto::syntax::Nsid::new(lxm.as_str())
                .map_err(|e| XrpcError::invalid_request(format!("lxm: invalid NSID {lxm:?}: {e}")))?;
            if lxm == "com.atproto.server.getServiceAuth" {
                return Err(XrpcError::invalid_request("cannot request a service token for getServiceAuth itself"));
            }
            if exp > now + 3600 {
                return Err(bad_exp("cannot request a token that lives more than an hour"));
            }
            // App passwords may not hand out tokens for what they could not do themselves.
            if auth.scope != jwt::ACCESS_SCOPE
                && (crate::service::proxy::never_proxied(lxm) || lxm.starts_with("chat.bsky."))
                && auth.scope != jwt::APP_PASS_PRIVILEGED_SCOPE
            {
                return Err(XrpcError::forbidden(format!("an app password may not request a token for {lxm}")));
            }
        }
        None => {
            if exp > now + 60 {
                return Err(bad_exp("cannot request a token without lxm that lives more than a minute"));
            }
            auth.require_full_access()?;
        }
    }
    auth.require_rpc(p.lxm.as_deref().unwrap_or("*"), &p.aud)?;
    let key = account_key(&state, &auth.did).await?.ok_or_else(|| {
        XrpcError::named(
            "SigningKeyRequired",
            "This account has no key yet; register a passkey or run `vow signer` first",
        )
    })?;
    let token =
        state.proxy.tokens.sign(&auth.did, &key, &p.aud, p.lxm.as_deref(), now, exp).await.map_err(sign_error)?;
    Ok(Json(json!({ "token": token })))
}

#[derive(Deserialize)]
pub struct GetFeedParams {
    feed: String,
}

/// `app.bsky.feed.getFeed`: the AppView asks the feed generator for the skeleton, passing on
/// a token for the generator (`aud` its DID, `lxm` getFeedSkeleton), as the reference does.
pub async fn get_feed(
    State(state): State<AppState>,
    auth: AccessAuth,
    uri: Uri,
    headers: HeaderMap,
    XrpcQuery(p): XrpcQuery<GetFeedParams>,
) -> XrpcResult<Response> {
    let appview = state.proxy.appview()?;
    // Which generator serves the feed: the AppView knows it from the generator record.
    let lookup = form_urlencoded::Serializer::new(String::new()).append_pair("feed", &p.feed).finish();
    let nsid = "app.bsky.feed.getFeedGenerator";
    let generator =
        call(&state, &auth, &Method::GET, &appview, &appview.did, nsid, nsid, Some(&lookup), &headers, None).await?;
    if !generator.status().is_success() {
        return Ok(relay(generator));
    }
    let upstream = |m: String| XrpcError::new(StatusCode::BAD_GATEWAY, "UpstreamFailure", m);
    let body = crate::service::proxy::resolve::read_bounded(generator, 1024 * 1024).await.map_err(upstream)?;
    let view: Value = serde_json::from_slice(&body).map_err(|e| upstream(format!("getFeedGenerator: {e}")))?;
    let generator_did =
        view["view"]["did"].as_str().ok_or_else(|| upstream("getFeedGenerator named no DID".into()))?.to_owned();
    let (nsid, lxm) = ("app.bsky.feed.getFeed", "app.bsky.feed.getFeedSkeleton");
    let response =
        call(&state, &auth, &Method::GET, &appview, &generator_did, nsid, lxm, uri.query(), &headers, None).await?;
    Ok(relay(response))
}

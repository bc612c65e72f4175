//! The OAuth provider's HTTP side (served unless `VOW_OAUTH=false`): discovery documents, PAR, the
//! authorize page (sign in, then a consent screen naming the app, what it asks for and the
//! account), the token and revocation endpoints. Every response carries a fresh `DPoP-Nonce`.

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{CSP, escape, page, page_with_csp, session};
use crate::service::oauth::provider::{Http, OauthError, Parameters, TokenForm};
use crate::state::AppState;
use crate::store::db::accounts;

const OAUTH_JS: &str = include_str!("../../../assets/oauth.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-protected-resource", get(resource_metadata))
        .route("/.well-known/oauth-authorization-server", get(server_metadata))
        .route("/oauth/par", post(par))
        .route("/oauth/authorize", get(authorize_page).post(authorize))
        .route("/oauth/authorize/signin", post(authorize_signin))
        .route("/oauth/authorize/passkey-challenge", post(passkey_challenge))
        .route("/oauth/authorize/passkey", post(passkey_signin))
        .route("/oauth/oauth.js", get(|| async { super::script(OAUTH_JS) }))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
}

/// Adds the current DPoP nonce to every response of the OAuth and XRPC routes.
pub async fn nonce_header(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&state.oauth.nonce()) {
        res.headers_mut().insert("dpop-nonce", v);
    }
    res
}

fn oauth_error(e: OauthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = (status, axum::Json(serde_json::json!({ "error": e.error, "error_description": e.description })))
        .into_response();
    if e.error == "use_dpop_nonce" {
        res.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("DPoP error=\"use_dpop_nonce\""));
    }
    res
}

/// An OAuth endpoint's form: a malformed body or a missing field is the protocol's
/// `invalid_request` (JSON), as clients expect, not a plain-text refusal.
struct OauthForm<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for OauthForm<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Form::<T>::from_request(req, state).await {
            Ok(Form(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status().as_u16();
                let status = if status == 413 { 413 } else { 400 };
                Err(oauth_error(OauthError::new(status, "invalid_request", rejection.body_text())))
            }
        }
    }
}

fn http_of<'a>(state: &AppState, method: &'a Method, uri: &Uri, headers: &'a HeaderMap) -> Http<'a> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Http {
        method: method.as_str(),
        url: format!("{}{path}", state.config.public_url.trim_end_matches('/')),
        dpop: headers.get("dpop").and_then(|h| h.to_str().ok()),
    }
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn resource_metadata(State(state): State<AppState>) -> Response {
    axum::Json(state.oauth.resource_metadata()).into_response()
}

async fn server_metadata(State(state): State<AppState>) -> Response {
    axum::Json(state.oauth.server_metadata()).into_response()
}

async fn par(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    OauthForm(p): OauthForm<Parameters>,
) -> Response {
    match state.oauth.par(&http_of(&state, &method, &uri, &headers), p).await {
        Ok(body) => no_store((StatusCode::CREATED, axum::Json(body)).into_response()),
        Err(e) => oauth_error(e),
    }
}

async fn token(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    OauthForm(f): OauthForm<TokenForm>,
) -> Response {
    match state.oauth.token(&http_of(&state, &method, &uri, &headers), f).await {
        Ok(body) => no_store(axum::Json(body).into_response()),
        Err(e) => oauth_error(e),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    token: String,
    #[serde(default)]
    client_id: String,
}

async fn revoke(State(state): State<AppState>, OauthForm(f): OauthForm<RevokeForm>) -> Response {
    match state.oauth.revoke(&f.token, &f.client_id).await {
        Ok(()) => axum::Json(serde_json::json!({})).into_response(),
        Err(e) => oauth_error(e),
    }
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: String,
    request_uri: String,
}

/// The scopes in plain words.
fn describe(scope: &str) -> String {
    use crate::service::auth::scope::{Permission, parse_permission};
    let words = |s: &str| -> String {
        match s {
            "atproto" => String::new(),
            "transition:generic" => "read and write your posts, likes, follows and profile, and act on your behalf in \
                                     apps (not your email, identity or account)"
                .into(),
            "transition:chat.bsky" => "read and send your Bluesky direct messages".into(),
            "transition:email" => "see your email address".into(),
            other if other.starts_with("include:") => {
                let nsid = other["include:".len()..].split('?').next().unwrap_or("");
                let set = atproto::lexicon::Catalog::bundled().doc(nsid).and_then(|d| d.defs.get("main"));
                match set {
                    Some(atproto::lexicon::TypeDef::PermissionSet(m)) => format!(
                        "{}: {}",
                        m.get("title").and_then(|t| t.as_str()).unwrap_or(nsid),
                        m.get("detail").and_then(|t| t.as_str()).unwrap_or("")
                    ),
                    _ => format!("the permissions of {nsid}"),
                }
            }
            other => match parse_permission(other) {
                Ok(Permission::Repo { collections, actions }) => {
                    format!(
                        "{} records in {}",
                        actions.join(", "),
                        collections.join(", ").replace('*', "every collection")
                    )
                }
                Ok(Permission::Rpc { lxms, aud }) => {
                    format!(
                        "call {} at {}",
                        lxms.join(", ").replace('*', "any method"),
                        aud.replace('*', "any service")
                    )
                }
                Ok(Permission::Blob { accept }) => format!("upload files of type {}", accept.join(", ")),
                Ok(Permission::Account { attr, actions }) => format!("{} your account's {attr}", actions.join(" and ")),
                Ok(Permission::Identity { attr }) => {
                    if attr == "*" {
                        "change your identity".into()
                    } else {
                        format!("change your {attr}")
                    }
                }
                Err(_) => "something this server does not know".into(),
            },
        }
    };
    scope.split_whitespace().map(words).filter(|w| !w.is_empty()).map(|w| format!("<li>{}</li>", escape(&w))).collect()
}

fn error_page(message: &str) -> Response {
    let mut res = page(
        "Sign-in with an app failed",
        &format!(
            "<h1>Sign-in with an app failed</h1><section><p class=\"error\">{}</p><p>Go back to the app and start again.</p></section>",
            escape(message)
        ),
    );
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res
}

async fn authorize_page(
    State(state): State<AppState>,
    session::MaybeSession(did): session::MaybeSession,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let (id, params, client) = match state.oauth.pending(&q.client_id, &q.request_uri).await {
        Ok(found) => found,
        Err(e) => return error_page(&e.description),
    };
    let app = escape(client.name.as_deref().unwrap_or(&client.id));
    let app_id = escape(&client.id);
    let hidden = format!(
        "<input type=\"hidden\" name=\"client_id\" value=\"{}\"><input type=\"hidden\" name=\"request_uri\" value=\"{}\">",
        escape(&q.client_id),
        escape(&q.request_uri)
    );
    // Both forms here end in a redirect to the app (sign-in goes back to this page, which may
    // answer at once with a consent given before): the CSP must let a form's redirects go there.
    let target = params.redirect_uri.as_deref().and_then(|r| url::Url::parse(r).ok()).map(|u| match u.scheme() {
        "http" | "https" => u.origin().ascii_serialization(),
        scheme => format!("{scheme}:"),
    });
    let csp = match target {
        Some(t) if !t.contains([';', ' ', '\'']) => {
            CSP.replace("form-action 'self'", &format!("form-action 'self' {t}"))
        }
        _ => CSP.to_owned(),
    };
    let Some(did) = did else {
        let hint = escape(params.login_hint.as_deref().unwrap_or(""));
        return page_with_csp(
            "Sign in to continue",
            &format!(
                "<h1>Sign in</h1><section><p><strong>{app}</strong> (<code>{app_id}</code>) wants to use your account \
                 on {host}. Sign in first.</p><form method=\"post\" action=\"/oauth/authorize/signin\">{hidden}\
                 <label>Handle or email<input type=\"text\" name=\"identifier\" value=\"{hint}\" required \
                 autocomplete=\"username\"></label><label>Password<input type=\"password\" name=\"password\" required \
                 autocomplete=\"current-password\"></label><button type=\"submit\">Sign in</button></form>\
                 <p>Or, without typing anything: <button id=\"passkey-signin\" type=\"button\">Sign in with your \
                 passkey</button></p><p id=\"passkey-status\" role=\"status\"></p></section>\
                 <script type=\"module\" src=\"/oauth/oauth.js\"></script>",
                host = escape(&state.config.hostname)
            ),
            csp,
        );
    };
    let scope = params.scope.clone().unwrap_or_default();
    // A consent already given for this client and scope is not asked again.
    if state.oauth.consented(&did, &client.id, &scope).await.unwrap_or(false) {
        return match state.oauth.approve(&id, &did, &params).await {
            Ok(url) => redirect(&url),
            Err(e) => error_page(&e.description),
        };
    }
    let handle = match accounts::by_did(&state.db, &did).await {
        Ok(Some(a)) => a.handle,
        _ => did.clone(),
    };
    // The consent form's answer redirects to the app: the page's CSP must let the form go there.
    let target = params.redirect_uri.as_deref().and_then(|r| url::Url::parse(r).ok()).map(|u| match u.scheme() {
        "http" | "https" => u.origin().ascii_serialization(),
        scheme => format!("{scheme}:"),
    });
    let csp = match target {
        Some(t) if !t.contains([';', ' ', '\'']) => {
            CSP.replace("form-action 'self'", &format!("form-action 'self' {t}"))
        }
        _ => CSP.to_owned(),
    };
    page_with_csp(
        "Allow this app?",
        &format!(
            "<h1>Allow {app}?</h1><section><p><strong>{app}</strong> (<code>{app_id}</code>) asks to use your \
             account <strong>{handle}</strong>. It will be able to:</p><ul>{what}</ul><p class=\"muted\">Your posts \
             are still signed in your own browser tab or signer; this app never gets your key. You can end its access \
             on your account page.</p><form method=\"post\" action=\"/oauth/authorize\">{hidden}\
             <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form></section>",
            handle = escape(&handle),
            what = describe(&scope),
        ),
        csp,
    )
}

fn redirect(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => (StatusCode::SEE_OTHER, [(LOCATION, v)]).into_response(),
        Err(_) => error_page("The app's redirect address is not usable"),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    client_id: String,
    request_uri: String,
    decision: String,
}

async fn authorize(
    State(state): State<AppState>,
    session::MaybeSession(did): session::MaybeSession,
    headers: HeaderMap,
    super::PageForm(f): super::PageForm<DecisionForm>,
) -> Response {
    if !session::same_origin(&state, &headers) {
        return super::wrong_origin(&state, "/account");
    }
    let Some(did) = did else { return error_page("Sign in first") };
    let (id, params, _client) = match state.oauth.pending(&f.client_id, &f.request_uri).await {
        Ok(found) => found,
        Err(e) => return error_page(&e.description),
    };
    if f.decision != "allow" {
        if let Err(e) = state.oauth.forget(&id).await {
            return error_page(&e.description);
        }
        return redirect(&state.oauth.deny(&params));
    }
    match state.oauth.approve(&id, &did, &params).await {
        Ok(url) => redirect(&url),
        Err(e) => error_page(&e.description),
    }
}

#[derive(Deserialize)]
struct SigninForm {
    client_id: String,
    request_uri: String,
    identifier: String,
    password: String,
}

async fn authorize_signin(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::PageForm(f): super::PageForm<SigninForm>,
) -> Response {
    if !session::same_origin(&state, &headers) {
        return super::wrong_origin(&state, "/account");
    }
    let account = accounts::by_identifier(&state.db, &f.identifier).await.ok().flatten();
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let ok = crate::service::auth::password::verify_sign_in(f.password, stored).await.unwrap_or(false);
    let back = format!(
        "/oauth/authorize?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &f.client_id)
            .append_pair("request_uri", &f.request_uri)
            .finish()
    );
    match account {
        Some(a) if ok && a.takedown_ref.is_none() => {
            let mut res = redirect(&back);
            session::set_cookie(res.headers_mut(), session::issue(&state, &a));
            res
        }
        _ => error_page("Handle or password is incorrect. Go back and try again."),
    }
}

/// A challenge for a passkey sign-in (no account yet: the credential will say whose).
async fn passkey_challenge(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !session::same_origin(&state, &headers) {
        return crate::error::XrpcError::forbidden("Cross-site request refused").into_response();
    }
    axum::Json(serde_json::json!({ "challenge": state.oauth.login_challenge() })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasskeyInput {
    challenge: String,
    credential_id: String,
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    authenticator_data: String,
    signature: String,
}

/// Signs in with a passkey assertion: the account is the one that registered the credential,
/// and the assertion must verify with its registered public key.
async fn passkey_signin(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Json(input): axum::Json<PasskeyInput>,
) -> Response {
    use crate::error::XrpcError;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if !session::same_origin(&state, &headers) {
        return XrpcError::forbidden("Cross-site request refused").into_response();
    }
    let result: Result<Response, XrpcError> = async {
        if !state.oauth.take_login_challenge(&input.challenge) {
            return Err(XrpcError::auth_required("The sign-in challenge is unknown, used or expired; try again"));
        }
        let challenge = input.challenge.as_bytes().to_vec();
        let account = accounts::by_passkey(&state.db, input.credential_id.trim_end_matches('='))
            .await?
            .filter(|a| a.takedown_ref.is_none())
            .ok_or_else(|| XrpcError::auth_required("This passkey is not registered for an account here"))?;
        let key =
            account.passkey_public_key.clone().ok_or_else(|| XrpcError::auth_required("No passkey registered"))?;
        let decode = |s: &str| {
            URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| XrpcError::invalid_request("not base64url"))
        };
        crate::service::webauthn::verify_assertion(
            &state.relying_party(),
            &key,
            &challenge,
            &decode(&input.authenticator_data)?,
            &decode(&input.client_data_json)?,
            &decode(&input.signature)?,
        )
        .map_err(|e| XrpcError::auth_required(format!("The passkey sign-in did not verify: {e}")))?;
        let mut res = axum::Json(serde_json::json!({ "did": account.did })).into_response();
        session::set_cookie(res.headers_mut(), session::issue(&state, &account));
        Ok(res)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

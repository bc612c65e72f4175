//! The account pages: sign-in, and `/account`, which registers a passkey and then acts as the
//! account's signer. The page's JavaScript and its one library are compiled into the binary.

pub mod oauth;
mod pages;
mod session;

use axum::extract::{Form, State, WebSocketUpgrade};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;

use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::password;
use crate::service::identity::handover;
use crate::service::signer::ws::{self, ConnectionInfo};
use crate::state::AppState;
use crate::store::db::accounts;
use session::MaybeSession;

const PURPOSE_PASSKEY: &str = "passkey";
const APP_JS: &str = include_str!("../../../assets/account.js");
const NOBLE_JS: &str = include_str!("../../../assets/noble-secp256k1.js");
const VERIFY_JS: &str = include_str!("../../../assets/verify.js");
const PASSKEY_JS: &str = include_str!("../../../assets/passkey.js");
const LEAVE_JS: &str = include_str!("../../../assets/leave.js");
const NOBLE_LICENSE: &str = include_str!("../../../assets/noble-curves.LICENSE");
/// Scripts only from this origin; the signer socket only to it.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
                   img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/signup", get(pages::signup_page).post(pages::signup))
        .route("/account/signup", get(|| async { Redirect::to("/signup") }))
        .route("/account/forgot", get(pages::forgot_page).post(pages::forgot))
        .route("/account/reset", post(pages::reset))
        .route("/account", get(account_page))
        .route("/account/signin", get(signin_page).post(signin))
        .route("/account/signout", get(signout).post(signout))
        .route("/account/account.js", get(|| async { script(APP_JS) }))
        .route("/account/noble-secp256k1.js", get(|| async { script(NOBLE_JS) }))
        .route("/account/verify.js", get(|| async { script(VERIFY_JS) }))
        .route("/account/passkey.js", get(|| async { script(PASSKEY_JS) }))
        .route("/account/leave.js", get(|| async { script(LEAVE_JS) }))
        .route("/account/leave", get(leave_page))
        .route("/account/passkey/challenge", post(passkey_challenge))
        .route("/account/passkey/register", post(passkey_register))
        .route("/account/recovery-key", post(recovery_key))
        .route("/account/email/send", post(email_send))
        .route("/account/email/confirm", post(email_confirm))
        .route("/account/sessions/revoke", post(session_revoke))
        .route("/account/app-passwords/revoke", post(app_password_revoke))
        .route("/account/delete/send", post(delete_send))
        .route("/account/delete/challenge", post(delete_challenge))
        .route("/account/delete", post(delete_account))
        .route("/account/post", post(write_post))
        .route("/account/signer", get(signer_socket))
}

/// The public URL's host, when it names this machine (`localhost`, `*.localhost`, a loopback
/// address): local development, where the same server also answers on its listening address.
fn local_public_host(public_url: &str) -> Option<&str> {
    let authority = public_url.split_once("://")?.1.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let local = host == "localhost"
        || host.ends_with(".localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    local.then_some(authority)
}

/// Sends a browser that opened a page at another address of this machine (such as the
/// listening `127.0.0.1:port` when the public URL is `http://localhost:port`) to the public
/// URL: passkeys are bound to the public hostname and sign-in to the public origin, so the
/// page cannot work anywhere else. Only for local public URLs, so that a reverse proxy that
/// rewrites `Host` can never make a redirect loop.
pub async fn canonical_host(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let public = state.config.public_url.trim_end_matches('/');
    let host = req.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
    if let (Some(expected), Some(host)) = (local_public_host(public), host)
        && req.method() == axum::http::Method::GET
        && !host.eq_ignore_ascii_case(expected)
    {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(location) = HeaderValue::from_str(&format!("{public}{path}")) {
            return (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, location)]).into_response();
        }
    }
    next.run(req).await
}

struct Redirect;
impl Redirect {
    fn to(location: &'static str) -> Response {
        (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
    }
}

fn script(body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The origin of `url` (`scheme://host[:port]`), if it has a plain one.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let ok = matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then(|| format!("{scheme}://{authority}"))
}

fn page(title: &str, body: &str) -> Response {
    page_with_csp(title, body, CSP.to_owned())
}

/// A page form whose malformed or missing fields get a page saying so (400), not a bare
/// plain-text refusal.
pub struct PageForm<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Form::<T>::from_request(req, state).await {
            Ok(Form(v)) => Ok(Self(v)),
            Err(rejection) => {
                let mut res = page(
                    "Form not understood",
                    &format!(
                        "<h1>That form was not understood</h1><p class=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
                        escape(&rejection.body_text())
                    ),
                );
                *res.status_mut() = rejection.status();
                Err(res)
            }
        }
    }
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{title} · Vow</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>",
        title = escape(title)
    )
}

fn page_with_csp(title: &str, body: &str, csp: String) -> Response {
    let mut res = Html(document(title, body)).into_response();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        res.headers_mut().insert(CONTENT_SECURITY_POLICY, csp);
    }
    res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f6f6f4;color:#1d1d1b;margin:0}\
main{max-width:40rem;margin:2rem auto;padding:0 1rem}section{background:#fff;border-radius:8px;padding:1rem 1.25rem;\
margin:1rem 0;box-shadow:0 1px 2px #0002}label{display:block;margin:.5rem 0}input[type=text],input[type=password]\
{width:100%;padding:.5rem;box-sizing:border-box}button{padding:.5rem 1rem;margin:.25rem .25rem .25rem 0;cursor:pointer}\
.error{color:#a40000}.muted{color:#666;font-size:.9em}code{word-break:break-all}#log{font-family:monospace;\
font-size:.85em;max-height:16rem;overflow:auto;list-style:none;padding:0}.dot{display:inline-block;width:.7em;\
height:.7em;border-radius:50%;background:#c00;margin-right:.4em}.dot.on{background:#2a2}.dot.wait{background:#d90}\
pre{white-space:pre-wrap;word-break:break-all;background:#f0f0ec;padding:.5rem;font-size:1.05em}\
p,li{overflow-wrap:anywhere}textarea{font:inherit}";

/// The page for a form posted from another address than this server's public URL (a page
/// opened at `http://127.0.0.1:PORT` while the server is `http://localhost:PORT`, or another
/// site): passkeys and sign-in work only at the public URL, so it sends the person there.
fn wrong_origin(state: &AppState, path: &str) -> Response {
    let public = escape(state.config.public_url.trim_end_matches('/'));
    let mut res = page(
        "Open this page at its own address",
        &format!(
            "<h1>Open this page at its own address</h1><section><p>This server's address is <code>{public}</code>,              but the form was sent from another address. Passkeys and sign-in only work at <code>{public}</code>,              so nothing was done.</p><p><a href=\"{public}{path}\"><button>Continue at {public}</button></a></p>\
             </section>"
        ),
    );
    *res.status_mut() = StatusCode::FORBIDDEN;
    res
}

fn signin_form(error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>{error}<section><form method=\"post\" action=\"/account/signin\">\
             <label>Handle or email<input type=\"text\" name=\"identifier\" autocomplete=\"username\" required></label>\
             <label>Password<input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form></section>\
             <p><a href=\"/account/forgot\">Forgot your password?</a> · <a href=\"/signup\">Create an account</a></p>"
        ),
    )
}

async fn signin_page(MaybeSession(did): MaybeSession) -> Response {
    match did {
        Some(_) => Redirect::to("/account"),
        None => signin_form(None),
    }
}

#[derive(Deserialize)]
struct SigninForm {
    identifier: String,
    password: String,
}

async fn signin(State(state): State<AppState>, headers: HeaderMap, PageForm(form): PageForm<SigninForm>) -> Response {
    if !session::same_origin(&state, &headers) {
        return wrong_origin(&state, "/account/signin");
    }
    let account = match accounts::by_identifier(&state.db, &form.identifier).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "sign-in lookup failed");
            return signin_form(Some("Something went wrong; try again."));
        }
    };
    let ok = match password::verify_sign_in(form.password, account.as_ref().map(|a| a.password_hash.clone())).await {
        Ok(ok) => ok,
        Err(_) => return signin_form(Some("The server is busy; try again in a moment.")),
    };
    match account {
        Some(a) if ok && a.takedown_ref.is_some() => {
            signin_form(Some("This account has been taken down by the server's operator."))
        }
        Some(a) if ok => {
            let mut res = Redirect::to("/account");
            session::set_cookie(res.headers_mut(), session::issue(&state, &a));
            res
        }
        _ => signin_form(Some("Handle or password is incorrect.")),
    }
}

async fn signout() -> Response {
    let mut res = Redirect::to("/account/signin");
    session::set_cookie(res.headers_mut(), session::clear());
    res
}

#[derive(Deserialize)]
struct AccountQuery {
    welcome: Option<String>,
}

async fn account_page(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    axum::extract::Query(q): axum::extract::Query<AccountQuery>,
) -> Response {
    let Some(did) = did else { return Redirect::to("/account/signin") };
    let account = match accounts::by_did(&state.db, &did).await {
        Ok(Some(a)) => a,
        _ => return signout().await,
    };
    let welcome = q.welcome.is_some();
    let (sessions, apps) = match (
        crate::store::db::sessions::list(&state.db, &did).await,
        crate::store::db::app_passwords::of(&state.db, &did).await,
    ) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "account page: listing sessions failed");
            (Vec::new(), Vec::new())
        }
    };
    let key_status = match &account.signing_key {
        Some(key) => format!(
            "<p>Your signing key is <code id=\"signing-key\">{}</code>. Only this key can change your identity \
             or sign your repo; the PDS holds no key for you.</p>",
            escape(key)
        ),
        None => "<p>No signing key yet. Register a passkey: your signing key is derived from it in this browser, \
                 and the PDS hands your identity over to that key. You cannot post until you do.</p>\
                 <p><strong>Recommended: a recovery key.</strong> Give the <code>did:key</code> of a key you keep \
                 offline (for example one made with <code>vow create-rotation-key</code>). It is placed above your \
                 passkey's key, so for 72 hours after any identity change signed by your passkey's key, even one you \
                 were tricked into, the recovery key can undo it; and it can restore your identity if you lose your \
                 passkey. Without one, what your passkey's key signs is final, and a lost passkey is a lost \
                 identity.</p>\
                 <label>Recovery key (did:key)\
                 <input type=\"text\" id=\"recovery-key\" placeholder=\"did:key:…\"></label>\
                 <button id=\"register\">Register passkey</button>"
            .to_owned(),
    };
    let body = format!(
        "<h1>{handle}</h1><p class=\"muted\"><code>{did}</code> · <a href=\"/account/signout\">Sign out</a></p>\
         <div id=\"vow\" data-did=\"{did}\" data-handle=\"{handle}\" data-signing-key=\"{key}\" \
         data-credential-id=\"{cred}\" data-plc=\"{plc}\"></div>\
         {welcome}<section><h2>Signing key</h2><div id=\"key-status\">{key_status}</div>\
         <p id=\"status\" role=\"status\"></p></section>\
         {recovery}\
         <section id=\"signer-panel\"><h2>Signer</h2><p><span id=\"dot\" class=\"dot\"></span><span id=\"signer-state\">\
         Locked</span></p><p class=\"muted\">Keep this tab open: your posts are signed here. Unlock once with your \
         passkey; routine writes are then signed without prompts while the tab is open.</p>\
         <button id=\"unlock\">Unlock signer</button><button id=\"disconnect\">Lock</button>\
         <button id=\"replace\">Replace passkey</button>\
         <label><input type=\"checkbox\" id=\"ask-each\"> Ask me before every write</label>\
         <h3>Signed here</h3><ul id=\"log\"></ul></section>\
         {compose}{email}{sessions}{apps}\
         <section><h2>Leaving</h2><p>To move to another PDS the usual way, use a migration tool: every step it takes \
         here is signed in this tab. If this server is down or will not help, <a id=\"leave-link\" \
         href=\"/account/leave?did={did}&amp;credential={cred}\">this page</a> moves your identity with your key \
         alone, talking only to the PLC directory; bookmark it, or keep a copy (<code>vow leave-page</code>).</p>\
         </section>{delete}\
         <script type=\"module\" src=\"/account/account.js\"></script>",
        welcome = if welcome && account.signing_key.is_none() {
            "<section id=\"welcome\"><h2>Welcome</h2><p>Your account exists. One step left: register a passkey below. Your \
             signing key is made from it, here in your browser; until then you cannot post.</p></section>"
        } else {
            ""
        },
        compose = if account.signing_key.is_some() {
            COMPOSE_SECTION.to_owned()
        } else {
            COMPOSE_SECTION.replacen("<section ", "<section hidden ", 1)
        },
        email = email_section(&account),
        sessions = sessions_section(&sessions),
        apps = app_passwords_section(&apps),
        delete = DELETE_SECTION,
        recovery = if account.did.starts_with("did:plc:") { RECOVERY_SECTION } else { "" },
        handle = escape(&account.handle),
        did = escape(&account.did),
        key = escape(account.signing_key.as_deref().unwrap_or("")),
        cred = escape(account.passkey_credential_id.as_deref().unwrap_or("")),
        plc = escape(state.config.plc_url.trim_end_matches('/')),
    );
    // The signer asks the PLC directory itself about the DID before it signs an identity change.
    let csp = match origin_of(&state.config.plc_url) {
        Some(plc) => CSP.replace("connect-src 'self'", &format!("connect-src 'self' {plc}")),
        None => CSP.to_owned(),
    };
    page_with_csp("Your account", &body, csp)
}

/// The leave page: it needs nothing from this server beyond its own files, and talks only to
/// the PLC directory (see `assets/leave.js`).
fn leave_document(plc: &str) -> String {
    let body = format!(
        "<h1>Move or recover your identity</h1><div id=\"leave\" data-plc=\"{plc}\"></div>\
         <section><p>This page changes your DID with your own key, talking only to the PLC directory: it works \
         when your PDS is down or will not help. Point your DID at another PDS you have an account on, or, with \
         your recovery key, install a new signing key.</p>\
         <label>Your DID <input type=\"text\" id=\"did\" placeholder=\"did:plc:…\"></label>\
         <label>PLC directory <input type=\"text\" id=\"plc\"></label>\
         <label>New PDS <input type=\"text\" id=\"pds\" placeholder=\"https://pds.example\"></label>\
         <p class=\"muted\">If the new PDS signs with keys of its own (its getRecommendedDidCredentials names \
         them), give them too; your key keeps the first rank among the rotation keys.</p>\
         <label>The new PDS's signing key <input type=\"text\" id=\"pds-key\" placeholder=\"did:key:… \
         (optional)\"></label>\
         <label>The new PDS's rotation key <input type=\"text\" id=\"pds-rotation-key\" \
         placeholder=\"did:key:… (optional)\"></label>\
         <label>New signing key (optional: to recover with your recovery key) \
         <input type=\"text\" id=\"new-key\" placeholder=\"did:key:…\"></label>\
         <fieldset><legend>Sign with</legend>\
         <label><input type=\"radio\" name=\"key\" id=\"use-passkey\" checked> my passkey (registered on this \
         site)</label>\
         <label><input type=\"radio\" name=\"key\" id=\"use-secret\"> a key I saved (a recovery key or a \
         <code>vow signer</code> key file): <input type=\"file\" id=\"key-file\"> or \
         <input type=\"password\" id=\"secret\" placeholder=\"64 hexadecimal characters\"></label></fieldset>\
         <button id=\"prepare\">Show the change</button></section>\
         <section id=\"confirm\" hidden><h2>This will change</h2><ul id=\"changes\"></ul>\
         <p id=\"warning\" class=\"error\"></p><button id=\"send\">Sign and send to the PLC directory</button>\
         </section><p id=\"status\" role=\"status\"></p>\
         <script type=\"module\" src=\"leave.js\"></script>",
        plc = escape(plc.trim_end_matches('/')),
    );
    document("Move or recover your identity", &body)
}

async fn leave_page(State(state): State<AppState>) -> Response {
    let mut res = Html(leave_document(&state.config.plc_url)).into_response();
    let csp = match origin_of(&state.config.plc_url) {
        Some(plc) => CSP.replace("connect-src 'self'", &format!("connect-src 'self' {plc}")),
        None => CSP.to_owned(),
    };
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        res.headers_mut().insert(CONTENT_SECURITY_POLICY, csp);
    }
    res
}

/// The leave page as static files, for any web server on this hostname (or, signing with a
/// saved key, anywhere): `vow leave-page DIR`.
pub fn leave_page_files(plc: &str) -> Vec<(&'static str, String)> {
    vec![
        ("leave.html", leave_document(plc)),
        ("leave.js", LEAVE_JS.to_owned()),
        ("passkey.js", PASSKEY_JS.to_owned()),
        ("verify.js", VERIFY_JS.to_owned()),
        ("noble-secp256k1.js", NOBLE_JS.to_owned()),
        ("noble-curves.LICENSE", NOBLE_LICENSE.to_owned()),
    ]
}

fn email_section(a: &accounts::Account) -> String {
    let Some(email) = &a.email else { return String::new() };
    let body = if a.email_confirmed_at.is_some() {
        format!("<p><code>{}</code> · <strong>confirmed</strong></p>", escape(email))
    } else {
        format!(
            "<p><code>{}</code> · <strong>not confirmed</strong>. Confirm it so you can reset a forgotten password.\
             </p><button id=\"email-send\">Email me a code</button>\
             <label>Code from the mail<input type=\"text\" id=\"email-code\" autocomplete=\"one-time-code\"></label>\
             <button id=\"email-confirm\">Confirm</button>",
            escape(email)
        )
    };
    format!("<section id=\"email\"><h2>Email</h2>{body}<p id=\"email-status\" role=\"status\"></p></section>")
}

fn sessions_section(sessions: &[crate::store::db::sessions::Listed]) -> String {
    let items: String = sessions
        .iter()
        .map(|s| {
            let via = match (&s.app_password_name, &s.oauth_client) {
                (_, Some(app)) => format!(" by the app <strong>{}</strong> (OAuth)", escape(app)),
                (Some(n), None) => format!(" with the app password <strong>{}</strong>", escape(n)),
                (None, None) => " with your password".to_owned(),
            };
            format!(
                "<li>Signed in {}{via} <button class=\"revoke-session\" data-id=\"{}\">End</button></li>",
                escape(&s.created_at),
                escape(&s.id)
            )
        })
        .collect();
    let list = if items.is_empty() {
        "<p class=\"muted\">No app is signed in.</p>".to_owned()
    } else {
        format!("<ul>{items}</ul>")
    };
    format!("<section id=\"sessions\"><h2>Signed-in apps</h2>{list}</section>")
}

fn app_passwords_section(apps: &[crate::store::db::app_passwords::AppPassword]) -> String {
    let items: String = apps
        .iter()
        .map(|a| {
            format!(
                "<li><strong>{name}</strong>{privileged}, made {at} <button class=\"revoke-app-password\" \
                 data-name=\"{name}\">Revoke</button></li>",
                name = escape(&a.name),
                privileged = if a.privileged { " (privileged)" } else { "" },
                at = escape(&a.created_at)
            )
        })
        .collect();
    let list = if items.is_empty() {
        "<p class=\"muted\">None. Apps can make them for you.</p>".to_owned()
    } else {
        format!("<ul>{items}</ul>")
    };
    format!("<section id=\"app-passwords\"><h2>App passwords</h2>{list}</section>")
}

/// A post from the account page itself (signed in this tab like any other write).
const COMPOSE_SECTION: &str = "<section id=\"compose\"><h2>Post</h2><label>What is on your mind?\
    <textarea id=\"post-text\" rows=\"3\" maxlength=\"300\" style=\"width:100%;box-sizing:border-box\"></textarea></label>\
    <button id=\"post-send\">Post</button><p id=\"post-status\" role=\"status\"></p></section>";

#[derive(Deserialize)]
struct PostInput {
    text: String,
}

/// Writes an `app.bsky.feed.post` for the signed-in account (the tab's signer signs it).
async fn write_post(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<PostInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let text = input.text.trim();
    if text.is_empty() || text.chars().count() > 300 {
        return Err(XrpcError::invalid_request("A post holds 1 to 300 characters"));
    }
    let did =
        atproto::syntax::Did::new(did.as_str()).map_err(|e| XrpcError::internal("session for an invalid DID", e))?;
    let now = crate::store::db::format_timestamp(crate::store::db::unix_now() * 1000);
    let write = crate::service::repo::writer::Write::Create {
        collection: atproto::syntax::Nsid::new("app.bsky.feed.post").expect("a valid NSID"),
        rkey: None,
        value: json!({ "$type": "app.bsky.feed.post", "text": text, "createdAt": now }),
    };
    let committed = crate::service::repo::writer::apply(&state.writer, &did, vec![write], None, None).await?;
    Ok(Json(json!({ "uri": committed.results[0].uri })))
}

/// Deleting the account: a mailed code, the password, and the passkey.
const DELETE_SECTION: &str = "<section id=\"delete\"><h2>Delete your account</h2><p>This removes your posts, \
    media, follows and everything else this server holds for you, for good. Your DID stays yours (you can take it to \
    another server) unless you also tombstone it, which ends it everywhere; only your key can, so this tab signs \
    it.</p><button id=\"delete-send\">Email me a code</button>\
    <label>Code from the mail<input type=\"text\" id=\"delete-code\" autocomplete=\"one-time-code\"></label>\
    <label>Password<input type=\"password\" id=\"delete-password\" autocomplete=\"current-password\"></label>\
    <label><input type=\"checkbox\" id=\"delete-tombstone\"> Also tombstone my DID (permanent, everywhere)</label>\
    <button id=\"delete-confirm\">Delete my account</button><p id=\"delete-status\" role=\"status\"></p></section>";

async fn email_send(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    crate::http::xrpc::account::send_confirmation(&state, &did).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct CodeInput {
    token: String,
}

async fn email_confirm(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<CodeInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let account = accounts::by_did(&state.db, &did).await?.ok_or_else(|| XrpcError::auth_required("Sign in first"))?;
    let email = account.email.unwrap_or_default();
    crate::http::xrpc::account::confirm(&state, &did, &email, &input.token).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct RevokeSession {
    id: String,
}

async fn session_revoke(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<RevokeSession>,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    if !crate::store::db::sessions::delete_of(&state.db, &did, &input.id).await? {
        return Err(XrpcError::invalid_request("No such session"));
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct RevokeAppPassword {
    name: String,
}

async fn app_password_revoke(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<RevokeAppPassword>,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let mut tx = state.db.begin().await?;
    crate::store::db::app_passwords::delete(&mut *tx, &did, &input.name).await?;
    let ended_any = crate::store::db::sessions::delete_for_app_password(&mut tx, &did, &input.name).await?;
    crate::store::db::sessions::commit_ending(tx, ended_any).await?;
    Ok(Json(json!({})))
}

async fn delete_send(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    crate::http::xrpc::account::send_delete_code(&state, &did).await?;
    Ok(Json(json!({})))
}

const PURPOSE_DELETE: &str = "passkey:delete";

/// A challenge for the passkey assertion that confirms a deletion.
async fn delete_challenge(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let challenge = handover::issue_challenge(&state.handover, &did, PURPOSE_DELETE).await?;
    Ok(Json(json!({ "challenge": challenge })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteInput {
    token: String,
    password: String,
    #[serde(default)]
    tombstone: bool,
    challenge: Option<String>,
    #[serde(rename = "clientDataJSON")]
    client_data_json: Option<String>,
    authenticator_data: Option<String>,
    signature: Option<String>,
}

/// Deletes the account from its page: the mailed code, the password, and (for an account with
/// a passkey) a passkey assertion; the DID is tombstoned first when asked, signed in this tab.
async fn delete_account(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<DeleteInput>,
) -> Result<Response, XrpcError> {
    let did = page_caller(&state, did, &headers)?;
    let account = accounts::by_did(&state.db, &did).await?.ok_or_else(|| XrpcError::auth_required("Sign in first"))?;
    if !password::verify_async(input.password, account.password_hash.clone()).await? {
        return Err(XrpcError::auth_required("The password is not right"));
    }
    if let Some(passkey) = &account.passkey_public_key {
        let decode = |s: Option<&String>, what: &str| {
            URL_SAFE_NO_PAD
                .decode(s.map(|s| s.trim_end_matches('=')).unwrap_or(""))
                .map_err(|_| XrpcError::invalid_request(format!("{what} is missing or not base64url")))
        };
        let challenge = input.challenge.as_deref().unwrap_or("");
        let challenge = handover::consume_challenge(&state.handover, &did, PURPOSE_DELETE, challenge).await?;
        crate::service::webauthn::verify_assertion(
            &state.relying_party(),
            passkey,
            &challenge,
            &decode(input.authenticator_data.as_ref(), "authenticatorData")?,
            &decode(input.client_data_json.as_ref(), "clientDataJSON")?,
            &decode(input.signature.as_ref(), "signature")?,
        )
        .map_err(|e| XrpcError::named("InvalidPasskey", format!("The passkey confirmation did not verify: {e}")))?;
    }
    // The code is used up first: a tombstone is final, and no other request may race it.
    use crate::service::auth::codes;
    codes::take(&state.db, Some(&did), &input.token, codes::Purpose::DeleteAccount).await??;
    if input.tombstone {
        handover::tombstone(&state.handover, &account).await?;
    }
    state.lifecycle.delete(&did).await?;
    state.proxy.tokens.forget_key(&did);
    let mut res = Json(json!({ "deleted": true, "tombstoned": input.tombstone })).into_response();
    session::set_cookie(res.headers_mut(), session::clear());
    Ok(res)
}

/// The recovery-key panel: the key is made in the browser and shown once; only its did:key
/// reaches this server, in an operation the user's key signs.
const RECOVERY_SECTION: &str = "<section id=\"recovery\"><h2>Recovery key</h2>\
    <p id=\"recovery-state\" class=\"muted\">Checking your identity on the PLC directory…</p>\
    <p>A recovery key is a second key that you keep offline, on paper or in a file. It ranks above your passkey's \
    key: with it alone you can install a new key if you lose your passkey (<code>vow identity set-key</code>), and \
    for 72 hours after any identity change signed by your passkey's key, even one you were tricked into, undo it. \
    This server never sees it.</p>\
    <button id=\"recovery-create\">Create a recovery key</button>\
    <div id=\"recovery-new\" hidden><p><strong>Save this key now: it is shown only once.</strong> Anyone who has it \
    can change your identity, so keep it where only you can reach it.</p>\
    <pre id=\"recovery-secret\"></pre><p>Its public key: <code id=\"recovery-did\"></code></p>\
    <p><a id=\"recovery-download\" download=\"recovery.key\" href=\"#\">Download it as a key file</a> (for \
    <code>vow identity</code>)</p>\
    <label><input type=\"checkbox\" id=\"recovery-saved\"> I have saved it somewhere safe</label>\
    <button id=\"recovery-add\" disabled>Add it to my identity</button></div></section>";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecoveryInput {
    /// The recovery key's did:key (its private half stays in the browser).
    recovery_key: String,
}

/// Adds a recovery key above the user's key; the page's own signer is asked to sign it.
async fn recovery_key(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<RecoveryInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let account = accounts::by_did(&state.db, &did).await?.ok_or_else(|| XrpcError::auth_required("Sign in first"))?;
    let op =
        crate::service::identity::operations::set_recovery_key(&state.handover, &account, &input.recovery_key).await?;
    state.proxy.resolver.forget(&did);
    Ok(Json(json!({ "rotationKeys": op.rotation_keys })))
}

/// A cookie-authenticated JSON call from our own page.
fn page_caller(state: &AppState, did: Option<String>, headers: &HeaderMap) -> XrpcResult<String> {
    if !session::same_origin(state, headers) {
        return Err(XrpcError::forbidden("Cross-site request refused"));
    }
    did.ok_or_else(|| XrpcError::auth_required("Sign in first"))
}

async fn passkey_challenge(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let account = accounts::by_did(&state.db, &did).await?.ok_or_else(|| XrpcError::auth_required("Sign in first"))?;
    let challenge = handover::issue_challenge(&state.handover, &did, PURPOSE_PASSKEY).await?;
    Ok(Json(json!({
        "challenge": challenge,
        "rp": { "id": state.config.hostname, "name": "Vow" },
        "user": { "id": URL_SAFE_NO_PAD.encode(did.as_bytes()), "name": account.handle, "displayName": account.handle },
        "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }],
        "authenticatorSelection": { "residentKey": "preferred", "userVerification": "preferred" },
        "attestation": "none",
        "timeout": 60000,
        "prfSalt": URL_SAFE_NO_PAD.encode(crate::service::signer::derive::prf_salt()),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterInput {
    challenge: String,
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    attestation_object: String,
    /// did:key of the key derived from the passkey's PRF output.
    public_key: String,
    /// That key's signature over the challenge bytes (proof of possession).
    signature: String,
    recovery_key: Option<String>,
}

async fn passkey_register(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    Json(input): Json<RegisterInput>,
) -> XrpcResult<Json<serde_json::Value>> {
    let did = page_caller(&state, did, &headers)?;
    let challenge = handover::consume_challenge(&state.handover, &did, PURPOSE_PASSKEY, &input.challenge).await?;
    let decode = |s: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| XrpcError::invalid_request(format!("{what} is not base64url")))
    };
    let credential = crate::service::webauthn::verify_registration(
        &state.relying_party(),
        &challenge,
        &decode(&input.client_data_json, "clientDataJSON")?,
        &decode(&input.attestation_object, "attestationObject")?,
    )
    .map_err(|e| XrpcError::named("InvalidPasskey", format!("The passkey registration did not verify: {e}")))?;
    let key = handover::parse_user_key(&input.public_key)?;
    handover::check_possession(&key, &challenge, &input.signature)?;
    let recovery = input.recovery_key.as_deref().map(str::trim).filter(|r| !r.is_empty());
    handover::register_and_hand_over(
        &state.handover,
        &did,
        &key,
        Some(&credential),
        recovery,
        handover::Replace::ThroughSigner,
    )
    .await?;
    // Proxied calls now need tokens of the new key.
    state.proxy.tokens.forget_key(&did);
    Ok(Json(json!({
        "did": did,
        "signingKey": key.to_did_key(),
        "credentialId": URL_SAFE_NO_PAD.encode(&credential.id),
    })))
}

async fn signer_socket(
    State(state): State<AppState>,
    MaybeSession(did): MaybeSession,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let did = match page_caller(&state, did, &headers) {
        Ok(did) => did,
        Err(e) => return e.into_response(),
    };
    let account = match accounts::by_did(&state.db, &did).await {
        Ok(Some(a)) if a.signing_key.is_some() => a,
        Ok(_) => {
            return XrpcError::named("SigningKeyRequired", "Register a passkey before connecting the signer")
                .into_response();
        }
        Err(e) => return XrpcError::from(e).into_response(),
    };
    let info = ConnectionInfo { did, passkey: account.passkey_public_key, rp: state.relying_party(), expires_at: None };
    let hub = state.signers.clone();
    let ready = state.on_signer_ready(&info.did, account.signing_key.as_deref());
    upgrade
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| async move { ws::serve(socket, &hub, info, ready).await })
}

#[cfg(test)]
mod host_tests {
    #[test]
    fn only_local_public_urls_redirect() {
        use super::local_public_host as local;
        assert_eq!(local("http://localhost:2583"), Some("localhost:2583"));
        assert_eq!(local("http://pds.localhost"), Some("pds.localhost"));
        assert_eq!(local("http://127.0.0.1:2583/"), Some("127.0.0.1:2583"));
        assert_eq!(local("http://[::1]:80"), Some("[::1]:80"));
        assert_eq!(local("https://pds.example"), None);
        assert_eq!(local("http://pds.test"), None);
        assert_eq!(local("garbage"), None);
    }
}

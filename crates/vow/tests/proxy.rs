//! Proxying, checked against a recording service on loopback (a stand-in for the AppView that
//! shows exactly what arrives: the real AppView runs in `tests/appview.rs`): which headers go
//! and come back, the service token's claims and signature (the user's key), on-demand and
//! stored tokens, getServiceAuth, and the refusals (malformed or private services, methods
//! that never leave the PDS).

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};

/// What the recording service saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    nsid: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn token(&self) -> Option<String> {
        let auth = self.headers.get("authorization")?.to_str().ok()?;
        auth.strip_prefix("Bearer ").map(str::to_owned)
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn last(&self) -> Seen {
        self.0.lock().unwrap().last().cloned().expect("the service was called")
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The recording service: `/xrpc/<nsid>` answers what it saw; methods ending in `Private`
/// want a token (401 without); its DID document names it `#echo`.
async fn start_service() -> (String, String, Recorder) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let did = format!("did:web:localhost%3A{port}");
    let url = format!("http://localhost:{port}");
    let recorder = Recorder::default();
    let doc = json!({ "id": did, "service": [{ "id": "#echo", "type": "Echo", "serviceEndpoint": url }] });
    let app = axum::Router::new()
        .route("/.well-known/did.json", axum::routing::get(move || async move { axum::Json(doc) }))
        .route("/xrpc/{nsid}", axum::routing::any(record))
        .with_state(recorder.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (did, url, recorder)
}

async fn record(State(rec): State<Recorder>, Path(nsid): Path<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let seen = Seen {
        method: parts.method.to_string(),
        nsid: nsid.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.clone(),
        body,
    };
    let authed = seen.token().is_some();
    rec.0.lock().unwrap().push(seen);
    if nsid.ends_with("Private") && !authed {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "AuthMissing", "message": "no token" })))
            .into_response();
    }
    let mut response = (StatusCode::IM_A_TEAPOT, axum::Json(json!({ "nsid": nsid, "authed": authed }))).into_response();
    let headers = response.headers_mut();
    headers.insert("atproto-repo-rev", "3abc".parse().unwrap());
    headers.insert("content-language", "fr".parse().unwrap());
    headers.insert("x-internal", "secret".parse().unwrap());
    response
}

/// A JWT's header, claims, signing input and signature.
fn decode(token: &str) -> (Value, Value, String, Vec<u8>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let json = |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (json(parts[0]), json(parts[1]), format!("{}.{}", parts[0], parts[1]), URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
}

/// A session opened with a new (unprivileged) app password of `account`.
async fn app_password_session(s: &Stack, account: &Account, name: &str) -> Value {
    let (_, app) = s
        .call("POST", "com.atproto.server.createAppPassword", Some(&account.access), Some(json!({ "name": name })))
        .await;
    let login = json!({ "identifier": account.handle, "password": app["password"] });
    s.call("POST", "com.atproto.server.createSession", None, Some(login)).await.1
}

async fn signing_key(s: &Stack, access: &str) -> atproto::crypto::PublicKey {
    let (_, status) = s.call("GET", "app.vow.signer.getStatus", Some(access), None).await;
    atproto::crypto::PublicKey::from_did_key(status["signingKey"].as_str().unwrap()).unwrap()
}

async fn get(s: &Stack, path: &str, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = s.http.get(format!("{}/xrpc/{path}", s.url)).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn answer(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn proxied_calls_carry_a_token_signed_by_the_users_key() {
    let (did, url, rec) = start_service().await;
    let s = stack_with(
        false,
        &[
            ("VOW_BSKY_APP_VIEW_URL", &url),
            ("VOW_BSKY_APP_VIEW_DID", &did),
            ("VOW_PROXY_ALLOW_PRIVATE", "true"),
            ("VOW_SERVICE_TOKEN_TTL", "0"),
            ("VOW_BSKY_CHAT_URL", &url),
            ("VOW_BSKY_CHAT_DID", "did:web:chat.example"),
            ("VOW_MOD_SERVICE_URL", &url),
            ("VOW_MOD_SERVICE_DID", "did:web:mod.example"),
        ],
    );
    let alice = s.account("alice").await;
    let keys = tempfile::tempdir().unwrap();
    let _signer = s.signer(&alice, &keys.path().join("alice.key"));
    let key = signing_key(&s, &alice.access).await;

    // The default AppView, the headers that matter, the answer relayed as it came.
    let res = get(
        &s,
        "app.bsky.feed.getTimeline?limit=5&cursor=x",
        &alice.access,
        &[("accept-language", "fr, en"), ("atproto-accept-labelers", "did:plc:lab"), ("x-private", "1")],
    )
    .await;
    assert_eq!(res.status(), 418);
    assert_eq!(res.headers()["atproto-repo-rev"], "3abc");
    assert_eq!(res.headers()["content-language"], "fr");
    assert!(res.headers().get("x-internal").is_none(), "only the headers that matter come back");
    let seen = rec.last();
    assert_eq!((seen.method.as_str(), seen.nsid.as_str()), ("GET", "app.bsky.feed.getTimeline"));
    assert_eq!(seen.query, "limit=5&cursor=x");
    assert_eq!(seen.headers["accept-language"], "fr, en");
    assert_eq!(seen.headers["atproto-accept-labelers"], "did:plc:lab");
    assert!(seen.headers.get("x-private").is_none(), "only the headers that matter go");

    // The token: the user's key, the service's bare DID, the method, 60 seconds.
    let token = seen.token().expect("a service token");
    let (header, claims, input, sig) = decode(&token);
    assert_eq!(header, json!({ "typ": "JWT", "alg": "ES256K" }));
    assert_eq!(claims["iss"], alice.did);
    assert_eq!(claims["aud"], did);
    assert_eq!(claims["lxm"], "app.bsky.feed.getTimeline");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    key.verify(input.as_bytes(), &sig).expect("signed by the account's key");

    // Kept until shortly before it expires.
    get(&s, "app.bsky.feed.getTimeline", &alice.access, &[]).await;
    assert_eq!(rec.last().token(), Some(token.clone()));

    // A procedure: body and content type go as they came.
    let res = s
        .http
        .post(format!("{}/xrpc/app.bsky.graph.muteActor", s.url))
        .bearer_auth(&alice.access)
        .header("content-type", "application/json")
        .body(r#"{"actor":"did:plc:x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 418);
    let seen = rec.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, br#"{"actor":"did:plc:x"}"#);
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(decode(&seen.token().unwrap()).1["lxm"], "app.bsky.graph.muteActor");

    // Chat and reports go to their own services, each token for its audience.
    assert_eq!(get(&s, "chat.bsky.convo.listConvos", &alice.access, &[]).await.status(), 418);
    let claims = decode(&rec.last().token().unwrap()).1;
    assert_eq!(
        (claims["aud"].as_str(), claims["lxm"].as_str()),
        (Some("did:web:chat.example"), Some("chat.bsky.convo.listConvos"))
    );
    let res = s
        .http
        .post(format!("{}/xrpc/com.atproto.moderation.createReport", s.url))
        .bearer_auth(&alice.access)
        .json(&json!({ "reasonType": "com.atproto.moderation.defs#reasonSpam", "subject": { "$type": "com.atproto.admin.defs#repoRef", "did": "did:plc:x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 418);
    let claims = decode(&rec.last().token().unwrap()).1;
    assert_eq!(
        (claims["aud"].as_str(), claims["lxm"].as_str()),
        (Some("did:web:mod.example"), Some("com.atproto.moderation.createReport"))
    );
    // Chat is for the account password or a privileged app password.
    let session = app_password_session(&s, &alice, "phone").await;
    let got = answer(get(&s, "chat.bsky.convo.listConvos", session["accessJwt"].as_str().unwrap(), &[]).await).await;
    assert_error(&got, 403, "Forbidden");

    // A service named by atproto-proxy, found through its DID document.
    let header = format!("{did}#echo");
    let res = get(&s, "com.example.thing.doIt?x=1", &alice.access, &[("atproto-proxy", &header)]).await;
    assert_eq!(res.status(), 418);
    let seen = rec.last();
    assert_eq!(seen.nsid, "com.example.thing.doIt");
    assert_eq!(decode(&seen.token().unwrap()).1["aud"], did);

    // Refusals, before anything is sent.
    let before = rec.count();
    for (nsid, proxy, error) in [
        ("app.bsky.feed.getTimeline", "nope", "InvalidRequest"),
        ("app.bsky.feed.getTimeline", "did:web:x", "InvalidRequest"),
        ("app.bsky.feed.getTimeline", &format!("{did}#missing"), "InvalidRequest"),
        ("com.atproto.server.reserveSigningKey", &header, "InvalidRequest"),
        ("com.atproto.identity.refreshIdentity", &header, "InvalidRequest"),
        ("com.atproto.admin.updateAccountSigningKey", &header, "InvalidRequest"),
    ] {
        let got = answer(get(&s, nsid, &alice.access, &[("atproto-proxy", proxy)]).await).await;
        assert_error(&got, 400, error);
    }
    // Without a session nothing is proxied.
    let got = answer(s.http.get(format!("{}/xrpc/app.bsky.feed.getTimeline", s.url)).send().await.unwrap()).await;
    assert_error(&got, 401, "AuthenticationRequired");
    assert_eq!(rec.count(), before, "refused calls never reach a service");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_on_private_addresses_are_refused_unless_allowed() {
    let (did, url, rec) = start_service().await;
    // The operator's AppView may live on a private network; services requests name may not.
    let s = stack_with(false, &[("VOW_BSKY_APP_VIEW_URL", &url), ("VOW_BSKY_APP_VIEW_DID", &did)]);
    let alice = s.account("alice").await;
    let res = get(&s, "app.bsky.actor.getSuggestions", &alice.access, &[]).await;
    assert_eq!(res.status(), 418, "the configured AppView is called");
    let before = rec.count();
    let port = url.rsplit(':').next().unwrap();
    for proxy in
        [format!("{did}#echo"), format!("did:web:127.0.0.1%3A{port}#echo"), "did:web:169.254.169.254#x".to_owned()]
    {
        let got =
            answer(get(&s, "app.bsky.actor.getSuggestions", &alice.access, &[("atproto-proxy", &proxy)]).await).await;
        assert_error(&got, 400, "InvalidRequest");
    }
    assert_eq!(rec.count(), before, "no call reached a private address");
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_tokens_keep_reads_going_without_a_signer_and_nothing_else_is_used() {
    let (did, url, rec) = start_service().await;
    let mut s = stack_with(
        false,
        &[("VOW_BSKY_APP_VIEW_URL", &url), ("VOW_BSKY_APP_VIEW_DID", &did), ("VOW_PROXY_ALLOW_PRIVATE", "true")],
    );
    let alice = s.account("alice").await;
    let keys = tempfile::tempdir().unwrap();
    let signer = s.signer(&alice, &keys.path().join("alice.key"));
    let key = signing_key(&s, &alice.access).await;
    let status = loop {
        let (_, status) = s.call("GET", "app.vow.signer.getStatus", Some(&alice.access), None).await;
        let t = &status["readTokens"];
        if t["stored"].as_u64().is_some_and(|n| n > 50 && Some(n) == t["methods"].as_u64()) {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let until = status["readTokens"]["validUntil"].as_i64().unwrap();
    drop(signer);
    wait_for_signer(&s, &alice.access, false).await;
    // They are kept across a restart.
    s.restart_vow(&[]);

    // A read method: its stored token, three days long, the user's key.
    let res = get(&s, "app.bsky.notification.listNotifications", &alice.access, &[]).await;
    assert_eq!(res.status(), 418);
    let (_, claims, input, sig) = decode(&rec.last().token().expect("the stored token"));
    assert_eq!(claims["lxm"], "app.bsky.notification.listNotifications");
    assert_eq!(claims["aud"], did);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3 * 24 * 3600);
    assert!(claims["exp"].as_i64().unwrap() >= until);
    key.verify(input.as_bytes(), &sig).unwrap();

    // A procedure has no stored token: the service wants one, the user is told why there is none.
    let got = answer(
        s.http
            .post(format!("{}/xrpc/app.bsky.graph.mutePrivate", s.url))
            .bearer_auth(&alice.access)
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "SignerUnavailable");
    assert!(rec.last().token().is_none());
    // A method whose auth is optional goes without one.
    let res = get(&s, "app.bsky.unspecced.somethingOpen", &alice.access, &[]).await;
    assert_eq!(res.status(), 418);
    assert!(rec.last().token().is_none());

    // Expired tokens and tokens of another key are never used.
    let db = {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("vow.db"));
        sqlx::SqlitePool::connect_with(opts).await.unwrap()
    };
    let other = atproto::crypto::Keypair::generate(atproto::crypto::Algorithm::K256).public_key().to_did_key();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for (lxm, signed_by, exp) in [
        ("app.bsky.unspecced.expiredPrivate", key.to_did_key(), now - 1),
        ("app.bsky.unspecced.otherKeyPrivate", other, now + 3600),
    ] {
        sqlx::query("INSERT INTO service_tokens (did, aud, lxm, signing_key, token, expires_at) VALUES (?, ?, ?, ?, 'planted', ?)")
            .bind(&alice.did)
            .bind(&did)
            .bind(lxm)
            .bind(signed_by)
            .bind(exp)
            .execute(&db)
            .await
            .unwrap();
        let got = answer(get(&s, lxm, &alice.access, &[]).await).await;
        assert_error(&got, 400, "SignerUnavailable");
        assert!(rec.last().token().is_none(), "{lxm}: the planted token was not used");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_service_auth_is_signed_by_the_signer_within_the_reference_limits() {
    let s = stack(false);
    let alice = s.account("alice").await;
    let (status, body) =
        s.call("GET", "com.atproto.server.getServiceAuth?aud=did:web:other.example", Some(&alice.access), None).await;
    assert_error(&(status, body), 400, "SigningKeyRequired");
    let keys = tempfile::tempdir().unwrap();
    let _signer = s.signer(&alice, &keys.path().join("alice.key"));
    let key = signing_key(&s, &alice.access).await;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let path = format!(
        "com.atproto.server.getServiceAuth?aud=did:web:other.example&lxm=com.atproto.repo.uploadBlob&exp={}",
        now + 1800
    );
    let (status, body) = s.call("GET", &path, Some(&alice.access), None).await;
    assert_eq!(status, 200, "{body}");
    let (_, claims, input, sig) = decode(body["token"].as_str().unwrap());
    assert_eq!(claims["iss"], alice.did);
    assert_eq!(claims["aud"], "did:web:other.example");
    assert_eq!(claims["lxm"], "com.atproto.repo.uploadBlob");
    assert_eq!(claims["exp"], now + 1800);
    key.verify(input.as_bytes(), &sig).unwrap();

    // Without lxm: never more than a minute, and a token for any method could move the
    // account, so the signer asks (`vow signer` refuses without --approve-identity).
    let any =
        s.call("GET", "com.atproto.server.getServiceAuth?aud=did:web:other.example", Some(&alice.access), None).await;
    assert_error(&any, 400, "SigningRejected");
    let path = format!("com.atproto.server.getServiceAuth?aud=did:web:other.example&exp={}", now + 120);
    assert_error(&s.call("GET", &path, Some(&alice.access), None).await, 400, "BadExpiration");

    // An app password may not mint tokens for what it could not do itself.
    let session = app_password_session(&s, &alice, "app").await;
    let app_access = session["accessJwt"].as_str().unwrap();
    for lxm in ["chat.bsky.convo.sendMessage", "com.atproto.server.createAccount"] {
        let path = format!("com.atproto.server.getServiceAuth?aud=did:web:other.example&lxm={lxm}");
        assert_error(&s.call("GET", &path, Some(app_access), None).await, 403, "Forbidden");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn app_passwords_neither_see_nor_set_personal_details() {
    let s = stack(false);
    let alice = s.account("alice").await;
    let details =
        json!({ "$type": "app.bsky.actor.defs#personalDetailsPref", "birthDate": "1990-01-01T00:00:00.000Z" });
    let feeds = json!({ "$type": "app.bsky.actor.defs#savedFeedsPrefV2", "items": [] });
    let put = |token: String, prefs: Value| {
        let s = &s;
        async move {
            s.call("POST", "app.bsky.actor.putPreferences", Some(&token), Some(json!({ "preferences": prefs }))).await
        }
    };
    assert_eq!(put(alice.access.clone(), json!([details, feeds])).await.0, 200);
    let session = app_password_session(&s, &alice, "app").await;
    let app_access = session["accessJwt"].as_str().unwrap().to_owned();
    let (_, seen) = s.call("GET", "app.bsky.actor.getPreferences", Some(&app_access), None).await;
    assert_eq!(seen["preferences"], json!([feeds]), "the app password does not see the personal details");
    assert_error(&put(app_access.clone(), json!([details])).await, 400, "InvalidRequest");
    // What it puts replaces what it can see; the personal details stay.
    let adult = json!({ "$type": "app.bsky.actor.defs#adultContentPref", "enabled": true });
    assert_eq!(put(app_access.clone(), json!([adult])).await.0, 200);
    let (_, full) = s.call("GET", "app.bsky.actor.getPreferences", Some(&alice.access), None).await;
    assert_eq!(full["preferences"], json!([details, adult]));
}

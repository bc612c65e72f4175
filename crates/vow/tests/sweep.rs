//! Integration: a table-driven sweep of bad input and authentication over every XRPC route of
//! the real `vow` binary (real SQLite, real PLC server). Every route listed in the router must
//! have an entry here, so a new endpoint is swept from the day it is added.

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::{Value, json};

/// How a case authenticates.
#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    Access,
    Refresh,
    Admin,
}

/// Whether a route needs a credential, and which.
struct Route {
    method: &'static str,
    nsid: &'static str,
    auth: Auth,
}

const fn route(method: &'static str, nsid: &'static str, auth: Auth) -> Route {
    Route { method, nsid, auth }
}

/// Every XRPC route and the credential it takes.
const ROUTES: &[Route] = &[
    route("GET", "_health", Auth::None),
    route("GET", "com.atproto.server.describeServer", Auth::None),
    route("POST", "com.atproto.server.createAccount", Auth::None),
    route("POST", "com.atproto.server.createSession", Auth::None),
    route("GET", "com.atproto.server.getSession", Auth::Access),
    route("POST", "com.atproto.server.refreshSession", Auth::Refresh),
    route("POST", "com.atproto.server.deleteSession", Auth::Refresh),
    route("POST", "com.atproto.server.createInviteCode", Auth::Admin),
    route("POST", "com.atproto.server.createInviteCodes", Auth::Admin),
    route("GET", "com.atproto.server.getAccountInviteCodes", Auth::Access),
    route("POST", "com.atproto.server.createAppPassword", Auth::Access),
    route("GET", "com.atproto.server.listAppPasswords", Auth::Access),
    route("POST", "com.atproto.server.revokeAppPassword", Auth::Access),
    route("GET", "com.atproto.identity.resolveHandle", Auth::None),
    route("POST", "com.atproto.identity.updateHandle", Auth::Access),
    route("POST", "com.atproto.identity.requestPlcOperationSignature", Auth::Access),
    route("POST", "com.atproto.identity.signPlcOperation", Auth::Access),
    route("POST", "com.atproto.identity.submitPlcOperation", Auth::Access),
    route("GET", "com.atproto.repo.describeRepo", Auth::None),
    route("GET", "com.atproto.repo.getRecord", Auth::None),
    route("GET", "com.atproto.repo.listRecords", Auth::None),
    route("POST", "com.atproto.repo.createRecord", Auth::Access),
    route("POST", "com.atproto.repo.putRecord", Auth::Access),
    route("POST", "com.atproto.repo.deleteRecord", Auth::Access),
    route("POST", "com.atproto.repo.applyWrites", Auth::Access),
    route("GET", "com.atproto.sync.getRepo", Auth::None),
    route("GET", "com.atproto.sync.getLatestCommit", Auth::None),
    route("GET", "com.atproto.sync.getHead", Auth::None),
    route("GET", "com.atproto.sync.getCheckout", Auth::None),
    route("GET", "com.atproto.sync.getRecord", Auth::None),
    route("GET", "com.atproto.sync.getBlocks", Auth::None),
    route("GET", "com.atproto.sync.getRepoStatus", Auth::None),
    route("GET", "com.atproto.sync.listRepos", Auth::None),
    route("GET", "com.atproto.sync.subscribeRepos", Auth::None),
    route("POST", "com.atproto.repo.uploadBlob", Auth::Access),
    route("GET", "com.atproto.sync.getBlob", Auth::None),
    route("GET", "com.atproto.sync.listBlobs", Auth::None),
    route("GET", "com.atproto.repo.listMissingBlobs", Auth::Access),
    route("GET", "com.atproto.server.signerConnect", Auth::Access),
    route("GET", "app.vow.signer.getKeyChallenge", Auth::Access),
    route("POST", "app.vow.signer.registerKey", Auth::Access),
    route("GET", "app.vow.signer.getStatus", Auth::Access),
    route("GET", "com.atproto.server.getServiceAuth", Auth::Access),
    route("GET", "com.atproto.server.checkAccountStatus", Auth::Access),
    route("POST", "com.atproto.repo.importRepo", Auth::Access),
    route("GET", "com.atproto.identity.getRecommendedDidCredentials", Auth::Access),
    route("POST", "com.atproto.server.deactivateAccount", Auth::Access),
    route("POST", "com.atproto.server.requestEmailConfirmation", Auth::Access),
    route("POST", "com.atproto.server.confirmEmail", Auth::Access),
    route("POST", "com.atproto.server.requestEmailUpdate", Auth::Access),
    route("POST", "com.atproto.server.updateEmail", Auth::Access),
    route("POST", "com.atproto.server.requestPasswordReset", Auth::None),
    route("POST", "com.atproto.server.resetPassword", Auth::None),
    route("POST", "com.atproto.server.requestAccountDelete", Auth::Access),
    route("POST", "com.atproto.server.deleteAccount", Auth::None),
    route("GET", "com.atproto.admin.getAccountInfo", Auth::Admin),
    route("GET", "com.atproto.admin.getAccountInfos", Auth::Admin),
    route("GET", "com.atproto.admin.searchAccounts", Auth::Admin),
    route("GET", "com.atproto.admin.getSubjectStatus", Auth::Admin),
    route("POST", "com.atproto.admin.updateSubjectStatus", Auth::Admin),
    route("POST", "com.atproto.admin.updateAccountHandle", Auth::Admin),
    route("POST", "com.atproto.admin.updateAccountEmail", Auth::Admin),
    route("POST", "com.atproto.admin.updateAccountPassword", Auth::Admin),
    route("POST", "com.atproto.admin.deleteAccount", Auth::Admin),
    route("GET", "com.atproto.admin.getInviteCodes", Auth::Admin),
    route("POST", "com.atproto.admin.disableInviteCodes", Auth::Admin),
    route("POST", "com.atproto.admin.sendEmail", Auth::Admin),
    route("GET", "app.vow.admin.getStorage", Auth::Admin),
    route("POST", "com.atproto.server.activateAccount", Auth::Access),
    route("GET", "app.bsky.actor.getPreferences", Auth::Access),
    route("POST", "app.bsky.actor.putPreferences", Auth::Access),
    route("GET", "app.bsky.feed.getFeed", Auth::Access),
    route("GET", "app.bsky.actor.getProfile", Auth::Access),
    route("GET", "app.bsky.feed.getAuthorFeed", Auth::Access),
    route("GET", "app.bsky.feed.getTimeline", Auth::Access),
    route("GET", "app.bsky.feed.getPostThread", Auth::Access),
];

/// One bad request and the answer it must get. `{did}` in the query or body is the test
/// account's DID.
struct Case {
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: Option<&'static str>,
    status: u16,
    error: &'static str,
}

const fn case(
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: Option<&'static str>,
    status: u16,
    error: &'static str,
) -> Case {
    Case { method, path, auth, body, status, error }
}

/// Bad input, route by route.
const CASES: &[Case] = &[
    case(
        "POST",
        "com.atproto.server.createAccount",
        Auth::None,
        Some(r#"{"email":"x@y.test"}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.server.createAccount",
        Auth::None,
        Some(r#"{"handle":"no spaces.pds.test","password":"pw-long-enough"}"#),
        400,
        "InvalidHandle",
    ),
    case("POST", "com.atproto.server.createSession", Auth::None, Some(r#"{"identifier":"x"}"#), 400, "InvalidRequest"),
    case(
        "POST",
        "com.atproto.server.createSession",
        Auth::None,
        Some(r#"{"identifier":"nobody.pds.test","password":"x"}"#),
        401,
        "AuthenticationRequired",
    ),
    case(
        "POST",
        "com.atproto.server.createInviteCode",
        Auth::Admin,
        Some(r#"{"useCount":1,"forAccount":"not a did"}"#),
        400,
        "InvalidRequest",
    ),
    case("POST", "com.atproto.server.createInviteCode", Auth::Admin, Some(r#"{"useCount":0}"#), 400, "InvalidRequest"),
    case(
        "POST",
        "com.atproto.server.createInviteCodes",
        Auth::Admin,
        Some(r#"{"useCount":1,"forAccounts":["did:plc:ok","nope"]}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.server.createInviteCodes",
        Auth::Admin,
        Some(r#"{"useCount":1,"codeCount":0}"#),
        400,
        "InvalidRequest",
    ),
    case("POST", "com.atproto.server.createAppPassword", Auth::Access, Some(r#"{}"#), 400, "InvalidRequest"),
    case("POST", "com.atproto.server.revokeAppPassword", Auth::Access, Some(r#"{"nom":1}"#), 400, "InvalidRequest"),
    case("GET", "com.atproto.identity.resolveHandle", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.identity.resolveHandle?handle=not_a_handle", Auth::None, None, 400, "InvalidRequest"),
    case(
        "POST",
        "com.atproto.identity.updateHandle",
        Auth::Access,
        Some(r#"{"handle":"bad handle"}"#),
        400,
        "InvalidHandle",
    ),
    case("POST", "com.atproto.identity.signPlcOperation", Auth::Access, Some(r#"{}"#), 400, "InvalidRequest"),
    case(
        "POST",
        "com.atproto.identity.signPlcOperation",
        Auth::Access,
        Some(r#"{"token":"AAAAA-BBBBB"}"#),
        400,
        "InvalidToken",
    ),
    case(
        "POST",
        "com.atproto.identity.submitPlcOperation",
        Auth::Access,
        Some(r#"{"operation":{"type":"plc_operation"}}"#),
        400,
        "InvalidRequest",
    ),
    case("GET", "com.atproto.repo.describeRepo", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.repo.describeRepo?repo=did:plc:nobodyhere", Auth::None, None, 400, "RepoNotFound"),
    case(
        "GET",
        "com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post",
        Auth::None,
        None,
        400,
        "InvalidRequest",
    ),
    case(
        "GET",
        "com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post&rkey=..",
        Auth::None,
        None,
        400,
        "InvalidRequest",
    ),
    case(
        "GET",
        "com.atproto.repo.getRecord?repo={did}&collection=app.bsky.feed.post&rkey=nothere",
        Auth::None,
        None,
        400,
        "RecordNotFound",
    ),
    case(
        "GET",
        "com.atproto.repo.listRecords?repo={did}&collection=app.bsky.feed.post&limit=0",
        Auth::None,
        None,
        400,
        "InvalidRequest",
    ),
    case(
        "GET",
        "com.atproto.repo.listRecords?repo={did}&collection=not-an-nsid",
        Auth::None,
        None,
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.createRecord",
        Auth::Access,
        Some(r#"{"repo":"{did}","collection":"bad nsid","record":{}}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.createRecord",
        Auth::Access,
        Some(r#"{"repo":"{did}","collection":"app.bsky.feed.post"}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.putRecord",
        Auth::Access,
        Some(r#"{"repo":"{did}","collection":"app.bsky.feed.post","rkey":"..","record":{}}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.deleteRecord",
        Auth::Access,
        Some(r#"{"repo":"{did}","collection":"app.bsky.feed.post","rkey":"x","swapRecord":"not-a-cid"}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.applyWrites",
        Auth::Access,
        Some(r#"{"repo":"{did}","writes":[{"$type":"com.atproto.repo.applyWrites#nope","collection":"a.b.c"}]}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.applyWrites",
        Auth::Access,
        Some(r#"{"repo":"{did}","writes":[]}"#),
        400,
        "InvalidRequest",
    ),
    case(
        "POST",
        "com.atproto.repo.applyWrites",
        Auth::Access,
        Some(r#"{"repo":"did:plc:someoneelse","writes":[]}"#),
        403,
        "Forbidden",
    ),
    case("GET", "com.atproto.sync.getRepo", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getRepo?did={did}&since=yesterday", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getRepo?did=did:plc:nobodyhere", Auth::None, None, 400, "RepoNotFound"),
    case("GET", "com.atproto.sync.getLatestCommit?did=not-a-did", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getHead", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getCheckout", Auth::None, None, 400, "InvalidRequest"),
    case(
        "GET",
        "com.atproto.sync.getRecord?did={did}&collection=app.bsky.feed.post",
        Auth::None,
        None,
        400,
        "InvalidRequest",
    ),
    case("GET", "com.atproto.sync.getBlocks?did={did}", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getBlocks?did={did}&cids=not-a-cid", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getRepoStatus", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.listRepos?limit=100000", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getBlob?did={did}&cid=not-a-cid", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.getBlob?did={did}", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.listBlobs?did={did}&since=not-a-tid", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.sync.listBlobs?did={did}&limit=0", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.repo.listMissingBlobs?limit=-1", Auth::Access, None, 400, "InvalidRequest"),
    case("POST", "app.vow.signer.registerKey", Auth::Access, Some(r#"{"publicKey":"nope"}"#), 400, "InvalidRequest"),
    // WebSocket endpoints called as plain HTTP.
    case("GET", "com.atproto.sync.subscribeRepos", Auth::None, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.server.signerConnect", Auth::Access, None, 400, "InvalidRequest"),
    // Service auth: the reference PDS's limits.
    case("GET", "com.atproto.server.getServiceAuth", Auth::Access, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.server.getServiceAuth?aud=nope", Auth::Access, None, 400, "InvalidRequest"),
    case("GET", "com.atproto.server.getServiceAuth?aud=did:web:x&exp=1", Auth::Access, None, 400, "BadExpiration"),
    case(
        "GET",
        "com.atproto.server.getServiceAuth?aud=did:web:x&exp=99999999999&lxm=app.bsky.feed.getTimeline",
        Auth::Access,
        None,
        400,
        "BadExpiration",
    ),
    case(
        "GET",
        "com.atproto.server.getServiceAuth?aud=did:web:x&lxm=com.atproto.server.getServiceAuth",
        Auth::Access,
        None,
        400,
        "InvalidRequest",
    ),
    case("GET", "com.atproto.server.getServiceAuth?aud=did:web:x&lxm=nope", Auth::Access, None, 400, "InvalidRequest"),
    // Preferences: objects with an app.bsky $type, nothing else.
    case("POST", "app.bsky.actor.putPreferences", Auth::Access, Some(r#"{"preferences":{}}"#), 400, "InvalidRequest"),
    case("POST", "app.bsky.actor.putPreferences", Auth::Access, Some(r#"{"preferences":[1]}"#), 400, "InvalidRequest"),
    case(
        "POST",
        "app.bsky.actor.putPreferences",
        Auth::Access,
        Some(r#"{"preferences":[{"$type":"com.example.pref"}]}"#),
        400,
        "InvalidRequest",
    ),
    case("GET", "app.bsky.feed.getFeed", Auth::Access, None, 400, "InvalidRequest"),
    // Proxying: a malformed or private service, or a method that never leaves the PDS.
    case("GET", "app.bsky.feed.getTimeline", Auth::None, None, 401, "AuthenticationRequired"),
    // An existing DID needs a token from its current PDS.
    case(
        "POST",
        "com.atproto.server.createAccount",
        Auth::None,
        Some(
            r#"{"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","handle":"mover.pds.test","email":"m@x.test","password":"pw"}"#,
        ),
        401,
        "AuthenticationRequired",
    ),
    case(
        "POST",
        "com.atproto.server.createAccount",
        Auth::None,
        Some(r#"{"did":"not-a-did","handle":"mover.pds.test","email":"m@x.test","password":"pw"}"#),
        400,
        "InvalidRequest",
    ),
    // An active account's repo is never replaced by an import.
    case("POST", "com.atproto.repo.importRepo", Auth::Access, Some("not a car"), 400, "InvalidRequest"),
    // Unknown methods.
    case("GET", "com.example.nothing", Auth::None, None, 501, "MethodNotImplemented"),
];

struct Creds {
    access: String,
    refresh: String,
    did: String,
}

async fn send(s: &Stack, creds: &Creds, method: &str, path: &str, auth: Auth, body: Option<&str>) -> (u16, Value) {
    let url = format!("{}/xrpc/{}", s.url, path.replace("{did}", &creds.did));
    let mut req = match method {
        "GET" => s.http.get(url),
        "POST" => s.http.post(url),
        "PUT" => s.http.put(url),
        _ => s.http.delete(url),
    };
    req = match auth {
        Auth::None => req,
        Auth::Access => req.bearer_auth(&creds.access),
        Auth::Refresh => req.bearer_auth(&creds.refresh),
        Auth::Admin => req.basic_auth("admin", Some("admin-secret")),
    };
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.replace("{did}", &creds.did));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Sends raw bytes on a new connection and returns the status and body of the answer.
fn raw(s: &Stack, request: &[u8], then: &[u8]) -> (u16, Value) {
    let addr = s.url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(request).unwrap();
    // The body, if any, is sent while the answer may already be on its way.
    let _ = conn.write_all(then);
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // The bodies here are small JSON objects, sent whole or as one chunk.
    let json = body.find('{').and_then(|i| serde_json::from_str(&body[i..=body.rfind('}')?]).ok());
    (status, json.unwrap_or(Value::String(body.to_owned())))
}

/// Opens a WebSocket that must be refused; returns the refusal's status and body.
async fn ws_refusal(s: &Stack, nsid: &str, token: Option<&str>) -> (u16, Value) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/xrpc/{nsid}", s.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = serde_json::from_slice(res.body().as_deref().unwrap_or(b"")).unwrap_or(Value::Null);
            (res.status().as_u16(), body)
        }
        Ok(_) => (101, Value::Null),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_bad_input_with_its_xrpc_error() {
    let s = stack(false);
    let a = s.account("sweep").await;
    let (_, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": a.handle, "password": a.password })),
        )
        .await;
    let creds = Creds {
        access: session["accessJwt"].as_str().unwrap().into(),
        refresh: session["refreshJwt"].as_str().unwrap().into(),
        did: a.did.clone(),
    };

    // The router's routes and this table agree.
    let router = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/xrpc/mod.rs")).unwrap();
    let listed: Vec<&str> = router.split(".route(\"/xrpc/").skip(1).map(|r| r.split('"').next().unwrap()).collect();
    let known: Vec<&str> = ROUTES.iter().map(|r| r.nsid).collect();
    assert_eq!(listed, known, "every route in src/http/xrpc/mod.rs needs an entry in ROUTES, in the same order");

    let mut failures = Vec::new();
    let mut check = |what: String, res: (u16, Value), status: u16, error: &str| {
        let named = res.1["error"] == error && res.1["message"].as_str().is_some_and(|m| !m.is_empty());
        if res.0 != status || !named {
            failures.push(format!("{what}: wanted {status} {error}, got {} {}", res.0, res.1));
        }
    };

    for c in CASES {
        let res = send(&s, &creds, c.method, c.path, c.auth, c.body).await;
        check(format!("{} {}", c.method, c.path), res, c.status, c.error);
    }

    for r in ROUTES {
        let websocket = matches!(r.nsid, "com.atproto.sync.subscribeRepos" | "com.atproto.server.signerConnect");
        // The wrong method.
        let wrong = if r.method == "GET" { "POST" } else { "GET" };
        let res = send(&s, &creds, wrong, r.nsid, r.auth, None).await;
        check(format!("{wrong} {}", r.nsid), res, 405, "InvalidRequest");
        // Credentials: none, garbage, and the wrong kind.
        if websocket && !matches!(r.auth, Auth::None) {
            for (token, status, error) in [
                (None, 401, "AuthenticationRequired"),
                (Some("garbage.token.here"), 400, "InvalidToken"),
                (Some(creds.refresh.as_str()), 400, "InvalidToken"),
            ] {
                let res = ws_refusal(&s, r.nsid, token).await;
                check(format!("WebSocket {} with {token:?}", r.nsid), res, status, error);
            }
        } else if !matches!(r.auth, Auth::None) {
            let res = send(&s, &creds, r.method, r.nsid, Auth::None, None).await;
            check(format!("{} {} without credentials", r.method, r.nsid), res, 401, "AuthenticationRequired");
            let url = format!("{}/xrpc/{}", s.url, r.nsid);
            let req = if r.method == "GET" { s.http.get(url) } else { s.http.post(url) };
            let res = req.bearer_auth("garbage.token.here").send().await.unwrap();
            let res = (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null));
            let (status, error) = match r.auth {
                Auth::Admin => (401, "AuthenticationRequired"),
                _ => (400, "InvalidToken"),
            };
            check(format!("{} {} with a garbage token", r.method, r.nsid), res, status, error);
            let other = match r.auth {
                Auth::Access => Some((Auth::Refresh, 400, "InvalidToken")),
                Auth::Refresh => Some((Auth::Access, 400, "InvalidToken")),
                Auth::Admin => Some((Auth::Access, 401, "AuthenticationRequired")),
                Auth::None => None,
            };
            if let Some((auth, status, error)) = other {
                let body = (r.method == "POST").then_some("{}");
                let res = send(&s, &creds, r.method, r.nsid, auth, body).await;
                check(format!("{} {} with a {auth:?} credential", r.method, r.nsid), res, status, error);
            }
        }
        if r.method == "POST" {
            // A declared length far over the limit is refused before the body is sent.
            let credential = match r.auth {
                Auth::None => String::new(),
                Auth::Access => format!("authorization: Bearer {}\r\n", creds.access),
                Auth::Refresh => format!("authorization: Bearer {}\r\n", creds.refresh),
                Auth::Admin => "authorization: Basic YWRtaW46YWRtaW4tc2VjcmV0\r\n".into(),
            };
            let head = format!(
                "POST /xrpc/{} HTTP/1.1\r\nhost: x\r\n{credential}content-type: application/json\r\n\
                 content-length: 200000000\r\n\r\n",
                r.nsid
            );
            let res = raw(&s, head.as_bytes(), b"");
            if r.nsid.ends_with("importRepo") {
                // Repos may be large (VOW_IMPORT_MAX_MB); this account is active, which it says first.
                check(format!("POST {} declaring 200 MB", r.nsid), res, 400, "InvalidRequest");
            } else {
                let error = if r.nsid.ends_with("uploadBlob") { "BlobTooLarge" } else { "PayloadTooLarge" };
                check(format!("POST {} declaring 200 MB", r.nsid), res, 413, error);
            }
            // Bodies that are not JSON (refreshSession, deleteSession, activateAccount and
            // requestPlcOperationSignature read none).
            if !r.nsid.ends_with("uploadBlob")
                && !matches!(r.auth, Auth::Refresh)
                && !r.nsid.ends_with(".activateAccount")
                && !r.nsid.ends_with("requestPlcOperationSignature")
                && !r.nsid.ends_with("requestEmailConfirmation")
                && !r.nsid.ends_with("requestEmailUpdate")
                && !r.nsid.ends_with("requestAccountDelete")
            {
                let res = send(&s, &creds, "POST", r.nsid, r.auth, Some("{not json")).await;
                if res.0 != 401 {
                    check(format!("POST {} with broken JSON", r.nsid), res, 400, "InvalidRequest");
                }
            }
        }
    }

    // A body over the limit that the client does send is read and refused, and the client
    // gets to read the refusal (the stack's JSON limit is 64 KiB).
    let big = vec![b' '; 3 * 1024 * 1024];
    for nsid in ["com.atproto.server.createSession", "com.atproto.repo.createRecord"] {
        let head = format!(
            "POST /xrpc/{nsid} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n",
            big.len()
        );
        let res = raw(&s, head.as_bytes(), &big);
        check(format!("POST {nsid} sending 3 MB"), res, 413, "PayloadTooLarge");
    }

    // A URL longer than the server reads.
    let long =
        format!("GET /xrpc/com.atproto.repo.describeRepo?repo={} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let res = raw(&s, long.as_bytes(), b"");
    check("a 70 kB URL".into(), res, 414, "InvalidRequest");

    // subscribeRepos with a cursor that is not a sequence number, as a WebSocket.
    for cursor in ["-1", "soon"] {
        let res = ws_refusal(&s, &format!("com.atproto.sync.subscribeRepos?cursor={cursor}"), None).await;
        check(format!("subscribeRepos?cursor={cursor}"), res, 400, "InvalidRequest");
    }

    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_missing_record_makes_no_commit() {
    let s = stack(false);
    let a = s.account("nodel").await;
    let _signer = s.signer(&a, &s.dir.path().join("nodel.key"));
    let post = json!({ "$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-12-01T10:00:00.000Z" });
    let body = json!({ "repo": a.did, "collection": "app.bsky.feed.post", "record": post });
    assert_eq!(s.call("POST", "com.atproto.repo.createRecord", Some(&a.access), Some(body)).await.0, 200);
    let (_, before) = s.call("GET", &format!("com.atproto.sync.getLatestCommit?did={}", a.did), None, None).await;
    let body = json!({ "repo": a.did, "collection": "app.bsky.feed.post", "rkey": "nothere" });
    let res = s.call("POST", "com.atproto.repo.deleteRecord", Some(&a.access), Some(body)).await;
    assert_eq!(res, (200, json!({})));
    let (_, after) = s.call("GET", &format!("com.atproto.sync.getLatestCommit?did={}", a.did), None, None).await;
    assert_eq!(before, after);
    // In a batch it is refused, and makes no commit either.
    let body = json!({ "repo": a.did, "writes": [
        { "$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": "nothere" }] });
    let res = s.call("POST", "com.atproto.repo.applyWrites", Some(&a.access), Some(body)).await;
    assert_error(&res, 400, "InvalidRequest");
    let (_, after) = s.call("GET", &format!("com.atproto.sync.getLatestCommit?did={}", a.did), None, None).await;
    assert_eq!(before, after);
}

//! Integration: the real `vow` binary with a real SQLite file, against the real PLC directory
//! server (`@did-plc/server`, started from `e2e/` on loopback), driven over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process and waits for a stdout line containing `marker`; returns the URL in it.
fn start(mut cmd: Command, marker: &str) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let proc = Proc(child);
    loop {
        let line = lines.next().expect("process exited before it was ready").unwrap();
        if line.contains(marker) {
            let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (proc, url);
        }
    }
}

fn e2e_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

struct Stack {
    _plc: Proc,
    _vow: Proc,
    plc: String,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn stack(require_invite: bool) -> Stack {
    assert!(
        e2e_dir().join("node_modules/@did-plc/server").exists(),
        "run `npm ci` in e2e/ first (scripts/test.sh does)"
    );
    let mut plc = Command::new("node");
    plc.arg(e2e_dir().join("plc-server.js")).arg("0");
    let (plc_proc, plc_url) = start(plc, "PLC listening");
    let dir = tempfile::tempdir().unwrap();
    let mut vow = Command::new(env!("CARGO_BIN_EXE_vow"));
    vow.arg("run")
        .current_dir(dir.path())
        .env("VOW_ADDR", "127.0.0.1:0")
        .env("VOW_DB_NAME", dir.path().join("vow.db"))
        .env("VOW_HOSTNAME", "pds.test")
        .env("VOW_DID", "did:web:pds.test")
        .env("VOW_PUBLIC_URL", "http://pds.test")
        .env("VOW_ROTATION_KEY_PATH", dir.path().join("keys/rotation.key"))
        .env("VOW_JWK_PATH", dir.path().join("keys/jwk.json"))
        .env("VOW_CONTACT_EMAIL", "admin@pds.test")
        .env("VOW_ADMIN_PASSWORD", "admin-secret")
        .env("VOW_SESSION_SECRET", "session-secret")
        .env("VOW_REQUIRE_INVITE", require_invite.to_string())
        .env("VOW_PLC_URL", &plc_url)
        .env("VOW_MAX_JSON_BODY", "65536")
        .env("VOW_LOG_LEVEL", "warn");
    let (vow_proc, url) = start(vow, "vow listening");
    Stack { _plc: plc_proc, _vow: vow_proc, plc: plc_url, url, http: reqwest::Client::new(), _dir: dir }
}

impl Stack {
    async fn call(&self, method: &str, nsid: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/xrpc/{nsid}", self.url);
        let mut req = if method == "GET" { self.http.get(url) } else { self.http.post(url) };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn invite(&self, uses: i64) -> String {
        let res = self
            .http
            .post(format!("{}/xrpc/com.atproto.server.createInviteCode", self.url))
            .basic_auth("admin", Some("admin-secret"))
            .json(&json!({ "useCount": uses }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned()
    }
}

fn assert_error(res: &(u16, Value), status: u16, name: &str) {
    assert_eq!(res.0, status, "{res:?}");
    assert_eq!(res.1["error"], name, "{res:?}");
    assert!(res.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{res:?}");
}

#[tokio::test]
async fn sign_up_log_in_refresh_and_bad_input() {
    let s = stack(true);
    let (status, describe) = s.call("GET", "com.atproto.server.describeServer", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(describe["availableUserDomains"], json!([".pds.test"]));
    assert_eq!(describe["inviteCodeRequired"], true);

    // Invite codes: required, checked, used up.
    let code = s.invite(1).await;
    let signup = |handle: &str, email: &str, invite: Option<&str>| json!({ "handle": handle, "email": email, "password": "hunter22", "inviteCode": invite });
    assert_error(
        &s.call("POST", "com.atproto.server.createAccount", None, Some(signup("alice.pds.test", "a@x.test", None)))
            .await,
        400,
        "InvalidInviteCode",
    );
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("alice.pds.test", "a@x.test", Some("NOPE-NOPE"))),
        )
        .await,
        400,
        "InvalidInviteCode",
    );
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("al!ce.pds.test", "a@x.test", Some(&code))),
        )
        .await,
        400,
        "InvalidHandle",
    );
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("alice.other.test", "a@x.test", Some(&code))),
        )
        .await,
        400,
        "UnsupportedDomain",
    );
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("alice.pds.test", "not-an-email", Some(&code))),
        )
        .await,
        400,
        "InvalidEmail",
    );

    let (status, created) = s
        .call("POST", "com.atproto.server.createAccount", None, Some(signup("Alice.pds.test", "a@x.test", Some(&code))))
        .await;
    assert_eq!(status, 200, "{created}");
    let did = created["did"].as_str().unwrap().to_owned();
    assert!(did.starts_with("did:plc:"));
    assert_eq!(created["handle"], "alice.pds.test");

    // The DID is on the real PLC, pointing at this PDS.
    let doc: Value = s.http.get(format!("{}/{did}", s.plc)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["alsoKnownAs"], json!(["at://alice.pds.test"]));
    assert_eq!(doc["service"][0]["serviceEndpoint"], "http://pds.test");

    // The invite is used up; the handle and email are taken.
    let code2 = s.invite(5).await;
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("bob.pds.test", "b@x.test", Some(&code))),
        )
        .await,
        400,
        "InvalidInviteCode",
    );
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("alice.pds.test", "b@x.test", Some(&code2))),
        )
        .await,
        400,
        "HandleNotAvailable",
    );
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createAccount",
            None,
            Some(signup("bob.pds.test", "A@x.test", Some(&code2))),
        )
        .await,
        400,
        "EmailNotAvailable",
    );

    // Sessions.
    assert_error(
        &s.call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": "alice.pds.test", "password": "wrong"})),
        )
        .await,
        401,
        "AuthenticationRequired",
    );
    let (status, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": "alice.pds.test", "password": "hunter22"})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let access = session["accessJwt"].as_str().unwrap().to_owned();
    let refresh = session["refreshJwt"].as_str().unwrap().to_owned();
    let (status, me) = s.call("GET", "com.atproto.server.getSession", Some(&access), None).await;
    assert_eq!((status, me["did"].as_str()), (200, Some(did.as_str())));
    assert_error(&s.call("GET", "com.atproto.server.getSession", None, None).await, 401, "AuthenticationRequired");
    assert_error(
        &s.call("GET", "com.atproto.server.getSession", Some("garbage.token.here"), None).await,
        400,
        "InvalidToken",
    );
    assert_error(&s.call("GET", "com.atproto.server.getSession", Some(&refresh), None).await, 400, "InvalidToken");

    // Refresh rotates; replaying the old refresh token ends the session.
    let (status, refreshed) = s.call("POST", "com.atproto.server.refreshSession", Some(&refresh), None).await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh2 = refreshed["refreshJwt"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert_error(&s.call("POST", "com.atproto.server.refreshSession", Some(&refresh), None).await, 400, "ExpiredToken");
    assert_error(
        &s.call("POST", "com.atproto.server.refreshSession", Some(&refresh2), None).await,
        400,
        "ExpiredToken",
    );
    assert_error(&s.call("GET", "com.atproto.server.getSession", Some(&access), None).await, 400, "ExpiredToken");

    // deleteSession revokes the access token too.
    let (_, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": did, "password": "hunter22"})),
        )
        .await;
    let access = session["accessJwt"].as_str().unwrap().to_owned();
    let refresh = session["refreshJwt"].as_str().unwrap().to_owned();
    assert_eq!(s.call("POST", "com.atproto.server.deleteSession", Some(&refresh), None).await.0, 200);
    assert_error(&s.call("GET", "com.atproto.server.getSession", Some(&access), None).await, 400, "ExpiredToken");

    // App passwords log in with a restricted scope and die when revoked.
    let (_, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": "a@x.test", "password": "hunter22"})),
        )
        .await;
    let access = session["accessJwt"].as_str().unwrap().to_owned();
    let (status, app) =
        s.call("POST", "com.atproto.server.createAppPassword", Some(&access), Some(json!({"name": "bot"}))).await;
    assert_eq!(status, 200, "{app}");
    let (_, app_session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": "alice.pds.test", "password": app["password"]})),
        )
        .await;
    let app_access = app_session["accessJwt"].as_str().unwrap().to_owned();
    assert_eq!(s.call("GET", "com.atproto.server.getSession", Some(&app_access), None).await.0, 200);
    assert_error(
        &s.call("POST", "com.atproto.server.createAppPassword", Some(&app_access), Some(json!({"name": "x"}))).await,
        403,
        "Forbidden",
    );
    assert_error(
        &s.call("POST", "com.atproto.server.createAppPassword", Some(&access), Some(json!({"name": "bot"}))).await,
        400,
        "DuplicateName",
    );
    let (_, list) = s.call("GET", "com.atproto.server.listAppPasswords", Some(&access), None).await;
    assert_eq!(list["passwords"][0]["name"], "bot");
    assert_eq!(
        s.call("POST", "com.atproto.server.revokeAppPassword", Some(&access), Some(json!({"name": "bot"}))).await.0,
        200
    );
    assert_error(&s.call("GET", "com.atproto.server.getSession", Some(&app_access), None).await, 400, "ExpiredToken");

    // Reads on the new repo.
    let (status, repo) = s.call("GET", &format!("com.atproto.repo.describeRepo?repo={did}"), None, None).await;
    assert_eq!(status, 200, "{repo}");
    assert_eq!(repo["handleIsCorrect"], true);
    let (status, list) = s
        .call("GET", "com.atproto.repo.listRecords?repo=alice.pds.test&collection=app.bsky.feed.post", None, None)
        .await;
    assert_eq!((status, list["records"].as_array().map(Vec::len)), (200, Some(0)));
    assert_error(
        &s.call(
            "GET",
            "com.atproto.repo.getRecord?repo=alice.pds.test&collection=app.bsky.feed.post&rkey=3abc",
            None,
            None,
        )
        .await,
        400,
        "RecordNotFound",
    );
    assert_error(
        &s.call("GET", "com.atproto.repo.describeRepo?repo=nobody.pds.test", None, None).await,
        400,
        "RepoNotFound",
    );
    let (status, resolved) =
        s.call("GET", "com.atproto.identity.resolveHandle?handle=alice.pds.test", None, None).await;
    assert_eq!((status, resolved["did"].as_str()), (200, Some(did.as_str())));

    // Malformed and oversize bodies.
    assert_error(
        &s.call("POST", "com.atproto.server.createSession", None, Some(json!({"identifier": 5}))).await,
        400,
        "InvalidRequest",
    );
    let big = json!({ "identifier": "x".repeat(100_000), "password": "p" });
    assert_error(&s.call("POST", "com.atproto.server.createSession", None, Some(big)).await, 413, "PayloadTooLarge");
    assert_error(&s.call("GET", "com.atproto.server.noSuchMethod", None, None).await, 501, "MethodNotImplemented");
    let (status, _) = s.call("GET", "_health", None, None).await;
    assert_eq!(status, 200);
}

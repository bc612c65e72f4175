//! Integration: the real `vow` binary with a real SQLite file, against the real PLC directory
//! server (`@did-plc/server`, started from `e2e/` on loopback), driven over HTTP.

mod common;

use common::*;
use serde_json::{Value, json};

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

/// The PLC directory of `scripts/run-local.sh` keeps its operations in a file and replays them
/// at start-up, so an account made before a restart still resolves after it.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_plc_directory_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("plc-ops.jsonl");
    let plc = |port: u16| {
        let mut cmd = std::process::Command::new("node");
        cmd.arg(e2e_dir().join("plc-server.js")).arg(port.to_string()).arg("--data").arg(&log);
        start(cmd, "PLC listening")
    };
    let port = free_port();
    let (first, url) = plc(port);
    // A real account on a real vow, whose genesis operation goes through the logging front.
    let s = stack(false);
    let mut vow = s;
    vow.plc = url.clone();
    vow.restart_vow(&[("VOW_PLC_URL", &url)]);
    let acct = vow.account("keeper").await;
    let http = reqwest::Client::new();
    let doc: Value = http.get(format!("{url}/{}", acct.did)).send().await.unwrap().json().await.unwrap();
    drop(first);

    let (_second, url) = plc(port);
    let again = http.get(format!("{url}/{}", acct.did)).send().await.unwrap();
    assert_eq!(again.status(), 200, "the DID is gone after the restart");
    assert_eq!(again.json::<Value>().await.unwrap(), doc);
    // And the account still works against it: its handle update is a new operation.
    let res = vow
        .call(
            "POST",
            "com.atproto.identity.updateHandle",
            Some(&acct.access),
            Some(json!({ "handle": "kept.pds.test" })),
        )
        .await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}

/// The commands that change a PDS refuse to make a database that is not there, and say which
/// one they looked for; each subcommand lists only its own flags.
#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_refuse_a_missing_database() {
    let empty = tempfile::tempdir().unwrap();
    let vow = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vow"));
        cmd.current_dir(empty.path()).env_remove("VOW_DB_NAME");
        cmd
    };
    let out = vow().args(["create-invite-code", "--uses", "1"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no database at") && err.contains("vow.db"), "{err}");
    assert!(!empty.path().join("vow.db").exists(), "it made a database");
    let out = vow().args(["reset-password", "--did", "did:plc:x"]).output().unwrap();
    assert!(!out.status.success() && !empty.path().join("vow.db").exists());

    let help = String::from_utf8(vow().args(["signer", "--help"]).output().unwrap().stdout).unwrap();
    assert!(help.contains("--key-file") && !help.contains("--admin-password") && !help.contains("--db-name"), "{help}");

    // Pointed at a running server's database, the code it prints is one the server takes.
    let s = stack(true);
    let out = vow()
        .args(["create-invite-code", "--uses", "1"])
        .env("VOW_DB_NAME", s.dir.path().join("vow.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let code = String::from_utf8(out.stdout).unwrap().trim().rsplit(' ').next().unwrap().to_owned();
    let body =
        json!({ "handle": "invited.pds.test", "email": "i@x.test", "password": "pw-invited", "inviteCode": code });
    assert_eq!(s.call("POST", "com.atproto.server.createAccount", None, Some(body)).await.0, 200);
}

/// With a local public URL, pages opened at the listening address go to the public URL, where
/// passkeys and sign-in work.
#[tokio::test(flavor = "multi_thread")]
async fn pages_at_the_listening_address_go_to_the_public_url() {
    let port = free_port();
    let public = format!("http://localhost:{port}");
    let s = stack_with(
        false,
        &[("VOW_ADDR", &format!("127.0.0.1:{port}")), ("VOW_HOSTNAME", "localhost"), ("VOW_PUBLIC_URL", &public)],
    );
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = http.get(format!("http://127.0.0.1:{port}/account/signin?x=1")).send().await.unwrap();
    assert_eq!(res.status(), 307);
    assert_eq!(res.headers()["location"], format!("{public}/account/signin?x=1").as_str());
    assert_eq!(http.get(format!("{public}/account/signin")).send().await.unwrap().status(), 200);
    // The API answers at any address.
    assert_eq!(s.call("GET", "com.atproto.server.describeServer", None, None).await.0, 200);
}

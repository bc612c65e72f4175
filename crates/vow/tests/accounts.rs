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

    // Sessions. A wrong password and an identifier nobody has get the same answer after the
    // same work: one password check each, so the time does not tell which addresses have
    // accounts.
    for identifier in ["alice.pds.test", "nobody@x.test"] {
        let checks = s.metric("vow_password_checks_total").await;
        assert_error(
            &s.call(
                "POST",
                "com.atproto.server.createSession",
                None,
                Some(json!({"identifier": identifier, "password": "wrong"})),
            )
            .await,
            401,
            "AuthenticationRequired",
        );
        assert_eq!(s.metric("vow_password_checks_total").await - checks, 1.0, "{identifier}");
    }
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

/// A writable connection to the running server's database, for what a test cannot wait for
/// (a code's expiry).
async fn writable_db(s: &Stack) -> sqlx::SqlitePool {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("vow.db"));
    sqlx::SqlitePool::connect_with(opts).await.unwrap()
}

/// Makes every live code of `did` expired.
async fn expire_codes(s: &Stack, did: &str) {
    let db = writable_db(s).await;
    sqlx::query("UPDATE key_challenges SET expires_at = 1 WHERE did = ?").bind(did).execute(&db).await.unwrap();
}

/// Every email flow through a real SMTP server on loopback (aiosmtpd): the codes are read from
/// the mail it received.
#[tokio::test(flavor = "multi_thread")]
async fn email_flows_work_through_a_real_smtp_server() {
    let smtp = Smtp::start();
    let env = smtp.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = stack_with(false, &env);
    let mail = smtp.dir.path();
    let alice = s.account("alice").await;
    let call = |nsid: &'static str, body: Value| s.call("POST", nsid, Some(&alice.access), Some(body));
    let s = &s;
    let session =
        |access: String| async move { s.call("GET", "com.atproto.server.getSession", Some(&access), None).await };
    assert_eq!(session(alice.access.clone()).await.1["emailConfirmed"], false);

    // Confirmation: a wrong code, the wrong address, then the mailed code, once.
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "alice@x.test", "token": "AAAAA-BBBBB" })).await;
    assert_error(&res, 400, "InvalidToken");
    let res = s.call("POST", "com.atproto.server.requestEmailConfirmation", Some(&alice.access), None).await;
    assert_eq!(res.0, 200, "{res:?}");
    let text = mail_to(mail, "alice@x.test", 0);
    assert!(text.contains("Subject: Confirm your email address"), "{text}");
    let code = code_in(&text).expect("a code in the mail");
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "other@x.test", "token": code })).await;
    assert_error(&res, 400, "InvalidEmail");
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "alice@x.test", "token": code })).await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(session(alice.access.clone()).await.1["emailConfirmed"], true);
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "alice@x.test", "token": code })).await;
    assert_error(&res, 400, "InvalidToken");

    // A change of address needs a code once the address is confirmed; the new one is
    // unconfirmed; an address in use is refused without using the code up.
    let _bob = s.account("bob").await;
    let res = s.call("POST", "com.atproto.server.requestEmailUpdate", Some(&alice.access), None).await;
    assert_eq!((res.0, res.1["tokenRequired"].clone()), (200, json!(true)), "{res:?}");
    let code = code_in(&mail_to(mail, "alice@x.test", 1)).unwrap();
    assert_error(&call("com.atproto.server.updateEmail", json!({ "email": "new@x.test" })).await, 400, "TokenRequired");
    let res = call("com.atproto.server.updateEmail", json!({ "email": "bob@x.test", "token": code })).await;
    assert_error(&res, 400, "InvalidRequest");
    let res = call("com.atproto.server.updateEmail", json!({ "email": "new@x.test", "token": code })).await;
    assert_eq!(res.0, 200, "{res:?}");
    let (_, now) = session(alice.access.clone()).await;
    assert_eq!((now["email"].clone(), now["emailConfirmed"].clone()), (json!("new@x.test"), json!(false)));

    // A code mailed to an address is worthless once the address changes (this one is not
    // confirmed, so the change needs no code).
    s.call("POST", "com.atproto.server.requestEmailConfirmation", Some(&alice.access), None).await;
    let stale = code_in(&mail_to(mail, "new@x.test", 0)).unwrap();
    let res = call("com.atproto.server.updateEmail", json!({ "email": "newer@x.test" })).await;
    assert_eq!(res.0, 200, "{res:?}");
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "newer@x.test", "token": stale })).await;
    assert_error(&res, 400, "InvalidToken");
    let res = call("com.atproto.server.updateEmail", json!({ "email": "new@x.test" })).await;
    assert_eq!(res.0, 200, "{res:?}");

    // An expired code says so, and is gone after.
    s.call("POST", "com.atproto.server.requestEmailConfirmation", Some(&alice.access), None).await;
    let code = code_in(&mail_to(mail, "new@x.test", 1)).unwrap();
    expire_codes(s, &alice.did).await;
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "new@x.test", "token": code })).await;
    assert_error(&res, 400, "ExpiredToken");
    let res = call("com.atproto.server.confirmEmail", json!({ "email": "new@x.test", "token": code })).await;
    assert_error(&res, 400, "InvalidToken");

    // Password reset without a session: the same answer for an unknown address; the mailed
    // code sets the password and ends every session.
    let reset = |body: Value| s.call("POST", "com.atproto.server.requestPasswordReset", None, Some(body));
    assert_eq!(reset(json!({ "email": "nobody@x.test" })).await.0, 200);
    assert_eq!(reset(json!({ "email": "new@x.test" })).await.0, 200);
    let code = code_in(&mail_to(mail, "new@x.test", 2)).unwrap();
    let set = |token: String, pw: &'static str| {
        s.call("POST", "com.atproto.server.resetPassword", None, Some(json!({ "token": token, "password": pw })))
    };
    assert_error(&set(code.clone(), "short").await, 400, "InvalidPassword");
    assert_error(&set("AAAAA-BBBBB".into(), "a-new-long-password").await, 400, "InvalidToken");
    assert_eq!(set(code.clone(), "a-new-long-password").await.0, 200);
    assert_error(&set(code, "another-long-password").await, 400, "InvalidToken");
    let res = session(alice.access.clone()).await;
    assert_eq!(res.0, 400, "the old session ended: {res:?}");
    let login = |pw: &'static str| {
        s.call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": "alice.pds.test", "password": pw })),
        )
    };
    assert_error(&login("pw-alice-secret").await, 401, "AuthenticationRequired");
    let (status, fresh) = login("a-new-long-password").await;
    assert_eq!(status, 200, "{fresh}");
    let access = fresh["accessJwt"].as_str().unwrap().to_owned();
    assert_eq!(mails_to(mail, "nobody@x.test"), 0, "no mail for an unknown address");

    // Deletion: the mailed code and the password.
    let res = s.call("POST", "com.atproto.server.requestAccountDelete", Some(&access), None).await;
    assert_eq!(res.0, 200, "{res:?}");
    let code = code_in(&mail_to(mail, "new@x.test", 3)).unwrap();
    let delete = |pw: &'static str, token: &str| {
        s.call(
            "POST",
            "com.atproto.server.deleteAccount",
            None,
            Some(json!({ "did": alice.did, "password": pw, "token": token })),
        )
    };
    assert_error(&delete("wrong-password", &code).await, 401, "AuthenticationRequired");
    assert_error(&delete("a-new-long-password", "AAAAA-BBBBB").await, 400, "InvalidToken");
    assert_eq!(delete("a-new-long-password", &code).await.0, 200);
    assert_error(&login("a-new-long-password").await, 401, "AuthenticationRequired");
}

/// Deactivation, takedown and deletion are honoured by sync, writes and sessions, and each is
/// an `#account` event; deletion leaves no row of the account and no block only it held, and
/// keeps the blocks another account shares.
#[tokio::test(flavor = "multi_thread")]
async fn status_changes_are_honoured_and_deletion_leaves_nothing_behind() {
    let s = stack(false);
    let alice = s.account("alice").await;
    let bob = s.account("bob").await;
    let keys = tempfile::tempdir().unwrap();
    let _a = s.signer(&alice, &keys.path().join("a.key"));
    let _b = s.signer(&bob, &keys.path().join("b.key"));
    // The same record in both repos: one block, held by both.
    let record =
        json!({ "$type": "app.bsky.feed.post", "text": "same words", "createdAt": "2026-12-02T10:00:00.000Z" });
    let mut shared = String::new();
    for who in [&alice, &bob] {
        let body =
            json!({ "repo": who.did, "collection": "app.bsky.feed.post", "rkey": "3kaaaaaaaaaa2", "record": record });
        let res = s.call("POST", "com.atproto.repo.putRecord", Some(&who.access), Some(body)).await;
        assert_eq!(res.0, 200, "{res:?}");
        shared = res.1["cid"].as_str().unwrap().to_owned();
    }
    let unique = {
        let body = json!({ "repo": alice.did, "collection": "app.bsky.feed.post",
            "record": { "$type": "app.bsky.feed.post", "text": "only alice", "createdAt": "2026-12-02T10:00:00.000Z" } });
        s.call("POST", "com.atproto.repo.createRecord", Some(&alice.access), Some(body)).await.1["cid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let s = &s;
    let latest = |did: &str| {
        let path = format!("com.atproto.sync.getLatestCommit?did={did}");
        async move { s.call("GET", &path, None, None).await }
    };

    // Deactivated: sync says so, reactivation restores.
    s.call("POST", "com.atproto.server.deactivateAccount", Some(&alice.access), Some(json!({}))).await;
    assert_error(&latest(&alice.did).await, 400, "RepoDeactivated");
    assert_eq!(s.call("POST", "com.atproto.server.activateAccount", Some(&alice.access), None).await.0, 200);
    assert_eq!(latest(&alice.did).await.0, 200);

    // Taken down by the operator: no login, no sync, sessions ended; lifted, all back.
    let admin = |body: Value| {
        let http = s.http.clone();
        let url = format!("{}/xrpc/com.atproto.admin.updateSubjectStatus", s.url);
        async move {
            let res = http.post(url).basic_auth("admin", Some("admin-secret")).json(&body).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let subject = json!({ "$type": "com.atproto.admin.defs#repoRef", "did": bob.did });
    let res = admin(json!({ "subject": subject, "takedown": { "applied": true, "ref": "case-1" } })).await;
    assert_eq!(res.0, 200, "{res:?}");
    let login = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": bob.handle, "password": bob.password })),
        )
        .await;
    assert_error(&login, 401, "AccountTakedown");
    assert_error(&latest(&bob.did).await, 400, "RepoTakendown");
    let res = s.call("GET", "com.atproto.server.getSession", Some(&bob.access), None).await;
    assert_eq!(res.0, 400, "the session ended: {res:?}");
    let res = admin(json!({ "subject": subject, "takedown": { "applied": false } })).await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(latest(&bob.did).await.0, 200);

    // Deleted: nothing of alice's stays, bob's copy of the shared record does.
    let db = s.db().await;
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blocks").fetch_one(&db).await.unwrap();
    // The user's own deletion (with the mailed code) is in the email test; here the operator's.
    let res = s.admin("com.atproto.admin.deleteAccount", json!({ "did": alice.did })).await;
    assert_eq!(res.0, 200, "{res:?}");
    for table in
        ["accounts", "records", "record_blobs", "repo_blocks", "blobs", "sessions", "app_passwords", "key_challenges"]
    {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table} WHERE did = ?")))
            .bind(&alice.did)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} still holds rows of the deleted account");
    }
    let has = |cid: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM blocks WHERE cid = ?")
                .bind(cid)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(has(unique).await, 0, "a block only alice held is gone");
    assert_eq!(has(shared.clone()).await, 1, "the block bob shares stays");
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blocks").fetch_one(&db).await.unwrap();
    assert!(after < before, "{after} blocks after, {before} before");
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM repo_blocks r WHERE r.cid = b.cid)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "no block is left that no repo references");
    assert_error(&latest(&alice.did).await, 400, "RepoNotFound");
    // The firehose keeps only the event that says the account is gone.
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM firehose WHERE did = ?").bind(&alice.did).fetch_all(&db).await.unwrap();
    assert_eq!(kinds, vec!["account".to_owned()], "a deleted account's history stays off the firehose");
    let res = s
        .call(
            "GET",
            &format!("com.atproto.sync.getRecord?did={}&collection=app.bsky.feed.post&rkey=3kaaaaaaaaaa2", bob.did),
            None,
            None,
        )
        .await;
    assert_eq!(res.0, 200, "bob's record is still served");

    // Every change was an #account event, in order.
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT did, kind FROM firehose WHERE kind = 'account' ORDER BY seq")
            .fetch_all(&db)
            .await
            .unwrap_or_default();
    let of = |did: &str| statuses.iter().filter(|(d, _)| d == did).count();
    assert_eq!(of(&bob.did), 3, "bob: created, taken down, restored: {statuses:?}");
    assert_eq!(of(&alice.did), 1, "alice: only the deletion is left: {statuses:?}");
}

/// `vow account …` manages accounts through the running server's admin API.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_manages_accounts_from_the_cli() {
    let s = stack(false);
    let alice = s.account("alice").await;
    let vow = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vow"))
            .arg("account")
            .args(args)
            .env("VOW_ADMIN_URL", &s.url)
            .env("VOW_ADMIN_PASSWORD", "admin-secret")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = vow(&["list"]);
    assert!(ok && out.contains(&alice.did) && out.contains("alice.pds.test") && out.contains("alice@x.test"), "{out}");
    let (ok, out) = vow(&["takedown", &alice.did, "--ref", "case-7"]);
    assert!(ok, "{out}");
    let (ok, out) = vow(&["info", &alice.did]);
    assert!(ok && out.contains("taken down (case-7)"), "{out}");
    let login = json!({ "identifier": alice.handle, "password": alice.password });
    assert_error(
        &s.call("POST", "com.atproto.server.createSession", None, Some(login.clone())).await,
        401,
        "AccountTakedown",
    );
    assert!(vow(&["restore", &alice.did]).0);
    assert_eq!(s.call("POST", "com.atproto.server.createSession", None, Some(login)).await.0, 200);
    assert!(vow(&["set-email", &alice.did, "alice2@x.test"]).0);
    let (ok, out) = vow(&["delete", &alice.did]);
    assert!(!ok && out.contains("--yes"), "{out}");
    assert!(vow(&["delete", &alice.did, "--yes"]).0);
    let (ok, out) = vow(&["list"]);
    assert!(ok && !out.contains(&alice.did), "{out}");
    // A wrong admin password is refused, and says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vow"))
        .args(["account", "list", "--pds", &s.url, "--admin-password", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A server on a public (https) address with no SMTP says so where mail is needed, instead of
/// pretending to send.
#[tokio::test(flavor = "multi_thread")]
async fn without_smtp_a_public_server_says_mail_is_not_set_up() {
    // A public server needs strong secrets to start at all.
    let s = stack_with(
        false,
        &[
            ("VOW_PUBLIC_URL", "https://pds.test"),
            ("VOW_ADMIN_PASSWORD", "a-long-admin-password-for-tests"),
            ("VOW_SESSION_SECRET", "a-long-session-secret-for-tests"),
        ],
    );
    let alice = s.account("alice").await;
    let res = s.call("POST", "com.atproto.server.requestEmailConfirmation", Some(&alice.access), None).await;
    assert_error(&res, 400, "EmailNotConfigured");
    assert!(res.1["message"].as_str().unwrap().contains("VOW_SMTP_HOST"), "{res:?}");
    let res =
        s.call("POST", "com.atproto.server.requestPasswordReset", None, Some(json!({ "email": "alice@x.test" }))).await;
    assert_error(&res, 400, "EmailNotConfigured");
}

/// The password-reset timing benchmark (run by hand; not part of the test run): the answer for
/// an address that has an account and for one that has none, alternately, 300 times each.
///   cargo test -p vow --test accounts -- --ignored --nocapture bench_password_reset
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_password_reset_timing() {
    let mail = tempfile::tempdir().unwrap();
    let s = stack_with(false, &[("VOW_MAIL_DIR", mail.path().to_str().unwrap())]);
    s.account("alice").await;
    let url = format!("{}/xrpc/com.atproto.server.requestPasswordReset", s.url);
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..600 {
        let email = if i % 2 == 0 { "alice@x.test" } else { "nobody@x.test" };
        let started = std::time::Instant::now();
        let res = s.http.post(&url).json(&json!({ "email": email })).send().await.unwrap();
        let status = res.status();
        let _ = res.bytes().await;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(status, 200);
        if i >= 40 {
            if i % 2 == 0 { known.push(took) } else { unknown.push(took) }
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[v.len() * 9 / 10], v.iter().sum::<f64>() / v.len() as f64)
    };
    let (k50, k90, kmean) = stats(&mut known);
    let (u50, u90, umean) = stats(&mut unknown);
    println!("known address:   median {k50:.3} ms, p90 {k90:.3} ms, mean {kmean:.3} ms ({} requests)", known.len());
    println!("unknown address: median {u50:.3} ms, p90 {u90:.3} ms, mean {umean:.3} ms ({} requests)", unknown.len());
}

/// A page sign-in ends when the password changes or the account is taken down, as app
/// sessions do.
#[tokio::test(flavor = "multi_thread")]
async fn page_sign_ins_end_with_a_new_password_or_a_takedown() {
    let s = stack(false);
    let alice = s.account("alice").await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = || async {
        let res = http
            .post(format!("{}/account/signin", s.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("identifier={}&password={}", alice.handle, alice.password))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    let page = |cookie: String| {
        let http = http.clone();
        let url = format!("{}/account", s.url);
        async move { http.get(url).header("cookie", cookie).send().await.unwrap().status().as_u16() }
    };
    let admin = |nsid: &'static str, body: Value| {
        let http = http.clone();
        let url = format!("{}/xrpc/{nsid}", s.url);
        async move {
            let res = http.post(url).basic_auth("admin", Some("admin-secret")).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    let cookie = sign_in().await;
    assert_eq!(page(cookie.clone()).await, 200);
    admin("com.atproto.admin.updateAccountPassword", json!({ "did": alice.did, "password": "another-password" })).await;
    assert_eq!(page(cookie).await, 303, "the old sign-in ends with the old password");

    let alice = Account { password: "another-password".into(), ..alice };
    let sign_in = || async {
        let res = http
            .post(format!("{}/account/signin", s.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("identifier={}&password={}", alice.handle, alice.password))
            .send()
            .await
            .unwrap();
        res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    let cookie = sign_in().await;
    assert_eq!(page(cookie.clone()).await, 200);
    let subject = json!({ "$type": "com.atproto.admin.defs#repoRef", "did": alice.did });
    admin("com.atproto.admin.updateSubjectStatus", json!({ "subject": subject, "takedown": { "applied": true } }))
        .await;
    assert_eq!(page(cookie).await, 303, "a taken-down account's sign-in ends");
}

/// Every way a session ends takes its access token with it at once, even a token the server
/// has just seen (and remembers as live): sign-out, the account page's revocations, the
/// operator's password change, takedown and deletion.
#[tokio::test(flavor = "multi_thread")]
async fn every_way_of_ending_a_session_ends_its_token_at_once() {
    let stack = stack(false);
    let s = &stack;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = |a: &Account, password: &str| {
        let body = json!({ "identifier": a.handle, "password": password });
        async move {
            let (status, session) = s.call("POST", "com.atproto.server.createSession", None, Some(body)).await;
            assert_eq!(status, 200, "{session}");
            (session["accessJwt"].as_str().unwrap().to_owned(), session["refreshJwt"].as_str().unwrap().to_owned())
        }
    };
    let live = |token: String| async move { s.call("GET", "com.atproto.server.getSession", Some(&token), None).await };
    // Used right before it ends, then refused right after.
    let ends = |token: String, how: &'static str| async move {
        assert_eq!(live(token.clone()).await.0, 200, "{how}: live before");
        token
    };
    let ended = |token: String, how: &'static str| async move {
        let res = live(token).await;
        assert_eq!((res.0, res.1["error"].as_str()), (400, Some("ExpiredToken")), "{how}: {res:?}");
    };
    let page_post = |a: &Account, path: &'static str, body: Value| {
        let (http, url, handle, password) = (http.clone(), s.url.clone(), a.handle.clone(), a.password.clone());
        async move {
            let res = http
                .post(format!("{url}/account/signin"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("identifier={handle}&password={password}"))
                .send()
                .await
                .unwrap();
            let cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
            let res = http.post(format!("{url}{path}")).header("cookie", cookie).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}: {}", res.text().await.unwrap());
        }
    };
    let admin = |nsid: &'static str, body: Value| {
        let (http, url) = (http.clone(), format!("{}/xrpc/{nsid}", s.url));
        async move {
            let res = http.post(url).basic_auth("admin", Some("admin-secret")).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200, "{nsid}: {}", res.text().await.unwrap());
        }
    };
    let sid_of = |token: &str| {
        use base64::Engine;
        let claims = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        claims["sid"].as_str().unwrap().to_owned()
    };
    let alice = s.account("alice").await;

    // Sign-out with the refresh token.
    let (access, refresh) = login(&alice, &alice.password).await;
    let access = ends(access, "deleteSession").await;
    assert_eq!(s.call("POST", "com.atproto.server.deleteSession", Some(&refresh), None).await.0, 200);
    ended(access, "deleteSession").await;

    // The account page: one session, and an app password's sessions.
    let (access, _) = login(&alice, &alice.password).await;
    let access = ends(access, "page session revoke").await;
    page_post(&alice, "/account/sessions/revoke", json!({ "id": sid_of(&access) })).await;
    ended(access, "page session revoke").await;
    let (status, app) = s
        .call("POST", "com.atproto.server.createAppPassword", Some(&alice.access), Some(json!({ "name": "bot" })))
        .await;
    assert_eq!(status, 200, "{app}");
    let (app_access, _) = login(&alice, app["password"].as_str().unwrap()).await;
    let app_access = ends(app_access, "page app password revoke").await;
    page_post(&alice, "/account/app-passwords/revoke", json!({ "name": "bot" })).await;
    ended(app_access, "page app password revoke").await;

    // The operator: a new password, a takedown, a deletion.
    let access = ends(alice.access.clone(), "admin password").await;
    admin("com.atproto.admin.updateAccountPassword", json!({ "did": alice.did, "password": "another-password" })).await;
    ended(access, "admin password").await;
    let (access, _) = login(&alice, "another-password").await;
    let access = ends(access, "takedown").await;
    let subject = json!({ "$type": "com.atproto.admin.defs#repoRef", "did": alice.did });
    admin("com.atproto.admin.updateSubjectStatus", json!({ "subject": subject, "takedown": { "applied": true } }))
        .await;
    ended(access, "takedown").await;
    admin("com.atproto.admin.updateSubjectStatus", json!({ "subject": subject, "takedown": { "applied": false } }))
        .await;
    let (access, _) = login(&alice, "another-password").await;
    let access = ends(access, "deletion").await;
    admin("com.atproto.admin.deleteAccount", json!({ "did": alice.did })).await;
    ended(access, "deletion").await;
}

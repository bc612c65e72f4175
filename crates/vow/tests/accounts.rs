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

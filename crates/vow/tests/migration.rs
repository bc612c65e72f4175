//! Moving an account here, step one: `createAccount` with an existing DID, vouched for by a
//! service token from its current PDS. The DID lives on the real PLC server with keys only the
//! test (standing in for the old PDS) holds.

mod common;

use atproto::crypto::{Algorithm, Keypair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};
use vow::service::identity::plc::Operation;

/// A DID hosted elsewhere: its genesis on the PLC names `key` as rotation and `#atproto` key.
async fn foreign_did(s: &Stack, key: &Keypair) -> String {
    let did_key = key.public_key().to_did_key();
    let op = Operation::genesis(vec![did_key.clone()], did_key, "mover.old.example", "https://old.example").sign(key);
    let did = op.did();
    let res = s.http.post(format!("{}/{did}", s.plc)).json(&op).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    did
}

fn token(key: &Keypair, claims: Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256K"}"#);
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = key.sign(format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn create(s: &Stack, did: &str, name: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = s.http.post(format!("{}/xrpc/com.atproto.server.createAccount", s.url)).json(&json!({
        "did": did, "handle": format!("{name}.pds.test"), "email": format!("{name}@x.test"), "password": "pw-mover-secret",
    }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_did_arrives_deactivated_only_with_a_token_its_key_signed() {
    let s = stack(false);
    let key = Keypair::generate(Algorithm::K256);
    let did = foreign_did(&s, &key).await;
    let lxm = "com.atproto.server.createAccount";
    let good = json!({ "iss": did, "aud": "did:web:pds.test", "lxm": lxm, "exp": now() + 60, "iat": now() });

    // Refused, and nothing created: no token, or one that is wrong in any way.
    assert_error(&create(&s, &did, "mover", None).await, 401, "AuthenticationRequired");
    let other_key = Keypair::generate(Algorithm::K256);
    let with = |field: &str, v: Value| {
        let mut c = good.clone();
        c[field] = v;
        c
    };
    for (what, t) in [
        ("expired", token(&key, with("exp", (now() - 1).into()))),
        ("for another PDS", token(&key, with("aud", "did:web:elsewhere.example".into()))),
        ("for another method", token(&key, with("lxm", "com.atproto.repo.createRecord".into()))),
        ("for any method", token(&key, with("lxm", Value::Null))),
        ("issued by another DID", token(&key, with("iss", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into()))),
        ("signed by another key", token(&other_key, good.clone())),
        ("not a JWT", "nonsense".to_owned()),
    ] {
        let got = create(&s, &did, "mover", Some(&t)).await;
        assert_eq!(got.0, 401, "{what}: {got:?}");
        assert_eq!(got.1["error"], "InvalidToken", "{what}: {got:?}");
    }
    let (_, found) = s.call("GET", &format!("com.atproto.repo.describeRepo?repo={did}"), None, None).await;
    assert_eq!(found["error"], "RepoNotFound", "nothing was created: {found}");

    // The right token: the account exists, deactivated, with no repo yet.
    let (status, created) = create(&s, &did, "mover", Some(&token(&key, good.clone()))).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["did"], did);
    let access = created["accessJwt"].as_str().unwrap();
    let (_, session) = s.call("GET", "com.atproto.server.getSession", Some(access), None).await;
    assert_eq!((session["active"].clone(), session["status"].clone()), (json!(false), json!("deactivated")));
    let (_, status) = s.call("GET", "com.atproto.server.checkAccountStatus", Some(access), None).await;
    assert_eq!(status["activated"], false);
    assert_eq!(status["validDid"], false, "the DID still points at its old PDS");
    assert_eq!(status["repoCommit"], Value::Null);
    assert_eq!((status["indexedRecords"].as_i64(), status["expectedBlobs"].as_i64()), (Some(0), Some(0)));
    let write = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(access),
            Some(json!({ "repo": did, "collection": "app.bsky.feed.post", "record": { "$type": "app.bsky.feed.post", "text": "x", "createdAt": "2026-12-01T00:00:00.000Z" } })),
        )
        .await;
    assert_error(&write, 400, "RepoDeactivated");

    // The same DID cannot arrive twice.
    let again = create(&s, &did, "mover2", Some(&token(&key, good))).await;
    assert_error(&again, 400, "AlreadyExists");
}

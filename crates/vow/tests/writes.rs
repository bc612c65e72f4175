//! Integration: repo writes signed by the user's key through the signer hub. The real `vow`
//! binary, a real SQLite file, the real PLC server, and `vow signer` as the signer; a hand-driven
//! WebSocket client plays the signers that misbehave.

mod common;

use std::time::Duration;

use atproto::commit::SignedCommit;
use atproto::crypto::{Algorithm, Keypair, PublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn post(text: &str) -> Value {
    json!({ "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-24T10:00:00.000Z" })
}

async fn create(s: &Stack, a: &Account, text: &str) -> (u16, Value) {
    s.call(
        "POST",
        "com.atproto.repo.createRecord",
        Some(&a.access),
        Some(json!({ "repo": a.did, "collection": "app.bsky.feed.post", "record": post(text) })),
    )
    .await
}

async fn head(s: &Stack, did: &str) -> (String, String) {
    let db = s.db().await;
    let row: (String, String) = sqlx::query_as("SELECT repo_root, repo_rev FROM accounts WHERE did = ?")
        .bind(did)
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    row
}

async fn record_count(s: &Stack, did: &str) -> usize {
    let (_, body) = s
        .call(
            "GET",
            &format!("com.atproto.repo.listRecords?repo={did}&collection=app.bsky.feed.post&limit=100"),
            None,
            None,
        )
        .await;
    body["records"].as_array().unwrap().len()
}

/// The key the PLC directory's DID document lists for the DID, and its newest operation.
async fn plc_state(s: &Stack, did: &str) -> (PublicKey, Value) {
    let doc: Value = s.http.get(format!("{}/{did}", s.plc)).send().await.unwrap().json().await.unwrap();
    let method = &doc["verificationMethod"][0];
    assert!(method["id"].as_str().unwrap().ends_with("#atproto"), "{method}");
    let key = PublicKey::from_verification_method(
        method["type"].as_str().unwrap(),
        method["publicKeyMultibase"].as_str().unwrap(),
    )
    .unwrap();
    let log: Value = s.http.get(format!("{}/{did}/log/audit", s.plc)).send().await.unwrap().json().await.unwrap();
    (key, log.as_array().unwrap().last().unwrap()["operation"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_through_the_programmatic_signer() {
    let s = stack_with(false, &[("VOW_SIGNER_TIMEOUT", "5")]);
    let alice = s.account("alice").await;
    let bob = s.account("bob").await;

    // No key yet: writes are refused with a name that says what to do.
    assert_error(&create(&s, &alice, "too early").await, 400, "SigningKeyRequired");

    let key_file = s.dir.path().join("alice.key");
    let _signer = s.signer(&alice, &key_file);
    let key = Keypair::from_bytes(Algorithm::K256, &std::fs::read(&key_file).unwrap()).unwrap();
    let key_did = key.public_key().to_did_key();

    // The handover: the user's key is the #atproto key and the only rotation key.
    let (multikey, last_op) = plc_state(&s, &alice.did).await;
    assert_eq!(multikey.to_did_key(), key_did);
    assert_eq!(last_op["rotationKeys"], json!([key_did]));
    assert_eq!(last_op["verificationMethods"]["atproto"], json!(key_did));

    // createRecord, then read it back.
    let (status, created) = create(&s, &alice, "hello").await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["validationStatus"], "valid");
    let uri = created["uri"].as_str().unwrap();
    let rkey = uri.rsplit('/').next().unwrap();
    let (status, got) = s
        .call(
            "GET",
            &format!("com.atproto.repo.getRecord?repo={}&collection=app.bsky.feed.post&rkey={rkey}", alice.did),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["value"]["text"], "hello");
    assert_eq!(got["cid"], created["cid"]);

    // The stored head is signed by the user's key, as the PLC lists it.
    let (root, rev) = head(&s, &alice.did).await;
    assert_eq!(root, created["commit"]["cid"].as_str().unwrap());
    assert_eq!(rev, created["commit"]["rev"].as_str().unwrap());
    let db = s.db().await;
    let (bytes,): (Vec<u8>,) =
        sqlx::query_as("SELECT bytes FROM blocks WHERE cid = ?").bind(&root).fetch_one(&db).await.unwrap();
    let commit = SignedCommit::from_block(&bytes).unwrap();
    commit.verify(&multikey).unwrap();
    assert_eq!(commit.unsigned.rev.as_str(), rev);

    // putRecord creates, then updates; swaps are checked.
    let profile = |name: &str| json!({ "$type": "app.bsky.actor.profile", "displayName": name });
    let put = |record: Value, extra: Value| {
        let mut body =
            json!({ "repo": alice.did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": record });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (status, first) =
        s.call("POST", "com.atproto.repo.putRecord", Some(&alice.access), Some(put(profile("A"), json!({})))).await;
    assert_eq!(status, 200, "{first}");
    let res = s
        .call(
            "POST",
            "com.atproto.repo.putRecord",
            Some(&alice.access),
            Some(put(profile("B"), json!({ "swapRecord": null }))),
        )
        .await;
    assert_error(&res, 400, "InvalidSwap");
    let res = s
        .call(
            "POST",
            "com.atproto.repo.putRecord",
            Some(&alice.access),
            Some(put(profile("B"), json!({ "swapCommit": root }))),
        )
        .await;
    assert_error(&res, 400, "InvalidSwap");
    let (status, second) = s
        .call(
            "POST",
            "com.atproto.repo.putRecord",
            Some(&alice.access),
            Some(put(profile("B"), json!({ "swapRecord": first["cid"], "swapCommit": first["commit"]["cid"] }))),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["cid"], first["cid"]);

    // Validation: invalid records are refused; unknown lexicons pass as "unknown".
    let res = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&alice.access),
            Some(json!({ "repo": alice.did, "collection": "app.bsky.feed.post", "record": { "$type": "app.bsky.feed.post", "text": "no date" } })),
        )
        .await;
    assert_error(&res, 400, "InvalidRequest");
    let res = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&alice.access),
            Some(json!({ "repo": alice.did, "collection": "com.example.thing", "record": { "$type": "com.example.thing", "n": 1 } })),
        )
        .await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(res.1["validationStatus"], "unknown");
    let res = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&alice.access),
            Some(json!({ "repo": alice.did, "collection": "com.example.thing", "validate": true, "record": { "$type": "com.example.thing" } })),
        )
        .await;
    assert_error(&res, 400, "InvalidRequest");
    let res = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&alice.access),
            Some(json!({ "repo": alice.did, "collection": "app.bsky.feed.post", "rkey": "bad/key", "record": post("x") })),
        )
        .await;
    assert_error(&res, 400, "InvalidRequest");
    // Someone else's repo.
    let res = create(&s, &Account { did: bob.did.clone(), ..clone_account(&alice) }, "not mine").await;
    assert_error(&res, 403, "Forbidden");

    // applyWrites: two creates and a delete in one commit.
    let (status, applied) = s
        .call(
            "POST",
            "com.atproto.repo.applyWrites",
            Some(&alice.access),
            Some(json!({ "repo": alice.did, "writes": [
                { "$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "rkey": "3kaaaaaaaaaa2", "value": post("one") },
                { "$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("two") },
                { "$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": rkey },
            ] })),
        )
        .await;
    assert_eq!(status, 200, "{applied}");
    let types: Vec<&str> =
        applied["results"].as_array().unwrap().iter().map(|r| r["$type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "com.atproto.repo.applyWrites#createResult",
            "com.atproto.repo.applyWrites#createResult",
            "com.atproto.repo.applyWrites#deleteResult"
        ]
    );
    assert_eq!(record_count(&s, &alice.did).await, 2);
    // Deleting what is not there is a no-op: no commit, as on the reference PDS.
    let before = head(&s, &alice.did).await;
    let (status, deleted) = s
        .call(
            "POST",
            "com.atproto.repo.deleteRecord",
            Some(&alice.access),
            Some(json!({ "repo": alice.did, "collection": "app.bsky.feed.post", "rkey": rkey })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({}));
    assert_eq!(head(&s, &alice.did).await, before);

    // 16 concurrent writes: 16 commits, none lost, revs strictly increasing in commit order.
    let db = s.db().await;
    let (events_before,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM firehose WHERE did = ? AND kind = 'commit'")
        .bind(&alice.did)
        .fetch_one(&db)
        .await
        .unwrap();
    let texts: Vec<String> = (0..16).map(|i| format!("concurrent {i}")).collect();
    let writes = texts.iter().map(|text| create(&s, &alice, text));
    let results = futures_util::future::join_all(writes).await;
    for r in &results {
        assert_eq!(r.0, 200, "{r:?}");
    }
    assert_eq!(record_count(&s, &alice.did).await, 18);
    let frames: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT frame FROM firehose WHERE did = ? AND kind = 'commit' ORDER BY seq")
            .bind(&alice.did)
            .fetch_all(&db)
            .await
            .unwrap();
    // Writes that queue while a commit is signed share the next one (group commit): at most 16
    // new commits, holding the 16 new records between them, once each.
    let events: Vec<Value> = frames.iter().map(|(f,)| commit_frame_body(f)).collect();
    let new = &events[events_before as usize..];
    assert!((1..=16).contains(&new.len()), "{} commits", new.len());
    let mut paths: Vec<&str> =
        new.iter().flat_map(|e| e["ops"].as_array().unwrap()).map(|op| op["path"].as_str().unwrap()).collect();
    paths.sort();
    paths.dedup();
    let mut created: Vec<String> =
        results.iter().map(|r| r.1["uri"].as_str().unwrap().split('/').skip(3).collect::<Vec<_>>().join("/")).collect();
    created.sort();
    assert_eq!(paths, created);
    let revs: Vec<&str> = events.iter().map(|e| e["rev"].as_str().unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "revs not strictly increasing: {revs:?}");
    assert!(events.windows(2).all(|w| w[1]["since"] == w[0]["rev"]), "each commit must follow the one before it");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq follows commit order: {seqs:?}");

    // A handle change after the handover is a PLC operation signed by the user's key (the PLC
    // directory itself checks that signature against the rotation keys).
    let res = s
        .call(
            "POST",
            "com.atproto.identity.updateHandle",
            Some(&alice.access),
            Some(json!({ "handle": "alice2.pds.test" })),
        )
        .await;
    assert_eq!(res.0, 200, "{res:?}");
    let (_, op) = plc_state(&s, &alice.did).await;
    assert_eq!(op["alsoKnownAs"], json!(["at://alice2.pds.test"]));
    assert_eq!(op["rotationKeys"], json!([key_did]));
    let (status, session) = s.call("GET", "com.atproto.server.getSession", Some(&alice.access), None).await;
    assert_eq!((status, session["handle"].as_str()), (200, Some("alice2.pds.test")));
    let res = s
        .call(
            "POST",
            "com.atproto.identity.updateHandle",
            Some(&alice.access),
            Some(json!({ "handle": "bob.pds.test" })),
        )
        .await;
    assert_error(&res, 400, "HandleNotAvailable");

    // A second registration is refused: the PDS no longer controls the DID.
    let (_, challenge) = s.call("GET", "app.vow.signer.getKeyChallenge", Some(&alice.access), None).await;
    let other = Keypair::generate(Algorithm::K256);
    let challenge_str = challenge["challenge"].as_str().unwrap();
    let res = s
        .call(
            "POST",
            "app.vow.signer.registerKey",
            Some(&alice.access),
            Some(json!({
                "publicKey": other.public_key().to_did_key(), "challenge": challenge_str, "password": alice.password,
                "signature": URL_SAFE_NO_PAD.encode(other.sign(&URL_SAFE_NO_PAD.decode(challenge_str).unwrap())),
            })),
        )
        .await;
    assert_error(&res, 400, "KeyAlreadyRegistered");
}

/// The body of a stored `#commit` frame, in its JSON form.
fn commit_frame_body(frame: &[u8]) -> Value {
    let header = atproto::data::encode(&atproto::Ipld::Map(
        [("op".to_owned(), atproto::Ipld::Integer(1)), ("t".to_owned(), atproto::Ipld::String("#commit".into()))]
            .into_iter()
            .collect(),
    ))
    .unwrap();
    let body = frame.strip_prefix(header.as_slice()).expect("a #commit header");
    atproto::data::to_json(&atproto::data::decode(body).unwrap())
}

fn clone_account(a: &Account) -> Account {
    Account { did: a.did.clone(), handle: a.handle.clone(), password: a.password.clone(), access: a.access.clone() }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_registration_needs_password_and_proof_of_possession() {
    let s = stack(false);
    let carol = s.account("carol").await;
    let key = Keypair::generate(Algorithm::K256);
    let register = |challenge: &str, signer: &Keypair, password: &str| {
        json!({
            "publicKey": key.public_key().to_did_key(), "challenge": challenge, "password": password,
            "signature": URL_SAFE_NO_PAD.encode(signer.sign(&URL_SAFE_NO_PAD.decode(challenge).unwrap())),
        })
    };
    let fresh = || async {
        s.call("GET", "app.vow.signer.getKeyChallenge", Some(&carol.access), None).await.1["challenge"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let c = fresh().await;
    let res =
        s.call("POST", "app.vow.signer.registerKey", Some(&carol.access), Some(register(&c, &key, "wrong"))).await;
    assert_error(&res, 401, "AuthenticationRequired");
    let c = fresh().await;
    let impostor = Keypair::generate(Algorithm::K256);
    let res = s
        .call("POST", "app.vow.signer.registerKey", Some(&carol.access), Some(register(&c, &impostor, &carol.password)))
        .await;
    assert_error(&res, 400, "InvalidSignature");
    // The challenge was used up by that attempt.
    let res = s
        .call("POST", "app.vow.signer.registerKey", Some(&carol.access), Some(register(&c, &key, &carol.password)))
        .await;
    assert_error(&res, 400, "InvalidChallenge");
    // Nothing changed on the PLC.
    let (_, op) = plc_state(&s, &carol.did).await;
    assert_ne!(op["rotationKeys"], json!([key.public_key().to_did_key()]));
    let c = fresh().await;
    let res = s
        .call("POST", "app.vow.signer.registerKey", Some(&carol.access), Some(register(&c, &key, &carol.password)))
        .await;
    assert_eq!(res.0, 200, "{res:?}");
    let (_, op) = plc_state(&s, &carol.did).await;
    assert_eq!(op["rotationKeys"], json!([key.public_key().to_did_key()]));
}

/// How a hand-driven signer answers.
#[derive(Clone, Copy)]
enum Behaviour {
    Reject,
    OtherKey,
    Garbage,
    Silent,
}

async fn rogue_signer(s: &Stack, access: &str, behaviour: Behaviour) -> tokio::task::JoinHandle<Option<u16>> {
    let url = format!("{}/xrpc/com.atproto.server.signerConnect", s.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {access}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            match msg {
                Message::Text(text) => {
                    let req: Value = serde_json::from_str(&text).unwrap();
                    if req["type"] != "sign_request" {
                        continue;
                    }
                    let id = req["requestId"].clone();
                    let payload = URL_SAFE_NO_PAD.decode(req["payload"].as_str().unwrap()).unwrap();
                    let reply = match behaviour {
                        Behaviour::Reject => json!({ "type": "sign_reject", "requestId": id }),
                        Behaviour::OtherKey => {
                            let sig = Keypair::generate(Algorithm::K256).sign(&payload);
                            json!({ "type": "sign_response", "requestId": id, "commitSignature": URL_SAFE_NO_PAD.encode(sig) })
                        }
                        Behaviour::Garbage => {
                            json!({ "type": "sign_response", "requestId": id, "commitSignature": "not-a-signature!" })
                        }
                        Behaviour::Silent => continue,
                    };
                    socket.send(Message::Text(reply.to_string().into())).await.unwrap();
                }
                Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
                _ => {}
            }
        }
        None
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_signers_leave_the_repo_unchanged() {
    let s = stack_with(false, &[("VOW_SIGNER_TIMEOUT", "2")]);
    let dave = s.account("dave").await;
    let key_file = s.dir.path().join("dave.key");
    let signer = s.signer(&dave, &key_file);
    let (status, _) = create(&s, &dave, "the one good write").await;
    assert_eq!(status, 200);
    drop(signer); // killed: nobody signs now
    wait_for_signer(&s, &dave.access, false).await;
    let before = head(&s, &dave.did).await;

    assert_error(&create(&s, &dave, "nobody listening").await, 400, "SignerUnavailable");
    for (behaviour, error) in [
        (Behaviour::Reject, "SigningRejected"),
        (Behaviour::OtherKey, "InvalidSignature"),
        (Behaviour::Garbage, "InvalidSignature"),
        (Behaviour::Silent, "SigningTimeout"),
    ] {
        let rogue = rogue_signer(&s, &dave.access, behaviour).await;
        wait_for_signer(&s, &dave.access, true).await;
        assert_error(&create(&s, &dave, "must not land").await, 400, error);
        assert_eq!(head(&s, &dave.did).await, before, "{error}: the head moved");
        assert_eq!(record_count(&s, &dave.did).await, 1, "{error}: a record became visible");
        rogue.abort();
        wait_for_signer(&s, &dave.access, false).await;
    }

    // A new connection replaces the old one, which is closed with 4000.
    let first = rogue_signer(&s, &dave.access, Behaviour::Silent).await;
    wait_for_signer(&s, &dave.access, true).await;
    let _second = rogue_signer(&s, &dave.access, Behaviour::Silent).await;
    let code = tokio::time::timeout(std::time::Duration::from_secs(60), first).await.unwrap().unwrap();
    assert_eq!(code, Some(4000));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_close_the_signer_socket_and_vow_signer_reconnects() {
    let s = stack_with(false, &[("VOW_ACCESS_TOKEN_TTL", "2")]);
    let erin = s.account("erin").await;
    let _signer = s.signer(&erin, &s.dir.path().join("erin.key"));
    // A hand-driven socket opened with a token that expires in 2 s is closed with 4001.
    let session = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": erin.handle, "password": erin.password })),
        )
        .await
        .1;
    let rogue = rogue_signer(&s, session["accessJwt"].as_str().unwrap(), Behaviour::Silent).await;
    let code = tokio::time::timeout(std::time::Duration::from_secs(60), rogue).await.unwrap().unwrap();
    assert_eq!(code, Some(4001));
    // The rogue replaced `vow signer`, which stopped; start it again, let its token expire, and
    // check it refreshed its session and reconnected by itself.
    let _signer = s.signer(&erin, &s.dir.path().join("erin.key"));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let fresh = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": erin.handle, "password": erin.password })),
        )
        .await
        .1;
    let writer = Account { access: fresh["accessJwt"].as_str().unwrap().to_owned(), ..clone_account(&erin) };
    // With 2-second tokens the signer reconnects every 2 seconds; a write may land in the brief
    // gap between close and reconnect, so it may be retried, but it must get through.
    let mut last = (0, Value::Null);
    for _ in 0..600 {
        last = create(&s, &writer, "after the signer's token expired").await;
        if last.0 == 200 || last.1["error"] != "SignerUnavailable" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{:?}", last.1);
}

/// A firehose subscriber that stops reading is cut off with `ConsumerTooSlow` once it falls
/// more than the backlog (16 events here) behind, rather than buffered without bound.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_stops_reading_is_cut_off_with_consumer_too_slow() {
    let s = stack_with(false, &[("VOW_FIREHOSE_BACKLOG", "16"), ("VOW_MAX_JSON_BODY", "2000000")]);
    let jo = s.account("joan").await;
    let _signer = s.signer(&jo, &s.dir.path().join("joan.key"));
    // A small receive window, and nothing read until the writes are done.
    let addr = s.url.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let url = format!("ws://{addr}/xrpc/com.atproto.sync.subscribeRepos");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    // Twelve large events (about 800 kB each: the records differ, so none share a block) fill the socket buffers; the forty small ones
    // after them overflow the backlog.
    for batch in 0..52 {
        let (count, size) = if batch < 12 { (100, 8000) } else { (1, 10) };
        let writes: Vec<Value> = (0..count)
            .map(|i| {
                json!({ "$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.bulk",
                        "rkey": format!("b{batch:03}n{i:03}"), "value": { "$type": "com.example.bulk", "text": format!("{batch}/{i} {}", "x".repeat(size)) } })
            })
            .collect();
        let body = json!({ "repo": jo.did, "writes": writes });
        let (status, out) = s.call("POST", "com.atproto.repo.applyWrites", Some(&jo.access), Some(body)).await;
        assert_eq!(status, 200, "{out}");
    }
    let mut frames = 0;
    let mut cut_off = false;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        match msg {
            Ok(Message::Binary(bytes)) => {
                frames += 1;
                if bytes.windows(15).any(|w| w == b"ConsumerTooSlow") {
                    cut_off = true;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(cut_off, "no ConsumerTooSlow after {frames} frames");
    assert!(frames < 52, "the subscriber got every event ({frames}) instead of being cut off");
}

/// A cursor older than the oldest event kept gets an `#info` `OutdatedCursor` frame, then the
/// events that remain. The retention sweep is simulated by deleting the oldest rows.
#[tokio::test(flavor = "multi_thread")]
async fn an_outdated_cursor_is_told_so_then_replayed() {
    let s = stack(false);
    let jo = s.account("joan").await;
    let _signer = s.signer(&jo, &s.dir.path().join("joan.key"));
    for i in 0..5 {
        let body = json!({ "repo": jo.did, "collection": "com.example.note", "record": { "$type": "com.example.note", "n": i } });
        assert_eq!(s.call("POST", "com.atproto.repo.createRecord", Some(&jo.access), Some(body)).await.0, 200);
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("vow.db"));
    let db = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let (head,): (i64,) = sqlx::query_as("SELECT MAX(seq) FROM firehose").fetch_one(&db).await.unwrap();
    sqlx::query("DELETE FROM firehose WHERE seq <= ?").bind(head - 3).execute(&db).await.unwrap();
    db.close().await;

    let url = format!("{}/xrpc/com.atproto.sync.subscribeRepos?cursor=1", s.url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut frames = Vec::new();
    while frames.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => frames.push(bytes),
            other => panic!("expected 4 frames, got {} then {other:?}", frames.len()),
        }
    }
    let has = |frame: &[u8], text: &[u8]| frame.windows(text.len()).any(|w| w == text);
    assert!(has(&frames[0], b"#info") && has(&frames[0], b"OutdatedCursor"), "first frame is the #info");
    for frame in &frames[1..] {
        // (the #sync of the re-signed genesis commit may land among the writes)
        assert!(has(frame, b"#commit") || has(frame, b"#sync"), "then the three events kept");
    }
}

/// Subscribers replaying at the same time from cursors on and around the boundaries of the
/// shared replay pages each get exactly the stored frames after their cursor, in order (from
/// the oldest kept when older ones were swept, with an `#info` first for a cursor among them),
/// and then the next event live.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_replays_across_pages_get_every_kept_event_then_follow_live() {
    let s = stack(false);
    let jo = s.account("joan").await;
    let _signer = s.signer(&jo, &s.dir.path().join("joan.key"));
    let note = |i: usize| json!({ "repo": jo.did, "collection": "com.example.note", "record": { "$type": "com.example.note", "n": i } });
    for i in 0..300 {
        assert_eq!(s.call("POST", "com.atproto.repo.createRecord", Some(&jo.access), Some(note(i))).await.0, 200);
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("vow.db"));
    let db = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    sqlx::query("DELETE FROM firehose WHERE seq <= 20").execute(&db).await.unwrap();
    let stored = |db: sqlx::SqlitePool| async move {
        sqlx::query_as::<_, (i64, Vec<u8>)>("SELECT seq, frame FROM firehose ORDER BY seq")
            .fetch_all(&db)
            .await
            .unwrap()
    };
    let rows = stored(db.clone()).await;
    let head = rows.last().unwrap().0;
    assert!(head > 256, "three pages of events ({head})");

    let base = s.url.replacen("http", "ws", 1);
    let cursors = [0, 5, 20, 127, 128, 129, 255, 256, head - 1, head];
    let mut subscribers = Vec::new();
    for cursor in cursors {
        let url = format!("{base}/xrpc/com.atproto.sync.subscribeRepos?cursor={cursor}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        subscribers.push((cursor, ws));
    }
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|(cursor, mut ws)| {
            let expected = rows.iter().filter(|(seq, _)| *seq > cursor).count() + usize::from(cursor == 5);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < expected {
                    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                        Ok(Some(Ok(Message::Binary(bytes)))) => got.push(bytes.to_vec()),
                        Ok(Some(Ok(_))) => {}
                        other => panic!("cursor {cursor}: {} of {expected} frames, then {other:?}", got.len()),
                    }
                }
                (cursor, ws, got)
            })
        })
        .collect();
    let mut replayed = Vec::new();
    for task in tasks {
        replayed.push(task.await.unwrap());
    }
    for (cursor, _, got) in &replayed {
        let mut got = got.as_slice();
        if *cursor == 5 {
            assert!(got[0].windows(14).any(|w| w == b"OutdatedCursor"), "cursor 5 is told events are missing");
            got = &got[1..];
        }
        let want: Vec<&[u8]> = rows.iter().filter(|(seq, _)| seq > cursor).map(|(_, f)| f.as_slice()).collect();
        assert!(got.iter().map(Vec::as_slice).eq(want), "cursor {cursor}: the replay differs from the table");
    }

    assert_eq!(s.call("POST", "com.atproto.repo.createRecord", Some(&jo.access), Some(note(300))).await.0, 200);
    let newest = stored(db.clone()).await.pop().unwrap();
    assert_eq!(newest.0, head + 1);
    for (cursor, mut ws, _) in replayed {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => assert_eq!(bytes.as_ref(), newest.1, "cursor {cursor}: live"),
            other => panic!("cursor {cursor}: no live frame but {other:?}"),
        }
    }
    db.close().await;
}

/// Taken-down and deactivated repos are not served, with the error names the lexicons give,
/// and getRepoStatus/listRepos say why. No operator endpoint sets these states yet, so the test
/// sets the columns the way one would.
#[tokio::test(flavor = "multi_thread")]
async fn taken_down_and_deactivated_repos_are_not_served() {
    let s = stack(false);
    let (tess, dana) = (s.account("tess").await, s.account("dana").await);
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("vow.db"));
    let db = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    sqlx::query("UPDATE accounts SET takedown_ref = 'mod-1' WHERE did = ?").bind(&tess.did).execute(&db).await.unwrap();
    sqlx::query("UPDATE accounts SET deactivated_at = '2026-11-24T00:00:00.000Z' WHERE did = ?")
        .bind(&dana.did)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let blob = atproto::cid::raw_cid(b"x").to_string();
    let (_, repos) = s.call("GET", "com.atproto.sync.listRepos", None, None).await;
    for (acct, error, status) in [(&tess, "RepoTakendown", "takendown"), (&dana, "RepoDeactivated", "deactivated")] {
        let did = &acct.did;
        for path in [
            format!("com.atproto.sync.getLatestCommit?did={did}"),
            format!("com.atproto.sync.getRepo?did={did}"),
            format!("com.atproto.sync.getHead?did={did}"),
            format!("com.atproto.sync.getRecord?did={did}&collection=app.bsky.feed.post&rkey=abc"),
            format!("com.atproto.sync.listBlobs?did={did}"),
            format!("com.atproto.sync.getBlob?did={did}&cid={blob}"),
        ] {
            assert_error(&s.call("GET", &path, None, None).await, 400, error);
        }
        let (code, out) = s.call("GET", &format!("com.atproto.sync.getRepoStatus?did={did}"), None, None).await;
        assert_eq!((code, out["active"].as_bool(), out["status"].as_str()), (200, Some(false), Some(status)), "{out}");
        let listed = repos["repos"].as_array().unwrap().iter().find(|r| r["did"] == did.as_str()).unwrap();
        assert_eq!((listed["active"].as_bool(), listed["status"].as_str()), (Some(false), Some(status)), "{listed}");
        let body = json!({ "repo": did, "collection": "app.bsky.feed.post", "record": { "$type": "app.bsky.feed.post", "text": "x", "createdAt": "2026-11-24T00:00:00.000Z" } });
        assert_error(
            &s.call("POST", "com.atproto.repo.createRecord", Some(&acct.access), Some(body)).await,
            400,
            error,
        );
    }
}

/// Group commit: requests that queue while a commit is being signed are committed together,
/// one signature and one `#commit` for all of them, each answered with its own result; a bad
/// write among them fails alone.
#[tokio::test(flavor = "multi_thread")]
async fn writes_queued_during_a_signature_share_one_commit() {
    let s = stack_with(false, &[("VOW_SIGNER_TIMEOUT", "600")]);
    let erin = s.account("erin").await;
    let key_file = s.dir.path().join("erin.key");
    let signer = s.signer(&erin, &key_file);
    let (status, first) = create(&s, &erin, "first").await;
    assert_eq!(status, 200, "{first}");
    let first_rkey = first["uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (head_before, _) = head(&s, &erin.did).await;

    // The signer stops answering: the next write waits for its signature while the others queue.
    let stop = |sig: &str| {
        assert!(std::process::Command::new("kill").arg(sig).arg(signer.pid().to_string()).status().unwrap().success())
    };
    stop("-STOP");
    let requests_before = s.metric("vow_write_requests_total").await;
    let call = |body: Value, nsid: &'static str| {
        let (s, access) = (&s, erin.access.clone());
        async move { s.call("POST", nsid, Some(&access), Some(body)).await }
    };
    let repo = erin.did.clone();
    let create_body = |record: Value| json!({ "repo": repo, "collection": "app.bsky.feed.post", "record": record });
    let signing = tokio::spawn({
        let (s, access, body) = (s.url.clone(), erin.access.clone(), create_body(post("being signed")));
        async move {
            let res = reqwest::Client::new()
                .post(format!("{s}/xrpc/com.atproto.repo.createRecord"))
                .bearer_auth(access)
                .json(&body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    });
    // The first write left the queue for the signer before the others arrive.
    while s.metric("vow_write_requests_total").await < requests_before + 1.0
        || s.metric("vow_write_queue_requests").await != 0.0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing_blob = json!({ "$type": "blob", "ref": { "$link": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" },
                               "mimeType": "image/png", "size": 10 });
    let queued = futures_util::future::join_all([
        call(create_body(post("good one")), "com.atproto.repo.createRecord"),
        call(create_body(json!({ "$type": "app.bsky.feed.post", "text": 7 })), "com.atproto.repo.createRecord"),
        call(
            json!({ "repo": erin.did, "collection": "app.bsky.feed.post", "rkey": first_rkey, "record": post("taken") }),
            "com.atproto.repo.createRecord",
        ),
        call(
            json!({ "repo": erin.did, "collection": "app.bsky.feed.post", "rkey": "swapped", "record": post("swap"),
                    "swapRecord": first["cid"] }),
            "com.atproto.repo.putRecord",
        ),
        call(
            json!({ "repo": erin.did, "collection": "app.bsky.actor.profile", "rkey": "self",
                    "record": { "$type": "app.bsky.actor.profile", "avatar": missing_blob } }),
            "com.atproto.repo.putRecord",
        ),
        call(
            json!({ "repo": erin.did, "collection": "app.bsky.feed.post", "record": post("swap commit"),
                    "swapCommit": head_before }),
            "com.atproto.repo.createRecord",
        ),
        call(
            json!({ "repo": erin.did, "writes": [
                { "$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("batch a") },
                { "$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("batch b") },
            ] }),
            "com.atproto.repo.applyWrites",
        ),
    ]);
    // Let go of the signer only once all seven are queued behind the first.
    let release = async {
        while s.metric("vow_write_queue_requests").await < 7.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop("-CONT");
    };
    let (answers, ()) = tokio::join!(queued, release);
    let (status, alone) = signing.await.unwrap();
    assert_eq!(status, 200, "{alone}");
    let [good, not_valid, taken, bad_swap, no_blob, stale_commit, applied] = answers.try_into().unwrap();
    assert_eq!(good.0, 200, "{good:?}");
    assert_error(&not_valid, 400, "InvalidRequest");
    assert_error(&taken, 400, "InvalidRequest");
    assert_error(&bad_swap, 400, "InvalidSwap");
    assert_error(&no_blob, 400, "BlobNotFound");
    assert_error(&stale_commit, 400, "InvalidSwap");
    assert_eq!(applied.0, 200, "{applied:?}");

    // The two good requests share one commit, after the one being signed, with their three ops.
    let shared = &good.1["commit"];
    assert_eq!(&applied.1["commit"], shared);
    assert_ne!(&alone["commit"], shared);
    assert_eq!(head(&s, &erin.did).await.0, shared["cid"].as_str().unwrap());
    let db = s.db().await;
    let frames: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT frame FROM firehose WHERE did = ? AND kind = 'commit' ORDER BY seq DESC LIMIT 2")
            .bind(&erin.did)
            .fetch_all(&db)
            .await
            .unwrap();
    let last = commit_frame_body(&frames[0].0);
    assert_eq!(last["commit"]["$link"], shared["cid"]);
    assert_eq!(last["since"], alone["commit"]["rev"]);
    let mut paths: Vec<String> =
        last["ops"].as_array().unwrap().iter().map(|op| op["path"].as_str().unwrap().to_owned()).collect();
    let mut expected: Vec<String> = std::iter::once(&good.1["uri"])
        .chain(applied.1["results"].as_array().unwrap().iter().map(|r| &r["uri"]))
        .map(|uri| uri.as_str().unwrap().split('/').skip(3).collect::<Vec<_>>().join("/"))
        .collect();
    paths.sort();
    expected.sort();
    assert_eq!(paths, expected);
    assert_eq!(commit_frame_body(&frames[1].0)["commit"]["$link"], alone["commit"]["cid"]);
    assert_eq!(record_count(&s, &erin.did).await, 5);
    assert!(s.metric("vow_commit_batch_requests_sum").await >= 3.0);
}

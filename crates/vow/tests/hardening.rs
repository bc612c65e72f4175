//! Integration: what one client does never breaks another. The real `vow` binary, a real
//! SQLite file and the real PLC server; a hand-driven signer with the account's real key that
//! refuses or ignores the writes the test marks for it.

mod common;

use atproto::crypto::{Algorithm, Keypair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Collections the test signer refuses to sign, and ignores.
const REJECTED: &str = "com.example.rejected";
const IGNORED: &str = "com.example.ignored";

/// A signer holding the account's key that signs every commit except those touching
/// [`REJECTED`] (answered `sign_reject`) or [`IGNORED`] (never answered).
async fn picky_signer(s: &Stack, access: &str, key: Keypair) -> tokio::task::JoinHandle<()> {
    let url = format!("{}/xrpc/com.atproto.server.signerConnect", s.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {access}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            let Message::Text(text) = msg else { continue };
            let req: Value = serde_json::from_str(&text).unwrap();
            if req["type"] != "sign_request" {
                continue;
            }
            let touches = |c: &str| req["ops"].as_array().unwrap().iter().any(|o| o["collection"] == c);
            let id = req["requestId"].clone();
            let reply = if touches(IGNORED) {
                continue;
            } else if touches(REJECTED) {
                json!({ "type": "sign_reject", "requestId": id })
            } else {
                let payload = URL_SAFE_NO_PAD.decode(req["payload"].as_str().unwrap()).unwrap();
                json!({ "type": "sign_response", "requestId": id,
                        "commitSignature": URL_SAFE_NO_PAD.encode(key.sign(&payload)) })
            };
            socket.send(Message::Text(reply.to_string().into())).await.unwrap();
        }
    })
}

fn post(text: &str) -> Value {
    json!({ "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T10:00:00.000Z" })
}

/// The writes that must fail, each with the error it must get, and none with a 5xx.
fn failing_write(kind: usize, did: &str, round: usize) -> (&'static str, Value, u16, &'static str) {
    let bogus = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";
    match kind {
        0 => (
            "com.atproto.repo.putRecord",
            json!({ "repo": did, "collection": "app.bsky.feed.post", "rkey": "stale", "record": post("x"),
                    "swapRecord": bogus }),
            400,
            "InvalidSwap",
        ),
        1 => (
            "com.atproto.repo.createRecord",
            json!({ "repo": did, "collection": "app.bsky.feed.post",
                    "record": { "$type": "app.bsky.feed.post", "text": 7 } }),
            400,
            "InvalidRequest",
        ),
        2 => (
            "com.atproto.repo.createRecord",
            json!({ "repo": did, "collection": "app.bsky.feed.post", "record": {
                "$type": "app.bsky.feed.post", "text": "with a picture", "createdAt": "2026-12-01T10:00:00.000Z",
                "embed": { "$type": "app.bsky.embed.images", "images": [{ "alt": "",
                    "image": { "$type": "blob", "ref": { "$link": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" },
                               "mimeType": "image/png", "size": 10 } }] } } }),
            400,
            "BlobNotFound",
        ),
        3 => (
            "com.atproto.repo.createRecord",
            json!({ "repo": did, "collection": REJECTED, "record": { "$type": REJECTED, "n": round } }),
            400,
            "SigningRejected",
        ),
        4 => (
            // One bad write sinks its whole batch, and only its batch.
            "com.atproto.repo.applyWrites",
            json!({ "repo": did, "writes": [
                { "$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("batch") },
                { "$type": "com.atproto.repo.applyWrites#update", "collection": "app.bsky.feed.post", "rkey": "missing",
                  "value": post("nothing to update") },
            ] }),
            400,
            "InvalidRequest",
        ),
        _ => (
            "com.atproto.repo.applyWrites",
            json!({ "repo": did, "swapCommit": bogus, "writes": [
                { "$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("swap") },
            ] }),
            400,
            "InvalidSwap",
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_writes_never_fail_anyone_elses() {
    let s = stack_with(false, &[("VOW_SIGNER_TIMEOUT", "2")]);
    let alice = s.account("alice").await;
    let key_file = s.dir.path().join("alice.key");
    drop(s.signer(&alice, &key_file)); // registers the key, then goes away
    wait_for_signer(&s, &alice.access, false).await;
    let key = Keypair::from_bytes(Algorithm::K256, &std::fs::read(&key_file).unwrap()).unwrap();
    let _signer = picky_signer(&s, &alice.access, key).await;
    wait_for_signer(&s, &alice.access, true).await;

    const VALID_WRITERS: usize = 4;
    const FAILING_KINDS: usize = 6;
    const ROUNDS: usize = 40;
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for w in 0..VALID_WRITERS {
        let (s, did, access) = (s.clone(), alice.did.clone(), alice.access.clone());
        tasks.push(tokio::spawn(async move {
            let mut uris = Vec::new();
            for round in 0..ROUNDS {
                let body =
                    json!({ "repo": did, "collection": "app.bsky.feed.post", "record": post(&format!("{w}/{round}")) });
                let res = s.call("POST", "com.atproto.repo.createRecord", Some(&access), Some(body)).await;
                assert_eq!(res.0, 200, "valid write {w}/{round} failed: {res:?}");
                uris.push(res.1["uri"].as_str().unwrap().to_owned());
            }
            uris
        }));
    }
    for kind in 0..FAILING_KINDS {
        let (s, did, access) = (s.clone(), alice.did.clone(), alice.access.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let (nsid, body, status, name) = failing_write(kind, &did, round);
                let res = s.call("POST", nsid, Some(&access), Some(body)).await;
                assert_error(&res, status, name);
            }
            Vec::new()
        }));
    }
    // A write the signer never answers times out, and holds up the others meanwhile.
    {
        let (s, did, access) = (s.clone(), alice.did.clone(), alice.access.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..2 {
                let body = json!({ "repo": did, "collection": IGNORED, "record": { "$type": IGNORED, "n": round } });
                let res = s.call("POST", "com.atproto.repo.createRecord", Some(&access), Some(body)).await;
                assert_error(&res, 400, "SigningTimeout");
            }
            Vec::new()
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert_eq!(acknowledged.len(), VALID_WRITERS * ROUNDS);

    // Every acknowledged write is there, and nothing else.
    let mut listed = std::collections::BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = s
            .call(
                "GET",
                &format!(
                    "com.atproto.repo.listRecords?repo={}&collection=app.bsky.feed.post&limit=100{cursor}",
                    alice.did
                ),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200);
        for r in page["records"].as_array().unwrap() {
            listed.insert(r["uri"].as_str().unwrap().to_owned());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let acknowledged: std::collections::BTreeSet<_> = acknowledged.into_iter().collect();
    assert_eq!(listed, acknowledged);
    for collection in [REJECTED, IGNORED] {
        let (_, page) = s
            .call(
                "GET",
                &format!("com.atproto.repo.listRecords?repo={}&collection={collection}", alice.did),
                None,
                None,
            )
            .await;
        assert_eq!(page["records"], json!([]), "{collection}");
    }
}

/// A firehose subscriber has nothing to say beyond pings and a close: one that sends a large
/// message is disconnected instead of having it buffered (the default would take 64 MB from
/// every anonymous connection).
#[tokio::test(flavor = "multi_thread")]
async fn a_firehose_subscriber_sending_a_large_message_is_disconnected() {
    let s = stack(false);
    let url = format!("{}/xrpc/com.atproto.sync.subscribeRepos", s.url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // (the server may hang up before the whole message is written)
    let _ = ws.send(Message::Binary(vec![7u8; 1 << 20].into())).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection is still open after a 1 MB message");
    // The server is no worse for it.
    assert_eq!(s.call("GET", "com.atproto.server.describeServer", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_failed_logins_keep_memory_bounded() {
    let s = std::sync::Arc::new(stack(false));
    let bob = s.account("bob").await;
    let before = s.vow.rss();
    let logins: Vec<_> = (0..200)
        .map(|_| {
            let (s, handle) = (s.clone(), bob.handle.clone());
            tokio::spawn(async move {
                let body = json!({ "identifier": handle, "password": "not the password" });
                s.call("POST", "com.atproto.server.createSession", None, Some(body)).await
            })
        })
        .collect();
    // The server keeps answering everything else meanwhile.
    let (status, _) = s.call("GET", "com.atproto.server.describeServer", None, None).await;
    assert_eq!(status, 200);
    let mut peak = s.vow.rss();
    let (mut denied, mut busy) = (0, 0);
    for login in logins {
        let res = login.await.unwrap();
        match res.0 {
            401 => {
                assert_error(&res, 401, "AuthenticationRequired");
                denied += 1;
            }
            _ => {
                assert_error(&res, 429, "RateLimitExceeded");
                busy += 1;
            }
        }
        peak = peak.max(s.vow.rss());
    }
    assert!(denied > 0 && denied + busy == 200, "{denied} denied, {busy} turned away");
    let mb = |b: u64| b / (1024 * 1024);
    assert!(peak < 100 * 1024 * 1024, "anonymous RSS went from {} MB to {} MB", mb(before), mb(peak));
    // And the right password still works.
    let body = json!({ "identifier": bob.handle, "password": bob.password });
    assert_eq!(s.call("POST", "com.atproto.server.createSession", None, Some(body)).await.0, 200);
    println!("RSS before {} MB, peak {} MB, after {} MB", mb(before), mb(peak), mb(s.vow.rss()));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_blobs_get_the_type_their_bytes_say() {
    let s = stack(false);
    let carol = s.account("carol").await;
    let _signer = s.signer(&carol, &s.dir.path().join("carol.key"));
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89".to_vec();
    let upload = |bytes: Vec<u8>, content_type: &'static str| {
        s.http
            .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", s.url))
            .bearer_auth(&carol.access)
            .header("content-type", content_type)
            .body(bytes)
            .send()
    };
    // As the Python SDK sends it: `*/*`. The bytes say PNG.
    let blob: Value = upload(png.clone(), "*/*").await.unwrap().json().await.unwrap();
    assert_eq!(blob["blob"]["mimeType"], "image/png", "{blob}");
    // A wrong declared type loses to the bytes too; unknown bytes keep the declared type.
    let other: Value = upload(png, "application/octet-stream").await.unwrap().json().await.unwrap();
    assert_eq!(other["blob"]["mimeType"], "image/png");
    let text: Value = upload(b"just text".to_vec(), "text/plain").await.unwrap().json().await.unwrap();
    assert_eq!(text["blob"]["mimeType"], "text/plain");
    let unknown: Value = upload(b"???".to_vec(), "*/*").await.unwrap().json().await.unwrap();
    assert_eq!(unknown["blob"]["mimeType"], "application/octet-stream");

    // So a post can embed it as an image.
    let record = json!({ "$type": "app.bsky.feed.post", "text": "a picture", "createdAt": "2026-12-01T10:00:00.000Z",
        "embed": { "$type": "app.bsky.embed.images", "images": [{ "alt": "one pixel", "image": blob["blob"] }] } });
    let res = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&carol.access),
            Some(json!({ "repo": carol.did, "collection": "app.bsky.feed.post", "record": record })),
        )
        .await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(res.1["validationStatus"], "valid");
}

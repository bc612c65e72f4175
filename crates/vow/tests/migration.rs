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
    // No repo yet: an empty tree at the zero revision (the lexicon requires both).
    assert_eq!(status["repoCommit"], atproto::mst::Mst::new().root_cid().to_string());
    assert_eq!(status["repoRev"], "2222222222222");
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

/// The image the first post of [`repo_car`] shows (a PNG header is enough for the sniffer).
const BLOB: &[u8] = b"\x89PNG\r\n\x1a\n the image of the first post";

/// A repo of `did` with `n` posts (the first referencing [`BLOB`]), committed at a fresh rev
/// and signed by `key`, as a CAR.
fn repo_car(did: &str, key: &Keypair, n: usize) -> (Vec<u8>, atproto::Cid) {
    use atproto::blocks::BlockMap;
    let mut blocks = BlockMap::new();
    let mut entries = Vec::new();
    let blob = atproto::cid::raw_cid(BLOB).to_string();
    let tids = atproto::syntax::TidGenerator::with_random_clock_id();
    for i in 0..n {
        let mut record = json!({ "$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": "2026-12-01T00:00:00.000Z" });
        if i == 0 {
            record["embed"] = json!({ "$type": "app.bsky.embed.images", "images": [{ "alt": "", "image": {
                "$type": "blob", "ref": { "$link": blob }, "mimeType": "image/png", "size": 10 } }] });
        }
        let bytes = atproto::data::encode(&atproto::data::record_from_json(&record).unwrap()).unwrap();
        let cid = blocks.insert_cbor(bytes);
        entries.push((format!("app.bsky.feed.post/{}", tids.next()), cid));
    }
    let mut tree = atproto::mst::Mst::from_entries(entries).unwrap();
    let data = tree.commit();
    blocks.extend(data.blocks);
    let unsigned =
        atproto::commit::UnsignedCommit::new(atproto::syntax::Did::new(did).unwrap(), data.root, tids.next());
    let sig = key.sign(&unsigned.bytes_to_sign()).to_vec();
    let (cid, bytes) = unsigned.with_signature(sig).to_block_with_cid();
    blocks.insert(cid, bytes);
    (atproto::car::encode(&[cid], blocks.iter()), cid)
}

async fn import(s: &Stack, access: &str, car: Vec<u8>) -> (u16, Value) {
    let res = s
        .http
        .post(format!("{}/xrpc/com.atproto.repo.importRepo", s.url))
        .bearer_auth(access)
        .header("content-type", "application/vnd.ipld.car")
        .body(car)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

async fn status(s: &Stack, access: &str) -> Value {
    s.call("GET", "com.atproto.server.checkAccountStatus", Some(access), None).await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_repo_is_verified_indexed_and_replaceable_and_bad_cars_change_nothing() {
    let s = stack(false);
    let key = Keypair::generate(Algorithm::K256);
    let did = foreign_did(&s, &key).await;
    let claims =
        json!({ "iss": did, "aud": "did:web:pds.test", "lxm": "com.atproto.server.createAccount", "exp": now() + 60 });
    let (_, created) = create(&s, &did, "mover", Some(&token(&key, claims))).await;
    let access = created["accessJwt"].as_str().unwrap().to_owned();

    let (car, commit) = repo_car(&did, &key, 50);
    let (code, body) = import(&s, &access, car.clone()).await;
    assert_eq!(code, 200, "{body}");
    let st = status(&s, &access).await;
    assert_eq!(st["repoCommit"], commit.to_string());
    assert_eq!(st["indexedRecords"], 50);
    assert_eq!((st["expectedBlobs"].as_i64(), st["importedBlobs"].as_i64()), (Some(1), Some(0)));
    assert!(st["repoBlocks"].as_i64().unwrap() > 50);
    let (_, missing) = s.call("GET", "com.atproto.repo.listMissingBlobs", Some(&access), None).await;
    assert_eq!(missing["blobs"].as_array().map(Vec::len), Some(1), "{missing}");
    // The same CAR again, then a newer, smaller repo: the index follows.
    assert_eq!(import(&s, &access, car.clone()).await.0, 200);
    assert_eq!(status(&s, &access).await["indexedRecords"], 50);
    let (newer, newer_commit) = repo_car(&did, &key, 40);
    assert_eq!(import(&s, &access, newer.clone()).await.0, 200);
    let st = status(&s, &access).await;
    assert_eq!(
        (st["indexedRecords"].as_i64(), st["repoCommit"].as_str()),
        (Some(40), Some(newer_commit.to_string().as_str()))
    );

    // Refused, with the index as it was: truncated, tampered, another account's, another key's.
    let truncated = newer[..newer.len() - 100].to_vec();
    let mut tampered = newer.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x55;
    let other_key = Keypair::generate(Algorithm::K256);
    let other_did = foreign_did(&s, &other_key).await;
    let (foreign, _) = repo_car(&other_did, &other_key, 5);
    let (wrong_key, _) = repo_car(&did, &other_key, 5);
    let db = s.db().await;
    let count = || async { sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM blocks").fetch_one(&db).await.unwrap().0 };
    let blocks_before = count().await;
    for (what, bad) in
        [("truncated", truncated), ("tampered", tampered), ("another account's", foreign), ("another key's", wrong_key)]
    {
        let (code, body) = import(&s, &access, bad).await;
        assert_eq!(code, 400, "{what}: {body}");
        assert_eq!(body["error"], "InvalidRequest", "{what}: {body}");
        let st = status(&s, &access).await;
        assert_eq!(st["indexedRecords"], 40, "{what} changed the index");
        assert_eq!(st["repoCommit"], newer_commit.to_string(), "{what} moved the root");
        assert_eq!(count().await, blocks_before, "{what} left blocks behind");
    }

    // The user's key: registered through `vow signer`, with no PLC operation yet.
    let mover = Account {
        did: did.clone(),
        handle: "mover.pds.test".into(),
        password: "pw-mover-secret".into(),
        access: access.clone(),
    };
    let keys = tempfile::tempdir().unwrap();
    let _signer = s.signer(&mover, &keys.path().join("mover.key"));
    let (_, signer_status) = s.call("GET", "app.vow.signer.getStatus", Some(&access), None).await;
    let user_key = signer_status["signingKey"].as_str().unwrap().to_owned();
    let (code, rec) = s.call("GET", "com.atproto.identity.getRecommendedDidCredentials", Some(&access), None).await;
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["rotationKeys"], json!([user_key]), "the user's key is the only rotation key");
    assert_eq!(rec["verificationMethods"]["atproto"], user_key);
    assert_eq!(rec["services"]["atproto_pds"]["endpoint"], "http://pds.test");
    let early = s.call("POST", "com.atproto.server.activateAccount", Some(&access), None).await;
    assert_error(&early, 400, "InvalidRequest");

    // The old PDS (the test, holding the DID's rotation key) signs the recommended operation.
    let last: Operation = s.http.get(format!("{}/{did}/log/last", s.plc)).send().await.unwrap().json().await.unwrap();
    let mut op = last.successor();
    op.rotation_keys = serde_json::from_value(rec["rotationKeys"].clone()).unwrap();
    op.verification_methods = serde_json::from_value(rec["verificationMethods"].clone()).unwrap();
    op.also_known_as = serde_json::from_value(rec["alsoKnownAs"].clone()).unwrap();
    op.services = serde_json::from_value(rec["services"].clone()).unwrap();
    let res = s.http.post(format!("{}/{did}", s.plc)).json(&op.sign(&key)).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());

    let (code, body) = s.call("POST", "com.atproto.server.activateAccount", Some(&access), None).await;
    assert_eq!(code, 200, "{body}");
    let st = status(&s, &access).await;
    assert_eq!((st["activated"].clone(), st["validDid"].clone()), (json!(true), json!(true)), "{st}");
    // The imported head (signed by the old key) is re-signed by the user's key.
    let user = atproto::crypto::PublicKey::from_did_key(&user_key).unwrap();
    let head_verifies = || async {
        let res = s.http.get(format!("{}/xrpc/com.atproto.sync.getRepo?did={did}", s.url)).send().await.unwrap();
        let car = res.bytes().await.unwrap();
        let reader = atproto::car::CarReader::new(std::io::Cursor::new(car.to_vec()), Default::default()).unwrap();
        let root = reader.roots()[0];
        let blocks: std::collections::HashMap<_, _> = reader.map(|b| b.unwrap()).collect();
        atproto::commit::SignedCommit::from_block(&blocks[&root]).unwrap().verify(&user).is_ok()
    };
    let mut verified = false;
    for _ in 0..600 {
        if head_verifies().await {
            verified = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(verified, "the head was re-signed by the user's key");
    let write = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&access),
            Some(json!({ "repo": did, "collection": "app.bsky.feed.post", "record": { "$type": "app.bsky.feed.post", "text": "moved in", "createdAt": "2026-12-01T00:00:00.000Z" } })),
        )
        .await;
    assert_eq!(write.0, 200, "{:?}", write.1);
    assert_eq!(status(&s, &access).await["indexedRecords"], 41);

    // The blob the old repo referenced, uploaded afterwards: nothing is missing any more.
    let res = s
        .http
        .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", s.url))
        .bearer_auth(&access)
        .header("content-type", "image/png")
        .body(BLOB)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let st = status(&s, &access).await;
    assert_eq!((st["expectedBlobs"].as_i64(), st["importedBlobs"].as_i64()), (Some(1), Some(1)));
    let (_, missing) = s.call("GET", "com.atproto.repo.listMissingBlobs", Some(&access), None).await;
    assert_eq!(missing["blobs"], json!([]));
}

/// The import benchmark (run by hand; not part of the test run): a generated repo of 128k
/// records, imported through the HTTP endpoint; prints the time and the server's peak RSS.
///   cargo build --release -p vow && VOW_BIN=target/release/vow \
///     cargo test -p vow --test migration -- --ignored --nocapture
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark, run by hand"]
async fn bench_import_128k_records() {
    let records: usize = std::env::var("RECORDS").ok().and_then(|n| n.parse().ok()).unwrap_or(128_000);
    let s = stack(false);
    let key = Keypair::generate(Algorithm::K256);
    let did = foreign_did(&s, &key).await;
    let claims =
        json!({ "iss": did, "aud": "did:web:pds.test", "lxm": "com.atproto.server.createAccount", "exp": now() + 600 });
    let (_, created) = create(&s, &did, "mover", Some(&token(&key, claims))).await;
    let access = created["accessJwt"].as_str().unwrap().to_owned();
    let (car, _) = repo_car(&did, &key, records);
    let idle = s.vow.rss();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid_status = format!("/proc/{}/status", s.vow.pid());
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(&pid_status)
                    && let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))
                    && let Ok(kb) = kb.trim().trim_end_matches("kB").trim().parse::<u64>()
                {
                    peak.fetch_max(kb * 1024, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let started = std::time::Instant::now();
    let (code, body) = import(&s, &access, car.clone()).await;
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&s, &access).await["indexedRecords"].as_u64(), Some(records as u64));
    println!(
        "{{\"records\":{records},\"carBytes\":{},\"seconds\":{:.2},\"peakRssMB\":{},\"idleAnonMB\":{}}}",
        car.len(),
        took.as_secs_f64(),
        peak.load(std::sync::atomic::Ordering::Relaxed) / (1 << 20),
        idle / (1 << 20)
    );
}

/// Runs `vow identity …`; returns whether it succeeded and what it printed (stdout, stderr).
fn identity_cli(args: &[&str], key_file: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vow"))
        .arg("identity")
        .args(args)
        .arg("--key-file")
        .arg(key_file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Leaving while Vow is down, to the real reference PDS, with the key file and a repo backup
/// alone: a service token the key signs, createAccount and importRepo there, a PLC operation
/// the key signs (the new PDS's signing key, the user's rotation key kept), activateAccount.
#[tokio::test(flavor = "multi_thread")]
async fn the_key_file_alone_moves_the_did_while_vow_is_down() {
    let mut s = stack(false);
    let alice = s.account("alice").await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("alice.key");
    let signer = s.signer(&alice, &key_file);
    for i in 0..3 {
        let post = json!({ "repo": alice.did, "collection": "app.bsky.feed.post",
            "record": { "$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": "2026-12-02T10:00:00.000Z" } });
        assert_eq!(s.call("POST", "com.atproto.repo.createRecord", Some(&alice.access), Some(post)).await.0, 200);
    }
    // The user's backup of their repo, taken while Vow was up.
    let car = s.http.get(format!("{}/xrpc/com.atproto.sync.getRepo?did={}", s.url, alice.did)).send().await.unwrap();
    let car = car.bytes().await.unwrap();
    let before = plc_last(&s, &alice.did).await;
    let user_key = before["verificationMethods"]["atproto"].as_str().unwrap().to_owned();
    // Vow is stopped; only the PLC directory, the key file and the backup remain.
    drop(signer);
    drop(std::mem::replace(&mut s.vow, Proc::none()));

    let data = tempfile::tempdir().unwrap();
    let (_refpds, ref_url) = reference_pds(data.path(), &s.plc);
    let xrpc = |method: &str| format!("{ref_url}/xrpc/{method}");
    let described: Value =
        s.http.get(xrpc("com.atproto.server.describeServer")).send().await.unwrap().json().await.unwrap();
    let ref_did = described["did"].as_str().unwrap();
    let (ok, token, err) = identity_cli(&["service-auth", "--did", &alice.did, "--aud", ref_did], &key_file);
    assert!(ok, "{err}");
    let res = s
        .http
        .post(xrpc("com.atproto.server.createAccount"))
        .bearer_auth(token.trim())
        .json(&json!({ "did": alice.did, "handle": "alice.test", "email": "alice@x.test", "password": "pw-on-ref-secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let created: Value = res.json().await.unwrap();
    let access = created["accessJwt"].as_str().unwrap();
    let res = s
        .http
        .post(xrpc("com.atproto.repo.importRepo"))
        .bearer_auth(access)
        .header("content-type", "application/vnd.ipld.car")
        .body(car)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let creds: Value = s
        .http
        .get(xrpc("com.atproto.identity.getRecommendedDidCredentials"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ref_key = creds["verificationMethods"]["atproto"].as_str().unwrap();
    let ref_rotation = creds["rotationKeys"][0].as_str().unwrap();
    let endpoint = creds["services"]["atproto_pds"]["endpoint"].as_str().unwrap();

    // A key that is not a rotation key of the DID is refused, and nothing changes.
    let stranger = keys.path().join("stranger.key");
    std::fs::write(&stranger, Keypair::generate(Algorithm::K256).to_bytes()).unwrap();
    let set_pds = [
        "set-pds",
        "--did",
        &alice.did,
        "--pds",
        endpoint,
        "--signing-key",
        ref_key,
        "--add-rotation-key",
        ref_rotation,
        "--plc",
        &s.plc,
    ];
    let (ok, _, text) = identity_cli(&set_pds, &stranger);
    assert!(!ok && text.contains("not a rotation key"), "{text}");
    let (ok, _, text) = identity_cli(&set_pds, &keys.path().join("missing.key"));
    assert!(!ok && text.contains("does not exist"), "{text}");
    assert_eq!(plc_last(&s, &alice.did).await, before);

    let (ok, _, text) = identity_cli(&set_pds, &key_file);
    assert!(ok, "{text}");
    let last = plc_last(&s, &alice.did).await;
    assert_eq!(last["services"]["atproto_pds"]["endpoint"], endpoint);
    assert_eq!(last["verificationMethods"]["atproto"], ref_key);
    assert_eq!(last["rotationKeys"], json!([user_key, ref_rotation]), "the user's key keeps the first rank");
    assert_eq!(last["alsoKnownAs"], before["alsoKnownAs"]);

    // The reference PDS takes the account: active, every record there, and it writes.
    let res = s.http.post(xrpc("com.atproto.server.activateAccount")).bearer_auth(access).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let post = json!({ "repo": alice.did, "collection": "app.bsky.feed.post",
        "record": { "$type": "app.bsky.feed.post", "text": "moved", "createdAt": "2026-12-02T11:00:00.000Z" } });
    let res = s.http.post(xrpc("com.atproto.repo.createRecord")).bearer_auth(access).json(&post).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let url = format!("{}?repo={}&collection=app.bsky.feed.post", xrpc("com.atproto.repo.listRecords"), alice.did);
    let listed: Value = s.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["records"].as_array().unwrap().len(), 4);

    // The leave page, as static files for any web server.
    let page = keys.path().join("page");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vow"))
        .args(["leave-page", "--plc", &s.plc])
        .arg(&page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(page.join("leave.html")).unwrap();
    assert!(html.contains("src=\"leave.js\"") && html.contains(&format!("data-plc=\"{}\"", s.plc)), "{html}");
    for file in ["leave.js", "passkey.js", "verify.js", "noble-secp256k1.js"] {
        assert!(page.join(file).exists(), "{file} written");
    }
}

/// The code in the newest mail Vow wrote to `to` (to `VOW_MAIL_DIR`: no SMTP is configured).
fn mailed_token(dir: &std::path::Path, to: &str) -> String {
    code_in(&mail_to(dir, to, 0)).expect("the mail holds a code")
}

async fn plc_last(s: &Stack, did: &str) -> Value {
    s.http.get(format!("{}/{did}/log/last", s.plc)).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_operations_need_the_mailed_token_and_the_users_approval() {
    let mail = tempfile::tempdir().unwrap();
    let s = stack_with(false, &[("VOW_MAIL_DIR", mail.path().to_str().unwrap())]);
    let alice = s.account("alice").await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("alice.key");
    let signer = s.signer(&alice, &key_file);
    let user_key = plc_last(&s, &alice.did).await["verificationMethods"]["atproto"].as_str().unwrap().to_owned();
    let sign = |body: Value| s.call("POST", "com.atproto.identity.signPlcOperation", Some(&alice.access), Some(body));

    // No token, or one never issued: refused before the signer is asked.
    assert_error(&sign(json!({})).await, 400, "InvalidRequest");
    assert_error(&sign(json!({ "token": "AAAAA-BBBBB" })).await, 400, "InvalidToken");

    let res = s.call("POST", "com.atproto.identity.requestPlcOperationSignature", Some(&alice.access), None).await;
    assert_eq!(res.0, 200, "{res:?}");
    let token = mailed_token(mail.path(), "alice@x.test");

    // A move to another PDS: `vow signer` without --approve-identity declines, and the token
    // is still good for another try.
    let elsewhere =
        json!({ "atproto_pds": { "type": "AtprotoPersonalDataServer", "endpoint": "https://elsewhere.example" } });
    let res = sign(json!({ "token": token, "services": elsewhere })).await;
    assert_error(&res, 400, "SigningRejected");
    assert_eq!(plc_last(&s, &alice.did).await["services"]["atproto_pds"]["endpoint"], "http://pds.test");

    // A new handle on the DID, which changes no control: signed, once.
    let aka = json!(["at://alice.pds.test", "https://alice.example"]);
    let res = sign(json!({ "token": token, "alsoKnownAs": aka })).await;
    assert_eq!(res.0, 200, "{res:?}");
    let op = res.1["operation"].clone();
    assert_eq!(op["alsoKnownAs"], aka);
    assert_eq!(op["rotationKeys"], json!([user_key]));
    assert!(op["sig"].as_str().is_some_and(|s| !s.is_empty()));
    assert_error(&sign(json!({ "token": token, "alsoKnownAs": aka })).await, 400, "InvalidToken");

    // Submitted here only if it keeps this PDS and the account's key.
    let submit = |op: Value| {
        s.call("POST", "com.atproto.identity.submitPlcOperation", Some(&alice.access), Some(json!({ "operation": op })))
    };
    let mut moved = op.clone();
    moved["services"] = elsewhere.clone();
    assert_error(&submit(moved).await, 400, "InvalidRequest");
    let mut rekeyed = op.clone();
    rekeyed["verificationMethods"]["atproto"] = json!(Keypair::generate(Algorithm::K256).public_key().to_did_key());
    assert_error(&submit(rekeyed).await, 400, "InvalidRequest");
    // A tampered one reaches the PLC directory, whose refusal is reported.
    let mut renamed = op.clone();
    renamed["alsoKnownAs"] = json!(["at://someone.else.example"]);
    assert_error(&submit(renamed).await, 400, "InvalidRequest");
    let mut tampered = op.clone();
    tampered["alsoKnownAs"] = json!(["at://alice.pds.test"]);
    assert_error(&submit(tampered).await, 502, "UpstreamFailure");
    let res = submit(op.clone()).await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(plc_last(&s, &alice.did).await["alsoKnownAs"], aka);

    // A newer token replaces the older one; with --approve-identity the move is signed.
    s.call("POST", "com.atproto.identity.requestPlcOperationSignature", Some(&alice.access), None).await;
    let first = mailed_token(mail.path(), "alice@x.test");
    s.call("POST", "com.atproto.identity.requestPlcOperationSignature", Some(&alice.access), None).await;
    let second = mailed_token(mail.path(), "alice@x.test");
    assert_ne!(first, second);
    assert_error(&sign(json!({ "token": first, "services": elsewhere })).await, 400, "InvalidToken");
    drop(signer);
    let _signer = s.signer_with(&alice, &key_file, &["--approve-identity"]);
    let res = sign(json!({ "token": second, "services": elsewhere })).await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(res.1["operation"]["services"], elsewhere);
    // The recommended credentials for an account living here: its own key alone.
    let (_, creds) =
        s.call("GET", "com.atproto.identity.getRecommendedDidCredentials", Some(&alice.access), None).await;
    assert_eq!(creds["rotationKeys"], json!([user_key]));

    // Deactivated, the repo takes no writes and is not served; activated again, it is.
    let res = s.call("POST", "com.atproto.server.deactivateAccount", Some(&alice.access), Some(json!({}))).await;
    assert_eq!(res.0, 200, "{res:?}");
    let (_, status) = s.call("GET", "com.atproto.server.checkAccountStatus", Some(&alice.access), None).await;
    assert_eq!(status["activated"], false);
    let post = json!({ "repo": alice.did, "collection": "app.bsky.feed.post",
        "record": { "$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-12-02T10:00:00.000Z" } });
    assert_error(
        &s.call("POST", "com.atproto.repo.createRecord", Some(&alice.access), Some(post.clone())).await,
        400,
        "RepoDeactivated",
    );
    let res = s.call("GET", &format!("com.atproto.sync.getLatestCommit?did={}", alice.did), None, None).await;
    assert_error(&res, 400, "RepoDeactivated");
    let res = s.call("POST", "com.atproto.server.activateAccount", Some(&alice.access), None).await;
    assert_eq!(res.0, 200, "{res:?}");
    let res = s.call("POST", "com.atproto.repo.createRecord", Some(&alice.access), Some(post)).await;
    assert_eq!(res.0, 200, "{res:?}");
}

/// The reference PDS (`@atproto/pds`, installed in `bench/`) on a free loopback port, with its
/// data in `dir`; returns it and its URL.
fn reference_pds(dir: &std::path::Path, plc: &str) -> (Proc, String) {
    let bench = e2e_dir().join("../bench");
    assert!(bench.join("node_modules/@atproto/pds").exists(), "run `npm ci` in bench/ first (scripts/test.sh does)");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(bench.join("refpds.js")).arg(free_port().to_string()).arg(dir).arg(plc);
    start(cmd, "reference PDS listening")
}

/// The whole round trip with the reference PDS: in with the standard calls, the user's key
/// the only rotation key, and out again with every step signed by that key
/// (`e2e/migration-flow.js` holds the steps and their checks).
#[tokio::test(flavor = "multi_thread")]
async fn an_account_moves_in_from_the_reference_pds_and_out_again() {
    let mail = tempfile::tempdir().unwrap();
    let s = stack_with(false, &[("VOW_MAIL_DIR", mail.path().to_str().unwrap())]);
    let data = tempfile::tempdir().unwrap();
    let (_old, old_url) = reference_pds(&data.path().join("old"), &s.plc);
    let (_new, new_url) = reference_pds(&data.path().join("new"), &s.plc);
    let key_file = data.path().join("user.key");
    let bench = e2e_dir().join("../bench");
    let summary = run_script(
        "migration-flow.js",
        &[
            "--vow",
            &s.url,
            "--ref",
            &old_url,
            "--ref2",
            &new_url,
            "--plc",
            &s.plc,
            "--ref-data",
            data.path().join("old").to_str().unwrap(),
            "--mail-dir",
            mail.path().to_str().unwrap(),
            "--vow-bin",
            env!("CARGO_BIN_EXE_vow"),
            "--key-file",
            key_file.to_str().unwrap(),
            "--bench",
            bench.to_str().unwrap(),
        ],
    );
    assert_eq!(summary["records"], 7, "a profile, five posts from before and one from Vow");
}

/// A recovery key, added above the user's key through the standard calls, later installs a new
/// key on its own (`vow identity set-key`, the old key lost); `vow signer` with the new key
/// takes over the account, and the repo verifies under it.
#[tokio::test(flavor = "multi_thread")]
async fn the_recovery_key_alone_installs_a_new_key() {
    let mail = tempfile::tempdir().unwrap();
    let s = stack_with(false, &[("VOW_MAIL_DIR", mail.path().to_str().unwrap())]);
    let alice = s.account("alice").await;
    let keys = tempfile::tempdir().unwrap();
    let old_key_file = keys.path().join("old.key");
    let signer = s.signer_with(&alice, &old_key_file, &["--approve-identity"]);
    let old_key = plc_last(&s, &alice.did).await["verificationMethods"]["atproto"].as_str().unwrap().to_owned();

    let recovery = Keypair::generate(Algorithm::K256);
    let recovery_file = keys.path().join("recovery.key");
    std::fs::write(&recovery_file, recovery.to_bytes()).unwrap();
    let recovery_did = recovery.public_key().to_did_key();
    s.call("POST", "com.atproto.identity.requestPlcOperationSignature", Some(&alice.access), None).await;
    let token = mailed_token(mail.path(), "alice@x.test");
    let body = json!({ "token": token, "rotationKeys": [recovery_did, old_key] });
    let res = s.call("POST", "com.atproto.identity.signPlcOperation", Some(&alice.access), Some(body)).await;
    assert_eq!(res.0, 200, "{res:?}");
    let op = json!({ "operation": res.1["operation"] });
    let res = s.call("POST", "com.atproto.identity.submitPlcOperation", Some(&alice.access), Some(op)).await;
    assert_eq!(res.0, 200, "{res:?}");
    let (_, creds) =
        s.call("GET", "com.atproto.identity.getRecommendedDidCredentials", Some(&alice.access), None).await;
    assert_eq!(creds["rotationKeys"], json!([recovery_did, old_key]), "the recovery key is kept");

    // The old key is lost. The recovery key alone installs a new one.
    drop(signer);
    let new = Keypair::generate(Algorithm::K256);
    let new_file = keys.path().join("new.key");
    std::fs::write(&new_file, new.to_bytes()).unwrap();
    let new_did = new.public_key().to_did_key();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vow"))
        .args(["identity", "set-key", "--did", &alice.did, "--new-key", &new_did, "--plc", &s.plc, "--key-file"])
        .arg(&recovery_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = plc_last(&s, &alice.did).await;
    assert_eq!(last["verificationMethods"]["atproto"], new_did);
    assert_eq!(last["rotationKeys"], json!([recovery_did, new_did]));

    // `vow signer` with the new key registers it (the DID names it) and signs from then on.
    let _signer = s.signer(&alice, &new_file);
    let (_, status) = s.call("GET", "app.vow.signer.getStatus", Some(&alice.access), None).await;
    assert_eq!(status["signingKey"], new_did);
    let post = json!({ "repo": alice.did, "collection": "app.bsky.feed.post",
        "record": { "$type": "app.bsky.feed.post", "text": "recovered", "createdAt": "2026-12-02T10:00:00.000Z" } });
    let res = s.call("POST", "com.atproto.repo.createRecord", Some(&alice.access), Some(post)).await;
    assert_eq!(res.0, 200, "{res:?}");
    run_script("verify-repo.js", &[&s.url, &alice.did, "--plc", &s.plc]);
}

/// `updateHandle` takes a handle on another domain once that domain names the account's DID
/// (here by DNS TXT, from a DNS server on loopback), and the PLC operation is the user's.
#[tokio::test(flavor = "multi_thread")]
async fn a_handle_on_another_domain_is_taken_once_its_dns_names_the_did() {
    let dns = Dns::start();
    let s = stack_with(false, &[("VOW_DNS_SERVER", &dns.addr.to_string())]);
    let alice = s.account("alice").await;
    let bob = s.account("bob").await;
    let keys = tempfile::tempdir().unwrap();
    let _signer = s.signer(&alice, &keys.path().join("alice.key"));
    let update = |handle: &str| {
        s.call("POST", "com.atproto.identity.updateHandle", Some(&alice.access), Some(json!({ "handle": handle })))
    };

    // Not set up, or naming someone else: refused, saying what to do.
    let res = update("alice.example.com").await;
    assert_error(&res, 400, "InvalidRequest");
    assert!(res.1["message"].as_str().unwrap().contains(&format!("did={}", alice.did)), "{res:?}");
    dns.txt("_atproto.bob.example.com", &[&format!("did={}", bob.did)]);
    assert_error(&update("bob.example.com").await, 400, "InvalidRequest");
    // Two different DIDs make a handle ambiguous.
    dns.txt("_atproto.both.example.com", &[&format!("did={}", bob.did), &format!("did={}", alice.did)]);
    assert_error(&update("both.example.com").await, 400, "InvalidRequest");

    dns.txt("_atproto.alice.example.org", &[&format!("did={}", alice.did)]);
    let res = update("Alice.Example.org").await;
    assert_eq!(res.0, 200, "{res:?}");
    assert_eq!(plc_last(&s, &alice.did).await["alsoKnownAs"], json!(["at://alice.example.org"]));
    let (_, session) = s.call("GET", "com.atproto.server.getSession", Some(&alice.access), None).await;
    assert_eq!(session["handle"], "alice.example.org");
    let res = s.call("GET", "com.atproto.identity.resolveHandle?handle=alice.example.org", None, None).await;
    assert_eq!(res.1["did"], alice.did);
    // Taken now: no one else here can claim it, even if DNS named them.
    let res = s
        .call(
            "POST",
            "com.atproto.identity.updateHandle",
            Some(&bob.access),
            Some(json!({ "handle": "alice.example.org" })),
        )
        .await;
    assert_error(&res, 400, "HandleNotAvailable");
}

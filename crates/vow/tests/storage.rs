//! Storage, on both backends: the embedded store (SQLite blocks, blob files) and a real IPFS
//! node (js-ipfs over its Kubo-compatible RPC API, started by these tests on loopback). Writes go
//! through `vow signer`, exports are verified with `@atproto/repo` against the real PLC, blobs
//! through `@atproto/api`; reference counting and clean-up are checked against what the store
//! itself holds.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The block `cid` as the backend holds it (from the IPFS node's own `block/get`).
async fn stored_block(s: &Stack, ipfs: Option<&Ipfs>, cid: &str) -> Option<Vec<u8>> {
    match ipfs {
        Some(node) => {
            let (status, bytes) = node.rpc("block/get", &[("arg", cid), ("timeout", "2s")]).await;
            (status == 200).then_some(bytes)
        }
        None => sqlx::query_as::<_, (Vec<u8>,)>("SELECT bytes FROM blocks WHERE cid = ?")
            .bind(cid)
            .fetch_optional(&s.db().await)
            .await
            .unwrap()
            .map(|r| r.0),
    }
}

/// Whether the backend keeps the block: pinned on IPFS, a row in the embedded store.
async fn block_kept(s: &Stack, ipfs: Option<&Ipfs>, cid: &str) -> bool {
    match ipfs {
        Some(node) => node.pinned(cid).await,
        None => stored_block(s, None, cid).await.is_some(),
    }
}

/// Polls `cond` until it holds (releases on IPFS happen just after the write returns); gives up
/// after two minutes, so a broken build fails rather than hangs.
async fn eventually<F: AsyncFn() -> bool>(what: &str, cond: F) {
    for _ in 0..1200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn head(s: &Stack, did: &str) -> String {
    let (status, latest) = s.call("GET", &format!("com.atproto.sync.getLatestCommit?did={did}"), None, None).await;
    assert_eq!(status, 200, "{latest}");
    latest["cid"].as_str().unwrap().to_owned()
}

async fn blob_status(s: &Stack, did: &str, cid: &str) -> u16 {
    let url = format!("{}/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}", s.url);
    s.http.get(url).send().await.unwrap().status().as_u16()
}

fn cid_of(bytes: &[u8], cid: &str) -> bool {
    atproto::cid::matches(&cid.parse().unwrap(), bytes)
}

async fn storage_suite(s: &Stack, ipfs: Option<&Ipfs>) {
    let jo = s.account("joan").await;
    let _jo_signer = s.signer(&jo, &s.dir.path().join("joan.key"));
    let summary = run_script("storage-flow.js", &[&s.url, &jo.handle, &jo.password, "--too-big", "41000000"]);
    // A commit larger than one RPC body (12 records of 100 kB): stored block by block on IPFS
    // rather than as one CAR.
    let writes: Vec<Value> = (0..12)
        .map(|i| {
            json!({ "$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.big", "rkey": format!("r{i}"),
                    "value": { "$type": "com.example.big", "text": format!("{i} {}", "y".repeat(100_000)) } })
        })
        .collect();
    let body = json!({ "repo": jo.did, "writes": writes });
    let (status, out) = s.call("POST", "com.atproto.repo.applyWrites", Some(&jo.access), Some(body)).await;
    assert_eq!(status, 200, "{out}");
    run_script("verify-repo.js", &[&s.url, &jo.did, "--plc", &s.plc]);

    // The head commit's block is in the store itself (the IPFS node's own block/get).
    let head_cid = head(s, &jo.did).await;
    let block = stored_block(s, ipfs, &head_cid).await.expect("head commit block stored");
    assert!(cid_of(&block, &head_cid));
    assert!(block_kept(s, ipfs, &head_cid).await);

    // The 30 MB blob, no longer referenced, is removed once the grace period is over (an hour
    // here, so nothing is removed before the test has looked; the test then ages the blob,
    // and the sweep, every second here, removes it); the referenced ones stay.
    let db = s.db().await;
    let blob_row = |cid: String| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (Option<String>,)>("SELECT ipfs_cid FROM blobs WHERE cid = ?")
                .bind(cid)
                .fetch_optional(&db)
                .await
                .unwrap()
        }
    };
    let big = summary["big"].as_str().unwrap().to_owned();
    let small = summary["small"].as_str().unwrap().to_owned();
    let big_ipfs = blob_row(big.clone()).await.expect("big blob row").0;
    assert_eq!(big_ipfs.is_some(), ipfs.is_some(), "IPFS root CID recorded exactly when on IPFS");
    if let (Some(node), Some(root)) = (ipfs, &big_ipfs) {
        assert!(node.pinned(root).await, "blob pinned while referenced");
    }
    age_blob(s, &big).await;
    eventually("the unreferenced 30 MB blob is removed", async || blob_status(s, &jo.did, &big).await == 400).await;
    assert_eq!(blob_status(s, &jo.did, &small).await, 200, "a referenced blob stays");
    match (ipfs, &big_ipfs) {
        (Some(node), Some(root)) => assert!(!node.pinned(root).await, "removed blob unpinned"),
        _ => {
            let dir = s.dir.path().join("blobs");
            assert!(!dir.join(&big).exists(), "removed blob's file deleted");
            assert!(dir.join(&small).exists(), "referenced blob's file kept");
        }
    }

    // A block two accounts share (the same record at the same key) is kept until the last one
    // lets go of it; each account's replaced commits are released.
    let al = s.account("alan").await;
    let _al_signer = s.signer(&al, &s.dir.path().join("alan.key"));
    let record = json!({ "$type": "com.example.shared", "text": "identical in both repos" });
    let mut cids = Vec::new();
    let mine = json!({ "$type": "com.example.shared", "text": "alan's own" });
    let body = json!({ "repo": al.did, "collection": "com.example.shared", "rkey": "mine", "record": mine });
    let (status, out) = s.call("POST", "com.atproto.repo.putRecord", Some(&al.access), Some(body)).await;
    assert_eq!(status, 200, "{out}");
    for acct in [&jo, &al] {
        let (status, out) = s
            .call(
                "POST",
                "com.atproto.repo.putRecord",
                Some(&acct.access),
                Some(json!({ "repo": acct.did, "collection": "com.example.shared", "rkey": "self", "record": record })),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        cids.push(out["cid"].as_str().unwrap().to_owned());
    }
    assert_eq!(cids[0], cids[1], "identical records share a block");
    let shared = cids[0].clone();
    let delete = |acct: &Account| {
        let body = json!({ "repo": acct.did, "collection": "com.example.shared", "rkey": "self" });
        let token = acct.access.clone();
        async move {
            let (status, out) = s.call("POST", "com.atproto.repo.deleteRecord", Some(&token), Some(body)).await;
            assert_eq!(status, 200, "{out}");
        }
    };
    let jo_before = head(s, &jo.did).await;
    delete(&jo).await;
    eventually("joan's replaced commit is released", async || !block_kept(s, ipfs, &jo_before).await).await;
    assert!(block_kept(s, ipfs, &shared).await, "still referenced by alan's repo");
    delete(&al).await;
    eventually("the shared record block is released", async || !block_kept(s, ipfs, &shared).await).await;

    // Exactly the referenced blocks are kept.
    let (referenced,): (i64,) =
        sqlx::query_as("SELECT COUNT(DISTINCT cid) FROM repo_blocks").fetch_one(&db).await.unwrap();
    let kept = || async {
        match ipfs {
            Some(node) => {
                let (_, body) = node.rpc("pin/ls", &[("type", "direct")]).await;
                let pins: Value = serde_json::from_slice(&body).unwrap();
                pins["Keys"].as_object().map_or(0, |k| k.len() as i64)
            }
            None => sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM blocks").fetch_one(&db).await.unwrap().0,
        }
    };
    let settle = async |referenced: i64, what: &str| {
        let mut held = 0;
        for _ in 0..1200 {
            held = kept().await;
            if held == referenced {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(held, referenced, "{what}");
    };
    settle(referenced, "the store keeps exactly the referenced blocks").await;
    run_script("verify-repo.js", &[&s.url, &jo.did, "--plc", &s.plc]);
    run_script("verify-repo.js", &[&s.url, &al.did, "--plc", &s.plc]);

    // The operator deletes alan: the blocks only his repo held are let go of, joan's stay.
    let al_head = head(s, &al.did).await;
    let res = s.admin("com.atproto.admin.deleteAccount", json!({ "did": al.did })).await;
    assert_eq!(res.0, 200, "{res:?}");
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(DISTINCT cid) FROM repo_blocks").fetch_one(&db).await.unwrap();
    assert!(left < referenced, "alan's blocks are no longer referenced");
    settle(left, "a deleted account's blocks are let go of").await;
    assert!(!block_kept(s, ipfs, &al_head).await, "alan's head commit is gone from the store");
    assert!(block_kept(s, ipfs, &head(s, &jo.did).await).await, "joan's head commit stays");
    run_script("verify-repo.js", &[&s.url, &jo.did, "--plc", &s.plc]);
}

const SUITE_ENV: [(&str, &str); 4] = [
    ("VOW_BLOB_GRACE_SECS", "3600"),
    ("VOW_BLOB_SWEEP_SECS", "1"),
    ("VOW_BLOB_UPLOAD_LIMIT", "40000000"),
    ("VOW_MAX_JSON_BODY", "2000000"),
];

/// Makes a blob look uploaded two hours ago, past the suite's grace period.
async fn age_blob(s: &Stack, cid: &str) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("vow.db"));
    let db = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let aged = sqlx::query("UPDATE blobs SET created_at = ? WHERE cid = ?")
        .bind(vow::store::db::format_timestamp(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
                - 2 * 60 * 60 * 1000,
        ))
        .bind(cid)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(aged.rows_affected(), 1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_on_the_embedded_store() {
    let s = stack_with(false, &SUITE_ENV);
    storage_suite(&s, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_on_an_ipfs_node() {
    let ipfs_dir = tempfile::tempdir().unwrap();
    let node = Ipfs::start(ipfs_dir.path());
    let mut env = SUITE_ENV.to_vec();
    env.push(("VOW_IPFS_NODE_URL", &node.api));
    let mut s = stack_with(false, &env);
    storage_suite(&s, Some(&node)).await;

    // With a gateway configured, getBlob redirects to it, and the gateway serves the bytes.
    let (did, small): (String, String) = sqlx::query_as(
        "SELECT b.did, b.cid FROM blobs b JOIN record_blobs r ON r.cid = b.cid WHERE b.mime != 'image/png' LIMIT 1",
    )
    .fetch_one(&s.db().await)
    .await
    .unwrap();
    s.restart_vow(&[("VOW_IPFS_GATEWAY_URL", &node.gateway)]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = http.get(format!("{}/xrpc/com.atproto.sync.getBlob?did={did}&cid={small}", s.url)).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/ipfs/", node.gateway)), "{location}");
    let bytes = http.get(&location).send().await.unwrap().bytes().await.unwrap();
    assert!(cid_of(&bytes, &small), "the gateway serves the blob's bytes");
}

/// The IPFS node dies in the middle of a batch of writes. Every write acknowledged before then
/// survives a restart of both; every write that failed left nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_an_ipfs_crash() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let ipfs_dir = tempfile::tempdir().unwrap();
    let mut node = Ipfs::start(ipfs_dir.path());
    let mut s = stack_with(false, &[("VOW_IPFS_NODE_URL", &node.api), ("VOW_IPFS_TIMEOUT", "3")]);
    let jo = s.account("joan").await;
    let signer = s.signer(&jo, &s.dir.path().join("joan.key"));
    let health = |url: String| async move {
        let res = reqwest::get(format!("{url}/xrpc/_health")).await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(health(s.url.clone()).await.0, 200);

    // Four writers, 60 writes; the node is killed once 15 have been acknowledged.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (url, token, did, acked) = (s.url.clone(), jo.access.clone(), jo.did.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut results = Vec::new();
            for i in 0..15 {
                let rkey = format!("w{w}n{i:02}");
                let res = http
                    .post(format!("{url}/xrpc/com.atproto.repo.createRecord"))
                    .bearer_auth(&token)
                    .json(&json!({ "repo": did, "collection": "com.example.note", "rkey": rkey,
                                   "record": { "$type": "com.example.note", "n": i, "w": w } }))
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                if status == 200 {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                results.push((rkey, status, body));
            }
            results
        }));
    }
    while acked.load(Ordering::SeqCst) < 15 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    node.kill();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for w in writers {
        for (rkey, status, body) in w.await.unwrap() {
            if status == 200 {
                ok.push(rkey);
            } else {
                assert_eq!((status, body["error"].as_str()), (503, Some("StorageUnavailable")), "{body}");
                failed.push(rkey);
            }
        }
    }
    assert!(ok.len() >= 15 && !failed.is_empty(), "{} acknowledged, {} failed", ok.len(), failed.len());
    println!("{} writes acknowledged, {} failed when the node died", ok.len(), failed.len());
    let (status, body) = health(s.url.clone()).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("IPFS"), "{body}");
    drop(signer);

    // The server restarts while the node is still down: with nothing cached, reads say the
    // storage is unavailable rather than that the record does not exist.
    s.restart_vow(&[]);
    let note =
        |rkey: &str| format!("com.atproto.repo.getRecord?repo={}&collection=com.example.note&rkey={rkey}", jo.did);
    assert_error(&s.call("GET", &note(&ok[0]), None, None).await, 503, "StorageUnavailable");

    // Once the node is back, every read below comes from it.
    node.restart();
    assert_eq!(health(s.url.clone()).await.0, 200);
    for rkey in &ok {
        let (status, out) = s.call("GET", &note(rkey), None, None).await;
        assert_eq!(status, 200, "acknowledged write {rkey} lost: {out}");
    }
    for rkey in &failed {
        assert_error(&s.call("GET", &note(rkey), None, None).await, 400, "RecordNotFound");
    }
    let (_, listed) = s
        .call(
            "GET",
            &format!("com.atproto.repo.listRecords?repo={}&collection=com.example.note&limit=100", jo.did),
            None,
            None,
        )
        .await;
    assert_eq!(listed["records"].as_array().unwrap().len(), ok.len());
    run_script("verify-repo.js", &[&s.url, &jo.did, "--plc", &s.plc]);

    // And the account writes again once its signer is back.
    let _signer = s.signer(&jo, &s.dir.path().join("joan.key"));
    let (status, out) = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&jo.access),
            Some(json!({ "repo": jo.did, "collection": "com.example.note", "record": { "$type": "com.example.note", "n": 99 } })),
        )
        .await;
    assert_eq!(status, 200, "{out}");
}

//! Integration: what an operator relies on. Rate limits as apps meet them (`@atproto/api`),
//! the admin's bypass; the real `vow` binary, SQLite file and PLC server.

mod common;

use common::*;

/// Sign-ins per identifier, sign-ups per forwarded client address and writes per account run
/// out with `RateLimitExceeded` and the `ratelimit-*` headers, and recover
/// (`e2e/ratelimit-flow.js`); the admin is not limited.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_hit_and_recovered_through_atproto_api() {
    let s = stack_with(
        false,
        &[
            ("VOW_RATE_LIMITS", "true"),
            // One sign-in attempt comes back every second.
            ("VOW_RATE_LIMIT_SESSION", "3/3s"),
            ("VOW_RATE_LIMIT_SIGNUP", "4/1h"),
            ("VOW_RATE_LIMIT_WRITES_HOUR", "15/1h"),
            ("VOW_TRUSTED_PROXIES", "127.0.0.1/32,::1"),
        ],
    );
    let user = s.account("limited").await;
    let _signer = s.signer(&user, &s.dir.path().join("limited.key"));
    run_script(
        "ratelimit-flow.js",
        &[
            &s.url,
            "--handle",
            &user.handle,
            "--password",
            &user.password,
            "--session-limit",
            "3",
            "--write-points",
            "15",
        ],
    );

    // The admin's requests are not counted: twice as many sign-ups as the limit allows are
    // answered on their merits.
    let mut statuses = std::collections::BTreeSet::new();
    for i in 0..8 {
        let res = s
            .http
            .post(format!("{}/xrpc/com.atproto.server.createAccount", s.url))
            .basic_auth("admin", Some("admin-secret"))
            .json(&serde_json::json!({ "handle": format!("admin{i}.pds.test"), "email": format!("a{i}@x.test"), "password": "pw-admin-made" }))
            .send()
            .await
            .unwrap();
        statuses.insert(res.status().as_u16());
    }
    assert_eq!(statuses, [200].into(), "the admin is not rate limited");
    // Without the admin's credentials, the same address runs out at the limit (it made one
    // account at the start).
    let mut answers = Vec::new();
    for i in 0..5 {
        let (status, body) = s
            .call(
                "POST",
                "com.atproto.server.createAccount",
                None,
                Some(serde_json::json!({ "handle": format!("late{i}.pds.test"), "email": format!("late{i}@x.test"), "password": "pw-late-comer" })),
            )
            .await;
        answers.push((status, body["error"].as_str().map(str::to_owned)));
    }
    assert!(answers[..3].iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert_eq!(answers[3], (429, Some("RateLimitExceeded".to_owned())), "{answers:?}");
}

/// Passkeys are bound to the hostname: a start under another VOW_HOSTNAME is refused while
/// accounts have passkeys, unless VOW_ALLOW_HOSTNAME_CHANGE says so; weak secrets are refused
/// on a public server.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_to_start_on_a_changed_hostname_or_weak_secrets() {
    let mut s = stack(false);
    let user = s.account("keyholder").await;
    s.stop_vow();
    // A passkey registered under pds.test (its credential, as the account page stores it).
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", s.dir.path().join("vow.db").display())).await.unwrap();
    sqlx::query("UPDATE accounts SET passkey_credential_id = 'cred-1' WHERE did = ?")
        .bind(&user.did)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    let moved = [
        ("VOW_HOSTNAME", "elsewhere.test"),
        ("VOW_DID", "did:web:elsewhere.test"),
        ("VOW_PUBLIC_URL", "http://elsewhere.test"),
    ];
    let out = s.vow_command(&moved).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a start under another hostname is refused");
    assert!(
        stderr.contains("pds.test") && stderr.contains("VOW_ALLOW_HOSTNAME_CHANGE"),
        "the refusal names the old hostname and the way out: {stderr}"
    );

    let weak = [("VOW_PUBLIC_URL", "https://pds.test"), ("VOW_ADMIN_PASSWORD", "change-me-to-a-long-random-string")];
    let out = s.vow_command(&weak).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("VOW_ADMIN_PASSWORD"), "{stderr}");
    let short = [
        ("VOW_PUBLIC_URL", "https://pds.test"),
        ("VOW_ADMIN_PASSWORD", &"a".repeat(30)),
        ("VOW_SESSION_SECRET", "short"),
    ];
    let out = s.vow_command(&short).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("VOW_SESSION_SECRET"), "{stderr}");

    // Told to, it starts under the new name, and the name it remembers is the new one.
    s.restart_vow(&[moved[0], moved[1], moved[2], ("VOW_ALLOW_HOSTNAME_CHANGE", "true")]);
    let (status, _) = s.call("GET", "com.atproto.server.describeServer", None, None).await;
    assert_eq!(status, 200);

    // The on-demand TLS check names the hostname and the handles hosted here, nothing else.
    for (domain, expected) in [("elsewhere.test", 200), (user.handle.as_str(), 200), ("stranger.example", 404)] {
        let res = s.http.get(format!("{}/tls-check?domain={domain}", s.url)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), expected, "{domain}");
    }
    // Without a domain: an XRPC error body, not a bare refusal.
    let res = s.http.get(format!("{}/tls-check", s.url)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "InvalidRequest", "{body}");
}

/// The deployment kit as far as it runs without a container engine: `vow run` with the
/// settings `.env.example` sets and the `vow` service's `environment:` of docker-compose.yml
/// (its /data moved to a temporary directory, Kubo's address left out: there is none here)
/// starts and answers its health check, and the `first-invite` service's script makes the
/// first invite code once.
#[tokio::test(flavor = "multi_thread")]
async fn the_compose_environment_drives_the_real_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let example = std::fs::read_to_string(root.join(".env.example")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let localize = |v: &str| v.replace("/data", &data_dir);

    // .env.example's uncommented settings (the env_file), then the service's environment.
    let mut env: Vec<(String, String)> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let service = compose.split("\n  vow:\n").nth(1).expect("a vow service");
    let block = service.split("\n    environment:\n").nth(1).expect("its environment");
    let mut from_compose = 0;
    for line in block.lines().take_while(|l| l.starts_with("      ")) {
        let (k, v) = line.trim().split_once(':').expect("KEY: value");
        let v = v.trim().trim_matches('"');
        from_compose += 1;
        if k == "VOW_IPFS_NODE_URL" {
            assert_eq!(v, "http://kubo:5001", "Vow talks to the Kubo service's RPC API");
            continue;
        }
        env.push((k.to_owned(), localize(v)));
    }
    assert!(from_compose >= 5, "the vow service sets its paths: {block}");
    let port = free_port();
    let plc = start(
        {
            let mut c = std::process::Command::new("node");
            c.arg(e2e_dir().join("plc-server.js")).arg("0");
            c
        },
        "PLC listening",
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vow"));
    cmd.arg("run").current_dir(data.path()).env_clear().env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    // This machine's loopback instead of the public address and directory.
    cmd.env("VOW_ADDR", format!("127.0.0.1:{port}"))
        .env("VOW_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("VOW_PLC_URL", &plc.1)
        .env("VOW_LOG_LEVEL", "warn");
    let (_vow, url) = start(cmd, "vow listening");
    let health = reqwest::get(format!("{url}/xrpc/_health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(data.path().join("vow.db").exists() && data.path().join("keys/rotation.key").exists());

    // The first-invite service's script, run twice: one code, kept.
    let first = compose.split("\n  first-invite:\n").nth(1).expect("a first-invite service");
    let script: String = first
        .split("      - |\n")
        .nth(1)
        .expect("its script")
        .lines()
        .take_while(|l| l.starts_with("        ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_vow")).parent().unwrap().to_str().unwrap().to_owned();
    let run_script = || {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(localize(&script))
            .env("PATH", format!("{bin_dir}:{}", std::env::var("PATH").unwrap()))
            .env("VOW_DB_NAME", data.path().join("vow.db"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(data.path().join("first-invite-code.txt")).unwrap()
    };
    let code = run_script();
    assert_eq!(run_script(), code, "the code is made once");
    let (status, body) = {
        let res = reqwest::Client::new()
            .post(format!("{url}/xrpc/com.atproto.server.createAccount"))
            .json(&serde_json::json!({ "handle": "first.pds.example.com", "email": "first@x.test", "password": "pw-first-user", "inviteCode": code.trim() }))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    assert_eq!(status, 200, "the first invite code signs up the first user: {body}");
}

/// `/metrics` read with the reference Python client's parser (`prometheus-client`).
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::Write;
    let python = e2e_dir().join("smtp/venv/bin/python");
    assert!(python.exists(), "scripts/test.sh installs prometheus-client in e2e/smtp/venv");
    let mut child = std::process::Command::new(python)
        .arg(e2e_dir().join("smtp/prom-parse.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused the exposition: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Scraped before, during and after a write storm, `/metrics` parses, and the request, commit,
/// signing, firehose and account figures move as the writes say they must.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_scraped_during_a_write_storm() {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let s = stack_with(false, &[("VOW_METRICS_ADDR", &metrics_addr)]);
    let user = s.account("counted").await;
    let _signer = s.signer(&user, &s.dir.path().join("counted.key"));

    // On the main address, only the admin may read them.
    let res = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = s.http.get(format!("{}/metrics", s.url)).basic_auth("admin", Some("admin-secret")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let scrape = || async {
        let text = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
        parse_metrics(&text)
    };
    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let before = scrape().await;
    assert_eq!(get(&before, "vow_accounts{status=active}"), 1.0, "{before:?}");
    assert_eq!(get(&before, "vow_signer_connections{}"), 1.0);

    // Two firehose subscribers, one following live and one replaying from the start, each
    // reading every frame: each gets a lag series of its own.
    let ws = s.url.replacen("http", "ws", 1);
    let follow = |cursor: &'static str| {
        let url = format!("{ws}/xrpc/com.atproto.sync.subscribeRepos{cursor}");
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            while let Some(Ok(_)) = socket.next().await {}
        })
    };
    let live = follow("");
    let replaying = follow("?cursor=0");
    let lags = |m: &std::collections::BTreeMap<String, f64>| -> Vec<(String, f64)> {
        m.iter()
            .filter(|(k, _)| k.starts_with("vow_firehose_subscriber_lag_events{"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let mut seen = scrape().await;
    while lags(&seen).len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        seen = scrape().await;
    }
    assert!(lags(&seen).iter().all(|(k, _)| k.contains("address=127.0.0.1")), "{:?}", lags(&seen));
    assert_eq!(get(&seen, "vow_firehose_subscribers{}"), 2.0);

    const WRITERS: usize = 4;
    const EACH: usize = 10;
    let storm: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, token, did) = (s.url.clone(), user.access.clone(), user.did.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..EACH {
                    let res = http
                        .post(format!("{url}/xrpc/com.atproto.repo.createRecord"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "repo": did, "collection": "app.bsky.feed.post",
                            "record": { "$type": "app.bsky.feed.post", "text": format!("storm {w}/{i}"), "createdAt": "2026-12-02T00:00:00Z" } }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status().as_u16(), 200);
                }
            })
        })
        .collect();
    // Mid-storm scrapes parse too.
    for _ in 0..3 {
        let during = scrape().await;
        assert!(get(&during, "vow_commits_total{}") >= get(&before, "vow_commits_total{}"));
    }
    for w in storm {
        w.await.unwrap();
    }
    let after = scrape().await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    let n = (WRITERS * EACH) as f64;
    // Writes that queue while a commit is signed share the next commit: each request is in
    // exactly one commit, and there is at most one commit per request.
    let commits = delta("vow_commits_total{}");
    assert!(commits >= 1.0 && commits <= n, "{commits} commits for {n} writes");
    assert_eq!(delta("vow_commit_batch_requests_sum{}"), n, "every request in one commit");
    assert_eq!(delta("vow_commit_batch_requests_count{}"), commits);
    assert_eq!(delta("vow_commit_batch_ops_sum{}"), n, "one op per createRecord");
    assert_eq!(delta("vow_http_requests_total{method=POST,route=/xrpc/com.atproto.repo.createRecord,status=200}"), n);
    assert_eq!(delta("vow_commit_phase_seconds_count{phase=signing}"), commits);
    assert_eq!(delta("vow_commit_phase_seconds_count{phase=storing}"), commits);
    assert!(delta("vow_signing_seconds_count{}") >= commits);
    assert!(delta("vow_firehose_head_seq{}") >= commits, "each commit is an event");
    assert!(get(&after, "vow_records{}") >= n);
    assert!(get(&after, "vow_stored_bytes{kind=blocks}") > get(&before, "vow_stored_bytes{kind=blocks}"));
    assert!(
        get(&after, "vow_http_request_duration_seconds_count{route=/xrpc/com.atproto.repo.createRecord}") >= n,
        "latency histograms by route"
    );
    assert!(delta("vow_db_pool_wait_seconds_count{}") >= commits, "every commit waits for a connection at least once");
    assert_eq!(get(&after, "vow_cache_bound_bytes{cache=sqlite_pages}"), (8 << 20) as f64, "the default budget");
    assert_eq!(get(&after, "vow_cache_bound_bytes{cache=verified_tokens}"), (3 << 20) as f64, "3/32 of 32 MiB");
    assert_eq!(get(&after, "vow_cache_bound_bytes{cache=live_sessions}"), (1 << 20) as f64, "1/32 of 32 MiB");
    assert_eq!(get(&after, "vow_cache_bound_bytes{cache=repo_blocks}"), (6 << 20) as f64);
    assert_eq!(get(&after, "vow_cache_bound_bytes{cache=firehose_pages}"), (3 << 20) as f64);
    assert!(get(&after, "vow_db_pool_wait_seconds_sum{}") >= 0.0);

    // Both subscribers catch up: every series comes down to no lag once the writes stop. One
    // leaves, and its series goes with it.
    let mut caught_up = after.clone();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while lags(&caught_up).len() != 2 || lags(&caught_up).iter().any(|(_, lag)| *lag != 0.0) {
        assert!(std::time::Instant::now() < give_up, "the subscribers never caught up: {:?}", lags(&caught_up));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        caught_up = scrape().await;
    }
    // The replay is over: the memory its frames took has been given back to the system.
    while get(&caught_up, "vow_memory_trims_total{}") < 1.0 {
        assert!(std::time::Instant::now() < give_up, "no trim after the replay: {caught_up:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        caught_up = scrape().await;
    }
    live.abort();
    let _ = live.await;
    while lags(&caught_up).len() != 1 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        caught_up = scrape().await;
    }
    replaying.abort();

    // The operator's view of storage: the admin method and `vow account storage`.
    let res = s
        .http
        .get(format!("{}/xrpc/app.vow.admin.getStorage", s.url))
        .basic_auth("admin", Some("admin-secret"))
        .send()
        .await
        .unwrap();
    let storage: serde_json::Value = res.json().await.unwrap();
    assert_eq!(storage["accounts"][0]["did"], user.did.as_str(), "{storage}");
    assert_eq!(storage["total"]["records"].as_f64(), Some(get(&after, "vow_records{}")), "{storage}");
    assert!(storage["accounts"][0]["blockBytes"].as_i64().unwrap() > 0, "{storage}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vow"))
        .args(["account", "storage", &user.did])
        .env("VOW_ADMIN_URL", &s.url)
        .env("VOW_ADMIN_PASSWORD", "admin-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&user.did) && text.contains("records"), "{text}");
}

/// Uploads `png` and makes it the avatar of `user`'s profile; returns the blob's CID.
async fn profile_with_avatar(s: &Stack, user: &Account, png: &[u8], name: &str) -> String {
    let res = s
        .http
        .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", s.url))
        .bearer_auth(&user.access)
        .header("content-type", "image/png")
        .body(png.to_vec())
        .send()
        .await
        .unwrap();
    let blob: serde_json::Value = res.json().await.unwrap();
    let (status, body) = s
        .call(
            "POST",
            "com.atproto.repo.putRecord",
            Some(&user.access),
            Some(serde_json::json!({ "repo": user.did, "collection": "app.bsky.actor.profile", "rkey": "self",
                "record": { "$type": "app.bsky.actor.profile", "displayName": name, "avatar": blob["blob"] } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    blob["blob"]["ref"]["$link"].as_str().unwrap().to_owned()
}

/// `vow backup` taken in the middle of a write storm, the server's disk lost, then `vow
/// restore` and a start on the restored files: every write acknowledged before the backup began is there with its CID, the blob
/// is served, the repo verifies against the DID's key, and the account writes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_mid_storm_restores_every_acknowledged_write() {
    let mut s = stack(false);
    let user = s.account("saved").await;
    let key_file = s.dir.path().join("saved.key");
    let signer = s.signer(&user, &key_file);
    let png: &[u8] = b"\x89PNG\r\n\x1a\nnot really an image, but bytes to keep";
    let blob_cid = profile_with_avatar(&s, &user, png, "Saved").await;

    // The storm: writers record each acknowledged write and when it was acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String, std::time::Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (url, token, did) = (s.url.clone(), user.access.clone(), user.did.clone());
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = http
                        .post(format!("{url}/xrpc/com.atproto.repo.createRecord"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "repo": did, "collection": "app.bsky.feed.post",
                            "record": { "$type": "app.bsky.feed.post", "text": format!("kept {w}/{i}"), "createdAt": "2026-12-02T00:00:00Z" } }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status().as_u16(), 200);
                    let body: serde_json::Value = res.json().await.unwrap();
                    let (uri, cid) = (body["uri"].as_str().unwrap().to_owned(), body["cid"].as_str().unwrap().to_owned());
                    acked.lock().unwrap().push((uri, cid, std::time::Instant::now()));
                    i += 1;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let backup_dir = s.dir.path().join("backup-1");
    let started = std::time::Instant::now();
    let data = s.dir.path().to_owned();
    let paths = |cmd: &mut std::process::Command| {
        cmd.env("VOW_DB_NAME", data.join("vow.db"))
            .env("VOW_ROTATION_KEY_PATH", data.join("keys/rotation.key"))
            .env("VOW_JWK_PATH", data.join("keys/jwk.json"))
            .env_remove("VOW_IPFS_NODE_URL")
            .env_remove("VOW_BLOB_DIR");
    };
    let mut backup = std::process::Command::new(env!("CARGO_BIN_EXE_vow"));
    backup.arg("backup").arg(&backup_dir);
    paths(&mut backup);
    let out = backup.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let during = acked.lock().unwrap().len();
    // The storm goes on after the snapshot: those writes may be lost by the restore.
    while acked.lock().unwrap().len() < during + 10 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let before_backup: Vec<(String, String)> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at < started)
        .map(|(u, c, _)| (u.clone(), c.clone()))
        .collect();
    assert!(before_backup.len() >= 30);

    // Restore onto the stopped server, in place, and start it again.
    drop(signer);
    s.stop_vow();
    let mut restore = std::process::Command::new(env!("CARGO_BIN_EXE_vow"));
    restore.arg("restore").arg(&backup_dir);
    paths(&mut restore);
    let out = restore.output().unwrap();
    assert!(!out.status.success(), "an existing database is not replaced without --force");
    // The disk is lost: database, blob files and keys.
    for name in ["vow.db", "vow.db-wal", "vow.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    std::fs::remove_dir_all(data.join("blobs")).unwrap();
    std::fs::remove_dir_all(data.join("keys")).unwrap();
    let out = restore.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.restart_vow(&[]);

    for (uri, cid) in &before_backup {
        let rkey = uri.rsplit('/').next().unwrap();
        let (status, body) = s
            .call(
                "GET",
                &format!("com.atproto.repo.getRecord?repo={}&collection=app.bsky.feed.post&rkey={rkey}", user.did),
                None,
                None,
            )
            .await;
        assert_eq!((status, body["cid"].as_str()), (200, Some(cid.as_str())), "{uri}: {body}");
    }
    let res = s
        .http
        .get(format!("{}/xrpc/com.atproto.sync.getBlob?did={}&cid={blob_cid}", s.url, user.did))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), png);
    run_script("verify-repo.js", &[&s.url, &user.did, "--plc", &s.plc]);
    let _signer = s.signer(&user, &key_file);
    let (status, body) = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&user.access),
            Some(serde_json::json!({ "repo": user.did, "collection": "app.bsky.feed.post",
                "record": { "$type": "app.bsky.feed.post", "text": "after the restore", "createdAt": "2026-12-02T00:00:00Z" } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Everything a server sees that must stay secret (passwords, app passwords, session tokens,
/// mailed codes, the admin password, the session secret, key files) never reaches its log,
/// even at debug level; and every log line of a request names the request's id, which the
/// response returns in `x-request-id`.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_log_and_lines_carry_the_request_id() {
    let mut s = stack(false);
    s.stop_vow();
    let log_path = s.dir.path().join("vow.log.json");
    let mail = s.dir.path().join("mail");
    let mut cmd = s.vow_command(&[
        ("VOW_LOG_LEVEL", "debug"),
        ("VOW_LOG_FORMAT", "json"),
        ("VOW_MAIL_DIR", mail.to_str().unwrap()),
    ]);
    cmd.stderr(std::fs::File::create(&log_path).unwrap());
    let (vow, url) = start(cmd, "vow listening");
    s.vow = vow;
    s.url = url;

    let password = "pw-very-secret-1234";
    let res = s
        .http
        .post(format!("{}/xrpc/com.atproto.server.createAccount", s.url))
        .json(&serde_json::json!({ "handle": "quiet.pds.test", "email": "quiet@x.test", "password": password }))
        .send()
        .await
        .unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let created: serde_json::Value = res.json().await.unwrap();
    let user = Account {
        did: created["did"].as_str().unwrap().into(),
        handle: "quiet.pds.test".into(),
        password: password.into(),
        access: created["accessJwt"].as_str().unwrap().into(),
    };
    let key_file = s.dir.path().join("quiet.key");
    let _signer = s.signer(&user, &key_file);
    let mut secrets = vec![
        password.to_owned(),
        user.access.clone(),
        created["refreshJwt"].as_str().unwrap().to_owned(),
        "admin-secret".to_owned(),
        "session-secret".to_owned(),
    ];
    let (_, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(serde_json::json!({ "identifier": user.handle, "password": password })),
        )
        .await;
    secrets.push(session["accessJwt"].as_str().unwrap().to_owned());
    let (_, refreshed) = {
        let res = s
            .http
            .post(format!("{}/xrpc/com.atproto.server.refreshSession", s.url))
            .bearer_auth(session["refreshJwt"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        (res.status(), res.json::<serde_json::Value>().await.unwrap())
    };
    secrets.push(refreshed["refreshJwt"].as_str().unwrap().to_owned());
    let (_, app) = s
        .call(
            "POST",
            "com.atproto.server.createAppPassword",
            Some(&user.access),
            Some(serde_json::json!({ "name": "bot" })),
        )
        .await;
    secrets.push(app["password"].as_str().unwrap().to_owned());
    // A write, signed through the signer, and an admin call.
    let (status, _) = s
        .call(
            "POST",
            "com.atproto.repo.createRecord",
            Some(&user.access),
            Some(serde_json::json!({ "repo": user.did, "collection": "app.bsky.feed.post",
                "record": { "$type": "app.bsky.feed.post", "text": "quiet", "createdAt": "2026-12-02T00:00:00Z" } })),
        )
        .await;
    assert_eq!(status, 200);
    let res = s
        .http
        .get(format!("{}/xrpc/com.atproto.admin.getAccountInfo?did={}", s.url, user.did))
        .basic_auth("admin", Some("admin-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (status, _) = s
        .call(
            "POST",
            "com.atproto.server.requestPasswordReset",
            None,
            Some(serde_json::json!({ "email": "quiet@x.test" })),
        )
        .await;
    assert_eq!(status, 200);
    let code = code_in(&mail_to(&mail, "quiet@x.test", 0)).unwrap();
    secrets.push(code.clone());
    let new_password = "pw-another-secret-5678";
    let (status, _) = s
        .call(
            "POST",
            "com.atproto.server.resetPassword",
            None,
            Some(serde_json::json!({ "token": code, "password": new_password })),
        )
        .await;
    assert_eq!(status, 200);
    secrets.push(new_password.to_owned());
    let (_, fresh) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(serde_json::json!({ "identifier": user.handle, "password": new_password })),
        )
        .await;
    let login = fresh["accessJwt"].as_str().unwrap().to_owned();
    secrets.push(login.clone());
    for key in [key_file.clone(), s.dir.path().join("keys/rotation.key")] {
        let bytes = std::fs::read(&key).unwrap();
        secrets.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
        use base64::Engine;
        secrets.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
        secrets.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
    }
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.dir.path().join("keys/jwk.json")).unwrap()).unwrap();
    secrets.push(jwk["d"].as_str().unwrap().to_owned());

    drop(_signer);
    s.stop_vow();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 20, "the server logged at debug level:\n{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log: {secret}");
    }
    // Every line is JSON; the account-creation line is inside its request's span.
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).expect("a JSON log line")).collect();
    let created_line =
        lines.iter().find(|l| l["fields"]["message"] == "account created").expect("the account creation is logged");
    assert_eq!(created_line["span"]["name"], "request");
    assert_eq!(created_line["span"]["id"].as_str(), Some(request_id.as_str()), "{created_line}");
    assert_eq!(created_line["span"]["path"], "/xrpc/com.atproto.server.createAccount");
}

/// `vow doctor` against a running stack (the PLC directory, a real IPFS node, an SMTP server):
/// every check passes; then with the IPFS node, the SMTP server and the PLC directory stopped
/// in turn, each failure is named with what to change.
#[tokio::test(flavor = "multi_thread")]
async fn vow_doctor_names_each_failing_dependency() {
    let ipfs_dir = tempfile::tempdir().unwrap();
    let mut node = Ipfs::start(ipfs_dir.path());
    let smtp = Smtp::start();
    let port = free_port();
    let public = format!("http://localhost:{port}");
    let mut env: Vec<(&str, String)> = smtp.env();
    env.extend([
        ("VOW_IPFS_NODE_URL", node.api.clone()),
        ("VOW_ADDR", format!("127.0.0.1:{port}")),
        ("VOW_HOSTNAME", "localhost".into()),
        ("VOW_PUBLIC_URL", public.clone()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut s = stack_with(false, &env);
    let doctor = |s: &Stack| {
        let out = s.vow_subcommand("doctor", &[]).arg("--mail-to").arg("op@x.test").output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let line = |report: &str, name: &str| {
        report.lines().find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(&format!("{name}:")))).map(str::to_owned)
    };

    let (ok, report) = doctor(&s);
    assert!(ok, "everything is up:\n{report}");
    for name in [
        "configuration",
        "database",
        "disk space",
        "DNS",
        "public URL",
        "PLC directory",
        "IPFS node",
        "IPFS blocks and pins",
        "SMTP",
        "test mail",
    ] {
        assert!(line(&report, name).is_some_and(|l| l.starts_with("ok")), "{name}:\n{report}");
    }
    assert!(report.contains("all ") && report.contains("checks passed"));
    let mails = || std::fs::read_dir(smtp.dir.path()).map(|d| d.count()).unwrap_or(0);
    // The doctor waited for the SMTP server to accept the mail; the sink writes it soon after.
    while mails() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    node.kill();
    let (ok, report) = doctor(&s);
    assert!(!ok);
    let ipfs = line(&report, "IPFS node").unwrap();
    assert!(ipfs.starts_with("FAIL"), "{report}");
    assert!(report.contains("fix: start the IPFS node, or correct VOW_IPFS_NODE_URL"), "{report}");
    assert!(line(&report, "SMTP").unwrap().starts_with("ok"), "only the IPFS node fails:\n{report}");

    drop(smtp);
    let (_, report) = doctor(&s);
    assert!(line(&report, "SMTP").unwrap().starts_with("FAIL"), "{report}");
    assert!(report.contains("fix: check VOW_SMTP_HOST"), "{report}");

    s.plc_proc = Proc::none();
    let (_, report) = doctor(&s);
    assert!(line(&report, "PLC directory").unwrap().starts_with("FAIL"), "{report}");
    assert!(report.contains("fix: check VOW_PLC_URL"), "{report}");
    assert!(line(&report, "public URL").unwrap().starts_with("ok"), "Vow itself still answers:\n{report}");
}

/// `docker stop` and `systemctl stop` send SIGTERM: Vow shuts down gracefully on it, with
/// status 0, instead of waiting to be killed.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_gracefully() {
    let mut s = stack(false);
    let _ = s.account("leaving").await;
    let pid = s.vow.pid().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = s.vow.wait();
    assert!(status.success(), "a graceful exit: {status:?}");
}

/// On an IPFS node (js-ipfs): `vow backup` taken during writes lists the CIDs the node must keep
/// pinned; with the server's disk lost and the node's pins gone, `vow restore` pins every one
/// again, and the restored server serves each write acknowledged before the backup, the blob, and
/// a repo that verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_on_ipfs_restores_the_pins() {
    let ipfs_dir = tempfile::tempdir().unwrap();
    let node = Ipfs::start(ipfs_dir.path());
    let mut s = stack_with(false, &[("VOW_IPFS_NODE_URL", &node.api)]);
    let user = s.account("pinned").await;
    let key_file = s.dir.path().join("pinned.key");
    let signer = s.signer(&user, &key_file);
    let png: &[u8] = b"\x89PNG\r\n\x1a\nbytes kept on the node";
    let blob_cid = profile_with_avatar(&s, &user, png, "Pinned").await;

    // Writes go on while the backup is taken.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String, std::time::Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, token, did) = (s.url.clone(), user.access.clone(), user.did.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = http
                    .post(format!("{url}/xrpc/com.atproto.repo.createRecord"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "repo": did, "collection": "app.bsky.feed.post",
                        "record": { "$type": "app.bsky.feed.post", "text": format!("pinned {i}"), "createdAt": "2026-12-02T00:00:00Z" } }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                let body: serde_json::Value = res.json().await.unwrap();
                let (uri, cid) = (body["uri"].as_str().unwrap().to_owned(), body["cid"].as_str().unwrap().to_owned());
                acked.lock().unwrap().push((uri, cid, std::time::Instant::now()));
                i += 1;
            }
        })
    };
    while acked.lock().unwrap().len() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let backup_dir = s.dir.path().join("backup-ipfs");
    let started = std::time::Instant::now();
    let out = s.vow_subcommand("backup", &[]).arg(&backup_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let during = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < during + 3 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let before_backup: Vec<(String, String)> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at < started)
        .map(|(u, c, _)| (u.clone(), c.clone()))
        .collect();
    assert!(before_backup.len() >= 10);

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["store"], "ipfs", "{manifest}");
    let pins: Vec<String> = std::fs::read_to_string(backup_dir.join("ipfs-pins.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(manifest["ipfs_pins"].as_u64(), Some(pins.len() as u64));
    let head = manifest["accounts"][0]["root"].as_str().unwrap().to_owned();
    assert!(pins.contains(&head), "the backup's head commit is on the list");
    for (_, cid) in &before_backup {
        assert!(pins.contains(cid), "every record acknowledged before the backup is on the list: {cid}");
    }
    assert!(pins.len() > before_backup.len() + 2, "the commit, tree nodes and blob are listed too: {}", pins.len());

    // The server's disk is lost, and the node forgets its pins.
    drop(signer);
    s.stop_vow();
    let data = s.dir.path().to_owned();
    for name in ["vow.db", "vow.db-wal", "vow.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    std::fs::remove_dir_all(data.join("keys")).unwrap();
    for cid in &pins {
        // Blocks are pinned directly, blobs recursively; blocks the writes after the backup
        // replaced are already unpinned (the node keeps them until it collects garbage).
        if !node.pinned(cid).await {
            continue;
        }
        let (mut status, mut body) = node.rpc("pin/rm", &[("arg", cid), ("recursive", "false")]).await;
        if status != 200 {
            (status, body) = node.rpc("pin/rm", &[("arg", cid), ("recursive", "true")]).await;
        }
        assert_eq!(status, 200, "unpinning {cid}: {}", String::from_utf8_lossy(&body));
        assert!(!node.pinned(cid).await);
    }
    assert!(!node.pinned(&head).await);

    let out = s.vow_subcommand("restore", &[]).arg(&backup_dir).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("{} CID(s) pinned", pins.len())), "{said}");
    for cid in &pins {
        assert!(node.pinned(cid).await, "pinned again: {cid}");
    }

    s.restart_vow(&[]);
    for (uri, cid) in &before_backup {
        let rkey = uri.rsplit('/').next().unwrap();
        let (status, body) = s
            .call(
                "GET",
                &format!("com.atproto.repo.getRecord?repo={}&collection=app.bsky.feed.post&rkey={rkey}", user.did),
                None,
                None,
            )
            .await;
        assert_eq!((status, body["cid"].as_str()), (200, Some(cid.as_str())), "{uri}: {body}");
    }
    let res = s
        .http
        .get(format!("{}/xrpc/com.atproto.sync.getBlob?did={}&cid={blob_cid}", s.url, user.did))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), png);
    run_script("verify-repo.js", &[&s.url, &user.did, "--plc", &s.plc]);
}

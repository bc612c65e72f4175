//! Integration: `vow signer` against a hostile server. The operator of a PDS has its database
//! and keys and can serve the signer socket itself; the signer must sign only what it can check
//! from the bytes. A stand-in server on loopback passes every HTTP call through to a real `vow`
//! (real SQLite, real PLC directory) but serves the signer socket itself and sends crafted
//! requests. Nothing it obtains may reach the PLC directory.

mod common;

use atproto::Cid;
use atproto::blocks::BlockMap;
use atproto::commit::{SignedCommit, UnsignedCommit};
use atproto::crypto::{Algorithm, Keypair, PublicKey};
use atproto::mst::Mst;
use atproto::syntax::{Did, Tid};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

/// The operator's server: the signer socket is its own, everything else goes to the real vow.
struct Hostile {
    url: String,
    /// The DID the requests name (the page refuses requests for another account outright).
    victim: String,
    requests: mpsc::UnboundedSender<Value>,
    replies: Mutex<mpsc::UnboundedReceiver<Value>>,
}

async fn hostile(real: String, victim: &str) -> Hostile {
    let (req_tx, req_rx) = mpsc::unbounded_channel::<Value>();
    let (rep_tx, rep_rx) = mpsc::unbounded_channel::<Value>();
    let req_rx = std::sync::Arc::new(Mutex::new(req_rx));
    let socket = move |upgrade: WebSocketUpgrade| {
        let (req_rx, rep_tx) = (req_rx.clone(), rep_tx.clone());
        async move { upgrade.on_upgrade(move |ws| serve_socket(ws, req_rx, rep_tx)) }
    };
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let pass_through = move |req: axum::extract::Request| {
        let (http, real) = (http.clone(), real.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut out = http.request(parts.method, format!("{real}{}", parts.uri));
            for (name, value) in &parts.headers {
                if !matches!(name.as_str(), "host" | "content-length" | "origin" | "referer") {
                    out = out.header(name, value.clone());
                }
            }
            let res = out.body(body).send().await.unwrap();
            let mut answer = axum::http::Response::builder().status(res.status());
            for (name, value) in res.headers() {
                if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
                    answer = answer.header(name, value.clone());
                }
            }
            answer.body(axum::body::Body::from(res.bytes().await.unwrap())).unwrap()
        }
    };
    let app = axum::Router::new()
        .route("/xrpc/com.atproto.server.signerConnect", axum::routing::get(socket.clone()))
        .route("/account/signer", axum::routing::get(socket))
        .fallback(pass_through);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hostile { url, victim: victim.to_owned(), requests: req_tx, replies: Mutex::new(rep_rx) }
}

async fn serve_socket(
    mut ws: WebSocket,
    requests: std::sync::Arc<Mutex<mpsc::UnboundedReceiver<Value>>>,
    replies: mpsc::UnboundedSender<Value>,
) {
    // The real server pings once a connection is registered; the signer waits for it.
    if ws.send(Message::Ping(b"ready".to_vec().into())).await.is_err() {
        return;
    }
    let mut requests = requests.lock().await;
    loop {
        tokio::select! {
            req = requests.recv() => {
                let Some(req) = req else { return };
                if ws.send(Message::Text(req.to_string().into())).await.is_err() {
                    return;
                }
            }
            msg = ws.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let _ = replies.send(serde_json::from_str(&text).unwrap());
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }
}

impl Hostile {
    /// Sends one sign request, labelled as an ordinary post, and returns the signer's answer.
    async fn ask(&self, payload: &[u8], commit: Option<Value>) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        let mut req = json!({
            "type": "sign_request", "requestId": id, "did": self.victim,
            "payload": URL_SAFE_NO_PAD.encode(payload),
            "ops": [{ "type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "rkey": "3kfriendly" }],
            "expiresAt": "2099-01-01T00:00:00.000Z",
        });
        if let Some(c) = commit {
            req["commit"] = c;
        }
        self.requests.send(req).unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(120), self.replies.lock().await.recv())
            .await
            .expect("the signer never answered")
            .expect("the signer answers");
        assert_eq!(reply["requestId"], id.as_str());
        reply
    }
}

fn signed(reply: &Value) -> bool {
    match reply["type"].as_str() {
        Some("sign_response") => true,
        Some("sign_reject") => false,
        _ => panic!("unexpected answer {reply}"),
    }
}

/// Starts `vow signer` against `pds` with `flags`; returns once it is connected.
fn signer_at(s: &Stack, pds: &str, a: &Account, key_file: &std::path::Path, flags: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vow"));
    cmd.args(["signer", "--pds", pds, "--identifier", &a.did, "--password", &a.password, "--plc", &s.plc])
        .arg("--key-file")
        .arg(key_file)
        .args(flags)
        .env("VOW_LOG_LEVEL", "warn");
    start_until(cmd, "signer connected").0
}

/// The repo as the real server exports it: its blocks and head commit.
async fn repo(s: &Stack, did: &str) -> (BlockMap, Cid, SignedCommit) {
    let car = s
        .http
        .get(format!("{}/xrpc/com.atproto.sync.getRepo?did={did}", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = atproto::car::CarReader::new(&car[..], Default::default()).unwrap();
    let head = reader.roots()[0];
    let mut blocks = BlockMap::new();
    while let Some((cid, bytes)) = reader.next_block().unwrap() {
        blocks.insert(cid, bytes);
    }
    let commit = SignedCommit::from_block(blocks.get(&head).unwrap()).unwrap();
    (blocks, head, commit)
}

fn record(text: &str) -> (Cid, Vec<u8>) {
    let value = json!({ "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T10:00:00.000Z" });
    let bytes = atproto::data::encode(&atproto::data::record_from_json(&value).unwrap()).unwrap();
    (atproto::cid::cbor_cid(&bytes), bytes)
}

/// A commit as the operator builds it: `apply` changes the tree however it likes, `listed`
/// are the changes the evidence admits to. The evidence carries every block the operator has.
struct Forged {
    payload: Vec<u8>,
    evidence: Value,
}

fn forge(
    did: &str,
    (blocks, head, prev): &(BlockMap, Cid, SignedCommit),
    rev: Tid,
    apply: impl FnOnce(&mut Mst, &BlockMap, &mut BlockMap),
    listed: Vec<Value>,
) -> Forged {
    let mut tree = Mst::load(blocks, prev.unsigned.data).unwrap();
    let mut new_blocks = BlockMap::new();
    apply(&mut tree, blocks, &mut new_blocks);
    let data = tree.commit();
    new_blocks.extend(data.blocks);
    let mut all = blocks.clone();
    all.extend(new_blocks);
    let unsigned = UnsignedCommit::new(Did::new(did).unwrap(), data.root, rev);
    let evidence = json!({
        "prevCommit": URL_SAFE_NO_PAD.encode(blocks.get(head).unwrap()),
        "blocks": URL_SAFE_NO_PAD.encode(atproto::car::encode(&[data.root], all.iter())),
        "ops": listed,
    });
    Forged { payload: unsigned.bytes_to_sign(), evidence }
}

fn plc_op(prev: &str, rotation: &[String], atproto: &str, handle: &str, pds: &str) -> Vec<u8> {
    let op = json!({
        "type": "plc_operation", "rotationKeys": rotation,
        "verificationMethods": { "atproto": atproto }, "alsoKnownAs": [format!("at://{handle}")],
        "services": { "atproto_pds": { "type": "AtprotoPersonalDataServer", "endpoint": pds } },
        "prev": prev,
    });
    atproto::data::encode(&atproto::data::from_json(&op).unwrap()).unwrap()
}

fn jwt(claims: Value) -> Vec<u8> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256K"}"#);
    format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string())).into_bytes()
}

async fn audit(s: &Stack, did: &str) -> Vec<Value> {
    let log: Value = s.http.get(format!("{}/{did}/log/audit", s.plc)).send().await.unwrap().json().await.unwrap();
    log.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn signers_sign_only_what_they_can_check() {
    let s = stack(false);
    let v = s.account("victim").await;
    let key_file = s.dir.path().join("victim.key");
    // The genuine server: the key is registered and the DID handed over; two real posts.
    let honest = s.signer(&v, &key_file);
    let key = Keypair::from_bytes(Algorithm::K256, &std::fs::read(&key_file).unwrap()).unwrap();
    let own = key.public_key().to_did_key();
    for text in ["first", "second"] {
        let body = json!({ "repo": v.did, "collection": "app.bsky.feed.post", "record": {
            "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T10:00:00.000Z" } });
        assert_eq!(s.call("POST", "com.atproto.repo.createRecord", Some(&v.access), Some(body)).await.0, 200);
    }
    // A handle change keeps the keys: signed without asking, through the real server.
    let res = s
        .call(
            "POST",
            "com.atproto.identity.updateHandle",
            Some(&v.access),
            Some(json!({ "handle": "renamed.pds.test" })),
        )
        .await;
    assert_eq!(res.0, 200, "{res:?}");
    drop(honest);
    wait_for_signer(&s, &v.access, false).await;

    let log_before = audit(&s, &v.did).await;
    let last_cid = log_before.last().unwrap()["cid"].as_str().unwrap().to_owned();
    let evil = Keypair::generate(Algorithm::K256).public_key().to_did_key();
    let op = |rotation: &[&str], atproto: &str, handle: &str| {
        let rotation: Vec<String> = rotation.iter().map(|k| k.to_string()).collect();
        plc_op(&last_cid, &rotation, atproto, handle, "http://pds.test")
    };
    let takeover = op(&[&evil], &evil, "renamed.pds.test");
    let new_signing_key = op(&[&own], &evil, "renamed.pds.test");
    let rename = op(&[&own], &own, "again.pds.test");

    let h = hostile(s.url.clone(), &v.did).await;
    let plan = Plan { takeover, new_signing_key, rename, own: own.clone(), log_before };

    // `vow signer`.
    battery(&s, &h, &v, &plan, |flags| Box::new(signer_at(&s, &h.url, &v, &key_file, flags))).await;

    // The account page's checks (the module the page loads), run by Node as a signer.
    let (_, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": v.did, "password": v.password })),
        )
        .await;
    let access = session["accessJwt"].as_str().unwrap().to_owned();
    battery(&s, &h, &v, &plan, |flags| {
        let mut cmd = std::process::Command::new("node");
        cmd.arg(e2e_dir().join("js-signer.mjs")).args([&h.url, &v.did, &access]).arg(&key_file).arg(&s.plc).args(flags);
        Box::new(start_until(cmd, "signer connected").0)
    })
    .await;
}

/// The PLC operations the battery sends, made against the DID's real state.
struct Plan {
    takeover: Vec<u8>,
    new_signing_key: Vec<u8>,
    rename: Vec<u8>,
    own: String,
    log_before: Vec<Value>,
}

/// The hostile requests, and the answers a signer must give; `start` starts the signer with
/// the given approval flags, connected to the hostile server.
async fn battery(s: &Stack, h: &Hostile, v: &Account, plan: &Plan, start: impl Fn(&[&str]) -> Box<dyn std::any::Any>) {
    let Plan { takeover, new_signing_key, rename, own, log_before } = plan;
    let (takeover, new_signing_key, rename) = (takeover.as_slice(), new_signing_key.as_slice(), rename.as_slice());
    let signer = start(&[]);

    // PLC operations: judged by what they change, never by the label.
    assert!(!signed(&h.ask(takeover, None).await), "a takeover labelled as a post");
    assert!(!signed(&h.ask(new_signing_key, None).await), "a new #atproto key without approval");
    assert!(signed(&h.ask(rename, None).await), "a handle change keeps the keys");
    let stale = plc_op(
        "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
        std::slice::from_ref(own),
        own,
        "x.pds.test",
        "http://pds.test",
    );
    assert!(!signed(&h.ask(&stale, None).await), "an operation that does not follow the DID's state");

    // Commits.
    let state = repo(s, &v.did).await;
    let prev_rev = state.2.unsigned.rev.clone();
    let newer = |n: u64| Tid::from_parts(prev_rev.timestamp_micros() + n, 0);
    let (x_cid, x_bytes) = record("listed");
    let x_path = "app.bsky.feed.post/3kzzzzzzzzzz2".to_owned();
    let listed_x = vec![json!({ "action": "create", "path": x_path, "cid": x_cid.to_string(), "prev": null })];
    let add_x = |tree: &mut Mst, store: &BlockMap, new: &mut BlockMap| {
        tree.insert(store, &x_path, x_cid).unwrap();
        new.insert(x_cid, x_bytes.clone());
    };

    // An honest one is signed.
    let good = forge(&v.did, &state, newer(10), add_x, listed_x.clone());
    let reply = h.ask(&good.payload, Some(good.evidence.clone())).await;
    assert!(signed(&reply), "{reply}");
    let sig = URL_SAFE_NO_PAD.decode(reply["commitSignature"].as_str().unwrap()).unwrap();
    PublicKey::from_did_key(own).unwrap().verify(&good.payload, &sig).unwrap();
    // The same revision again, or an older one, is not.
    assert!(!signed(&h.ask(&good.payload, Some(good.evidence.clone())).await), "a replayed revision");
    let old = forge(&v.did, &state, newer(5), add_x, listed_x.clone());
    assert!(!signed(&h.ask(&old.payload, Some(old.evidence)).await), "an older revision");
    let before_prev =
        forge(&v.did, &state, Tid::from_parts(prev_rev.timestamp_micros() - 1, 0), add_x, listed_x.clone());
    assert!(!signed(&h.ask(&before_prev.payload, Some(before_prev.evidence)).await), "older than the head");

    // A record slipped in beside the listed one.
    let (y_cid, y_bytes) = record("not listed");
    let sneaky = forge(
        &v.did,
        &state,
        newer(20),
        |tree, store, new| {
            add_x(tree, store, new);
            tree.insert(store, "app.bsky.feed.post/3kyyyyyyyyyy2", y_cid).unwrap();
            new.insert(y_cid, y_bytes.clone());
        },
        listed_x.clone(),
    );
    assert!(!signed(&h.ask(&sneaky.payload, Some(sneaky.evidence)).await), "an unlisted record");

    // A deletion left out of the ops.
    let existing = Mst::load(&state.0, state.2.unsigned.data).unwrap().entries(&state.0).unwrap()[0].0.clone();
    let deleting = forge(
        &v.did,
        &state,
        newer(30),
        |tree, store, new| {
            add_x(tree, store, new);
            tree.remove(store, &existing).unwrap();
        },
        listed_x.clone(),
    );
    assert!(!signed(&h.ask(&deleting.payload, Some(deleting.evidence)).await), "an unlisted deletion");

    // A commit for another DID, one without evidence, and one whose previous commit the
    // account never signed.
    let other = forge("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", &state, newer(40), add_x, listed_x.clone());
    assert!(!signed(&h.ask(&other.payload, Some(other.evidence)).await), "another account's commit");
    let bare = forge(&v.did, &state, newer(50), add_x, listed_x.clone());
    assert!(!signed(&h.ask(&bare.payload, None).await), "a commit without evidence");
    let mut fake_prev = state.2.clone();
    fake_prev.sig = Keypair::generate(Algorithm::K256).sign(&fake_prev.unsigned.bytes_to_sign()).to_vec();
    let mut fake_blocks = state.0.clone();
    let (fake_head, fake_bytes) = fake_prev.to_block_with_cid();
    fake_blocks.insert(fake_head, fake_bytes);
    let unvouched = forge(&v.did, &(fake_blocks, fake_head, fake_prev), newer(60), add_x, listed_x.clone());
    assert!(!signed(&h.ask(&unvouched.payload, Some(unvouched.evidence)).await), "an unvouched previous commit");

    // Service-auth tokens: this DID's short read token yes; another issuer, a long life or a
    // token for any method no.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let token = |iss: &str, exp: i64, lxm: Option<&str>| {
        let mut claims = json!({ "iss": iss, "aud": "did:web:api.bsky.app", "exp": exp });
        if let Some(l) = lxm {
            claims["lxm"] = json!(l);
        }
        jwt(claims)
    };
    assert!(signed(&h.ask(&token(&v.did, now + 60, Some("app.bsky.feed.getTimeline")), None).await));
    assert!(!signed(&h.ask(&token("did:plc:other", now + 60, Some("app.bsky.feed.getTimeline")), None).await));
    assert!(!signed(&h.ask(&token(&v.did, now + 365 * 86_400, Some("app.bsky.feed.getTimeline")), None).await));
    assert!(!signed(&h.ask(&token(&v.did, now + 60, None), None).await));
    assert!(!signed(&h.ask(&token(&v.did, now + 60, Some("com.atproto.server.createAccount")), None).await));

    // Garbage.
    for garbage in [&b""[..], b"\xa2\x61a\x01\x61b\x02", b"not a token", b"{}"] {
        assert!(!signed(&h.ask(garbage, None).await), "{garbage:?}");
    }
    drop(signer);

    // Told to approve identity changes, it signs a new signing key but still not one that
    // removes its own key; told that too, it signs even that.
    let signer = start(&["--approve-identity"]);
    assert!(signed(&h.ask(new_signing_key, None).await));
    assert!(!signed(&h.ask(takeover, None).await), "removing its own key needs a second flag");
    drop(signer);
    let _signer = start(&["--approve-identity", "--approve-key-removal"]);
    assert!(signed(&h.ask(takeover, None).await));

    // None of it reached the PLC directory: the hostile server never submitted anything, and
    // nothing it could submit was obtained without the flags above.
    assert_eq!(&audit(s, &v.did).await, log_before);
}

/// A recovery key given at registration ranks above the signer's key, so that it can undo,
/// within the PLC directory's recovery window, an operation the signer's key was tricked into.
#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_key_ranks_above_the_signer_key() {
    let s = stack(false);
    let a = s.account("careful").await;
    let recovery = Keypair::generate(Algorithm::K256).public_key().to_did_key();
    let key_file = s.dir.path().join("careful.key");
    let _signer = signer_at(&s, &s.url, &a, &key_file, &["--recovery-key", &recovery]);
    let key = Keypair::from_bytes(Algorithm::K256, &std::fs::read(&key_file).unwrap()).unwrap();
    let last = audit(&s, &a.did).await.last().unwrap()["operation"].clone();
    assert_eq!(last["rotationKeys"], json!([recovery, key.public_key().to_did_key()]));
    assert_eq!(last["verificationMethods"]["atproto"], json!(key.public_key().to_did_key()));
}

/// The account page in headless Chromium, driven by `e2e/browser-signer.js`.
struct Page {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Page {
    fn start(url: &str) -> Page {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut child = std::process::Command::new("node")
            .arg(e2e_dir().join("browser-signer.js"))
            .args([url, "--chromium", &chromium])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Page { child, stdin, lines }
    }

    /// The next line containing `marker`.
    fn wait_for(&self, marker: &str) -> String {
        loop {
            let line =
                self.lines.recv_timeout(std::time::Duration::from_secs(180)).expect("the page script went quiet");
            if line.contains(marker) {
                return line;
            }
        }
    }

    fn send(&mut self, command: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{command}").unwrap();
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_page_signs_only_what_it_can_check() {
    let port = free_port();
    let public = format!("http://localhost:{port}");
    let s = stack_with(
        false,
        &[("VOW_ADDR", &format!("127.0.0.1:{port}")), ("VOW_HOSTNAME", "localhost"), ("VOW_PUBLIC_URL", &public)],
    );
    let page = std::cell::RefCell::new(Page::start(&public));
    let who: Value = serde_json::from_str(&page.borrow().wait_for("signingKey")).unwrap();
    let v = Account {
        did: who["did"].as_str().unwrap().into(),
        handle: who["handle"].as_str().unwrap().into(),
        password: who["password"].as_str().unwrap().into(),
        access: String::new(),
    };
    let (_, session) = s
        .call(
            "POST",
            "com.atproto.server.createSession",
            None,
            Some(json!({ "identifier": v.did, "password": v.password })),
        )
        .await;
    let v = Account { access: session["accessJwt"].as_str().unwrap().into(), ..v };
    let own = who["signingKey"].as_str().unwrap().to_owned();

    // The page signs two posts and a rename on the genuine server.
    for text in ["first", "second"] {
        let body = json!({ "repo": v.did, "collection": "app.bsky.feed.post", "record": {
            "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T10:00:00.000Z" } });
        let res = s.call("POST", "com.atproto.repo.createRecord", Some(&v.access), Some(body)).await;
        assert_eq!(res.0, 200, "{res:?}");
    }
    let handle = v.handle.replacen('p', "q", 1);
    let res =
        s.call("POST", "com.atproto.identity.updateHandle", Some(&v.access), Some(json!({ "handle": handle }))).await;
    assert_eq!(res.0, 200, "{res:?}");

    // Then the operator takes over the port: the page, opened there, talks to a hostile socket.
    let log_before = audit(&s, &v.did).await;
    let last_cid = log_before.last().unwrap()["cid"].as_str().unwrap().to_owned();
    let evil = Keypair::generate(Algorithm::K256).public_key().to_did_key();
    let op = |rotation: &[&str], atproto: &str, handle: &str| {
        let rotation: Vec<String> = rotation.iter().map(|k| k.to_string()).collect();
        plc_op(&last_cid, &rotation, atproto, handle, &public)
    };
    let plan = Plan {
        takeover: op(&[&evil], &evil, &handle),
        new_signing_key: op(&[&own], &evil, &handle),
        rename: op(&[&own], &own, "again.localhost"),
        own: own.clone(),
        log_before,
    };
    let h = hostile(public.clone(), &v.did).await;
    let hostile_port = h.url.rsplit(':').next().unwrap().to_owned();
    page.borrow_mut().send(&format!("goto http://localhost:{hostile_port}"));
    page.borrow().wait_for("page signer connected");
    battery(&s, &h, &v, &plan, |flags| {
        let policy = match flags {
            [] => "careful",
            ["--approve-identity"] => "identity",
            _ => "all",
        };
        page.borrow_mut().send(&format!("policy {policy}"));
        page.borrow().wait_for(&format!("policy {policy}"));
        Box::new(())
    })
    .await;
}

/// A new account's first commits build on the server-signed genesis, an empty tree: the
/// signer accepts that without asking the PLC directory (which it may not even reach).
#[tokio::test(flavor = "multi_thread")]
async fn first_writes_need_no_plc_lookup() {
    let s = stack(false);
    let a = s.account("fresh").await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vow"));
    cmd.args(["signer", "--pds", &s.url, "--identifier", &a.did, "--password", &a.password])
        .args(["--plc", "http://127.0.0.1:9"])
        .arg("--key-file")
        .arg(s.dir.path().join("fresh.key"))
        .env("VOW_LOG_LEVEL", "warn");
    let _signer = start_until(cmd, "signer connected").0;
    let body = json!({ "repo": a.did, "collection": "app.bsky.feed.post", "record": {
        "$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2026-12-01T10:00:00.000Z" } });
    let res = s.call("POST", "com.atproto.repo.createRecord", Some(&a.access), Some(body)).await;
    assert_eq!(res.0, 200, "{res:?}");
}

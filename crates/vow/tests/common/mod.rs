//! Shared by the integration tests: starting the real PLC server and the real `vow` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process and waits for a stdout line containing `marker`; returns the URL in it.
pub fn start(mut cmd: Command, marker: &str) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let proc = Proc(child);
    loop {
        let line = lines.next().expect("process exited before it was ready").unwrap();
        if line.contains(marker) {
            let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (proc, url);
        }
    }
}

pub fn e2e_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

pub struct Stack {
    pub plc_proc: Proc,
    pub vow: Proc,
    pub plc: String,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn stack(require_invite: bool) -> Stack {
    stack_with(require_invite, &[])
}

pub fn stack_with(require_invite: bool, env: &[(&str, &str)]) -> Stack {
    assert!(
        e2e_dir().join("node_modules/@did-plc/server").exists(),
        "run `npm ci` in e2e/ first (scripts/test.sh does)"
    );
    let mut plc = Command::new("node");
    plc.arg(e2e_dir().join("plc-server.js")).arg("0");
    let (plc_proc, plc_url) = start(plc, "PLC listening");
    let dir = tempfile::tempdir().unwrap();
    let mut vow = Command::new(env!("CARGO_BIN_EXE_vow"));
    vow.arg("run")
        .current_dir(dir.path())
        .env("VOW_ADDR", "127.0.0.1:0")
        .env("VOW_DB_NAME", dir.path().join("vow.db"))
        .env("VOW_HOSTNAME", "pds.test")
        .env("VOW_DID", "did:web:pds.test")
        .env("VOW_PUBLIC_URL", "http://pds.test")
        .env("VOW_ROTATION_KEY_PATH", dir.path().join("keys/rotation.key"))
        .env("VOW_JWK_PATH", dir.path().join("keys/jwk.json"))
        .env("VOW_CONTACT_EMAIL", "admin@pds.test")
        .env("VOW_ADMIN_PASSWORD", "admin-secret")
        .env("VOW_SESSION_SECRET", "session-secret")
        .env("VOW_REQUIRE_INVITE", require_invite.to_string())
        .env("VOW_PLC_URL", &plc_url)
        .env("VOW_MAX_JSON_BODY", "65536")
        .env("VOW_LOG_LEVEL", "warn");
    for (k, v) in env {
        vow.env(k, v);
    }
    let (vow_proc, url) = start(vow, "vow listening");
    Stack { plc_proc, vow: vow_proc, plc: plc_url, url, http: reqwest::Client::new(), dir }
}

impl Stack {
    pub async fn call(&self, method: &str, nsid: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/xrpc/{nsid}", self.url);
        let mut req = if method == "GET" { self.http.get(url) } else { self.http.post(url) };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn invite(&self, uses: i64) -> String {
        let res = self
            .http
            .post(format!("{}/xrpc/com.atproto.server.createInviteCode", self.url))
            .basic_auth("admin", Some("admin-secret"))
            .json(&json!({ "useCount": uses }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned()
    }
}

pub fn assert_error(res: &(u16, Value), status: u16, name: &str) {
    assert_eq!(res.0, status, "{res:?}");
    assert_eq!(res.1["error"], name, "{res:?}");
    assert!(res.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{res:?}");
}

/// An account made through createAccount.
pub struct Account {
    pub did: String,
    pub handle: String,
    pub password: String,
    pub access: String,
}

impl Stack {
    pub async fn account(&self, name: &str) -> Account {
        let handle = format!("{name}.pds.test");
        let password = format!("pw-{name}-secret");
        let (status, body) = self
            .call(
                "POST",
                "com.atproto.server.createAccount",
                None,
                Some(json!({ "handle": handle, "email": format!("{name}@x.test"), "password": password })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        Account {
            did: body["did"].as_str().unwrap().to_owned(),
            handle,
            password,
            access: body["accessJwt"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts `vow signer` for the account; returns once it prints that it is connected.
    pub fn signer(&self, account: &Account, key_file: &std::path::Path) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vow"));
        cmd.arg("signer")
            .arg("--pds")
            .arg(&self.url)
            .arg("--identifier")
            .arg(&account.handle)
            .arg("--password")
            .arg(&account.password)
            .arg("--key-file")
            .arg(key_file)
            .env("VOW_LOG_LEVEL", "warn");
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn signer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let proc = Proc(child);
        loop {
            let line = lines.next().expect("signer exited before connecting").unwrap();
            if line.contains("signer connected") {
                std::thread::spawn(move || for _ in lines.by_ref() {});
                return proc;
            }
        }
    }

    /// The SQLite database of the running server (read-only checks).
    pub async fn db(&self) -> sqlx::SqlitePool {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(self.dir.path().join("vow.db")).read_only(true);
        sqlx::SqlitePool::connect_with(opts).await.unwrap()
    }
}

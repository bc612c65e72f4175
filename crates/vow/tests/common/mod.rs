//! Shared by the integration tests: starting the real PLC server and the real `vow` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub struct Proc(Option<Child>);
impl Proc {
    pub fn none() -> Proc {
        Proc(None)
    }
}
impl Proc {
    /// Waits for the process to exit on its own (after a signal the test sent).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.take().expect("process is running").wait().expect("wait")
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("process is running").id()
    }

    /// The process's resident anonymous memory (heap, stacks), in bytes (Linux): what it
    /// allocated, without the pages of its own executable, which vary with the code run.
    pub fn rss(&self) -> u64 {
        let pid = self.0.as_ref().expect("process is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon");
        kb * 1024
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a process and waits for a stdout line containing `marker`; returns that line.
pub fn start_until(mut cmd: Command, marker: &str) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let proc = Proc(Some(child));
    let mut seen = Vec::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("process exited before it was ready; its output:\n{}", seen.join("\n"));
        };
        if line.contains(marker) {
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (proc, line);
        }
        seen.push(line);
    }
}

/// Starts a process and waits for a stdout line containing `marker`; returns the URL in it.
pub fn start(cmd: Command, marker: &str) -> (Proc, String) {
    let (proc, line) = start_until(cmd, marker);
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    (proc, url)
}

/// A free loopback port, for servers whose address must be known before they start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real IPFS node (js-ipfs, offline, loopback only) with its repo in `dir`.
pub struct Ipfs {
    proc: Option<Proc>,
    pub api: String,
    pub gateway: String,
    dir: std::path::PathBuf,
    ports: (u16, u16, u16),
}

impl Ipfs {
    pub fn start(dir: &std::path::Path) -> Ipfs {
        assert!(
            e2e_dir().join("ipfs/node_modules/.bin/jsipfs").exists(),
            "run `npm ci` in e2e/ipfs first (scripts/test.sh does)"
        );
        let ports = (free_port(), free_port(), free_port());
        let mut node = Ipfs {
            proc: None,
            api: format!("http://127.0.0.1:{}", ports.0),
            gateway: format!("http://127.0.0.1:{}", ports.1),
            dir: dir.to_owned(),
            ports,
        };
        node.restart();
        node
    }

    /// Kills the node outright (SIGKILL), as a crash would. js-ipfs's repo lock is a lock
    /// directory that outlives the process (for about ten seconds, until it counts as stale), so
    /// it is removed here once the process is gone, as an operator would after a crash.
    pub fn kill(&mut self) {
        if self.proc.take().is_some() {
            let _ = std::fs::remove_dir_all(self.dir.join("repo.lock"));
        }
    }

    /// Starts the node again on the same repo and ports.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("bash");
        cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ipfs-node.sh"))
            .arg(&self.dir)
            .arg(self.ports.0.to_string())
            .arg(self.ports.1.to_string())
            .arg(self.ports.2.to_string());
        self.proc = Some(start_until(cmd, "Daemon is ready").0);
    }

    /// Calls the node's RPC API directly: (status, body).
    pub async fn rpc(&self, call: &str, query: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let res = reqwest::Client::new().post(format!("{}/api/v0/{call}", self.api)).query(query).send().await.unwrap();
        (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
    }

    /// Whether the node holds a direct or recursive pin on `cid`.
    pub async fn pinned(&self, cid: &str) -> bool {
        self.rpc("pin/ls", &[("arg", cid)]).await.0 == 200
    }
}

/// Runs one of the e2e scripts, fails the test with its output if it exits non-zero, and returns
/// the JSON summary it prints last.
pub fn run_script(script: &str, args: &[&str]) -> Value {
    run_script_on("node", script, args)
}

/// The Node 22 that `e2e/appview` installs (from npm), for scripts whose libraries need it.
pub fn node22() -> std::path::PathBuf {
    let node = e2e_dir().join("appview/node_modules/.bin/node");
    assert!(node.exists(), "run `npm ci` in e2e/appview first (scripts/test.sh does): it brings Node 22");
    node
}

/// [`run_script`] with another `node` binary.
pub fn run_script_on(node: impl AsRef<std::ffi::OsStr>, script: &str, args: &[&str]) -> Value {
    let out = Command::new(node).arg(e2e_dir().join(script)).args(args).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    println!("{stdout}");
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    let summary: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    assert_eq!(summary["ok"], true, "{script} printed no summary:\n{stdout}");
    summary
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
    require_invite: bool,
    env: Vec<(String, String)>,
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
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (vow_proc, url) = spawn_vow(dir.path(), &plc_url, require_invite, &env);
    remember_secret("admin-secret");
    remember_secret("session-secret");
    remember_key_file(&dir.path().join("keys/rotation.key"));
    remember_key_file(&dir.path().join("keys/jwk.json"));
    Stack { plc_proc, vow: vow_proc, plc: plc_url, url, http: reqwest::Client::new(), dir, require_invite, env }
}

fn spawn_vow(dir: &std::path::Path, plc_url: &str, require_invite: bool, env: &[(String, String)]) -> (Proc, String) {
    let mut cmd = vow_command("run", dir, plc_url, require_invite, env);
    log_to_run_dir(&mut cmd, "vow");
    start(cmd, "vow listening")
}

/// The `vow <sub>` command (`run`, `doctor`, …) of a stack with its data in `dir`, with `env`
/// added.
fn vow_command(
    sub: &str,
    dir: &std::path::Path,
    plc_url: &str,
    require_invite: bool,
    env: &[(String, String)],
) -> Command {
    // Benchmarks run by hand may point this at a release build.
    let bin = std::env::var("VOW_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vow").to_owned());
    let mut vow = Command::new(bin);
    vow.arg(sub)
        .current_dir(dir)
        .env("VOW_ADDR", "127.0.0.1:0")
        .env("VOW_DB_NAME", dir.join("vow.db"))
        .env("VOW_HOSTNAME", "pds.test")
        .env("VOW_DID", "did:web:pds.test")
        .env("VOW_PUBLIC_URL", "http://pds.test")
        .env("VOW_ROTATION_KEY_PATH", dir.join("keys/rotation.key"))
        .env("VOW_JWK_PATH", dir.join("keys/jwk.json"))
        .env("VOW_CONTACT_EMAIL", "admin@pds.test")
        .env("VOW_ADMIN_PASSWORD", "admin-secret")
        .env("VOW_SESSION_SECRET", "session-secret")
        .env("VOW_REQUIRE_INVITE", require_invite.to_string())
        .env("VOW_PLC_URL", plc_url)
        .env("VOW_MAX_JSON_BODY", "65536")
        // Storms and sweeps would run into the production limits; tests/operations.rs turns
        // them on with its own figures.
        .env("VOW_RATE_LIMITS", "false")
        .env("VOW_LOG_LEVEL", test_log_level());
    for (k, v) in env {
        vow.env(k, v);
    }
    vow
}

/// The log level of the servers and signers tests start: `VOW_TEST_LOG_LEVEL`, or `warn`.
fn test_log_level() -> String {
    std::env::var("VOW_TEST_LOG_LEVEL").unwrap_or_else(|_| "warn".to_owned())
}

/// With `VOW_TEST_LOG_DIR` set (scripts/test.sh sets it), a child's stderr (its log) goes to a
/// file of its own there, so the run's whole log can be searched for secrets at the end
/// (tests/log_scan.rs). Servers started by [`stack_with`] and [`Stack::restart_vow`], and
/// signers, log there; commands whose output a test reads keep their stderr.
fn log_to_run_dir(cmd: &mut Command, what: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let Ok(dir) = std::env::var("VOW_TEST_LOG_DIR") else { return };
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::path::Path::new(&dir).join(format!("{what}-{}-{n}.log", std::process::id()));
    if let Ok(file) = std::fs::File::create(path) {
        cmd.stderr(file);
    }
}

/// Notes a secret a test made or was given (a password, a token, a key), for the search of the
/// run's log (tests/log_scan.rs). Does nothing without `VOW_TEST_LOG_DIR`.
pub fn remember_secret(secret: &str) {
    use std::io::Write;
    let Ok(dir) = std::env::var("VOW_TEST_LOG_DIR") else { return };
    if secret.is_empty() || secret.contains('\n') {
        return;
    }
    let file =
        std::fs::OpenOptions::new().create(true).append(true).open(std::path::Path::new(&dir).join("secrets.txt"));
    if let Ok(mut file) = file {
        let _ = file.write_all(format!("{secret}\n").as_bytes());
    }
}

/// [`remember_secret`] for a key file: its bytes as hex and base64, and, for a JWK, its
/// private part.
pub fn remember_key_file(path: &std::path::Path) {
    use base64::Engine;
    let Ok(bytes) = std::fs::read(path) else { return };
    if let Ok(jwk) = serde_json::from_slice::<Value>(&bytes) {
        if let Some(d) = jwk["d"].as_str() {
            remember_secret(d);
        }
        return;
    }
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    if text.len() >= 32 && text.chars().all(|c| c.is_ascii_alphanumeric()) {
        remember_secret(&text); // a key stored as text (hex or multibase)
    }
    remember_secret(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    remember_secret(&base64::engine::general_purpose::STANDARD.encode(&bytes));
    remember_secret(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
}

impl Stack {
    /// `vow run` on this stack's data with `extra` settings, for a start that should fail; the
    /// running server must be stopped first.
    pub fn vow_command(&self, extra: &[(&str, &str)]) -> Command {
        self.vow_subcommand("run", extra)
    }

    /// Another `vow` command with the server's settings (`doctor`, …).
    pub fn vow_subcommand(&self, sub: &str, extra: &[(&str, &str)]) -> Command {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        vow_command(sub, self.dir.path(), &self.plc, self.require_invite, &env)
    }

    /// Stops the server (until [`Stack::restart_vow`]).
    pub fn stop_vow(&mut self) {
        let _ = std::mem::replace(&mut self.vow, Proc::none());
    }
}

impl Stack {
    /// Stops the server and starts it again on the same data, with `extra` settings added.
    pub fn restart_vow(&mut self, extra: &[(&str, &str)]) {
        // The old process must be gone before the new one opens the database.
        let _ = std::mem::replace(&mut self.vow, Proc::none());
        self.env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (vow, url) = spawn_vow(self.dir.path(), &self.plc, self.require_invite, &self.env);
        self.vow = vow;
        self.url = url;
    }
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

    /// The value of an unlabelled metric in `/metrics` (read with the admin's credentials), 0
    /// when it is not there yet.
    pub async fn metric(&self, name: &str) -> f64 {
        let res = self.http.get(format!("{}/metrics", self.url)).basic_auth("admin", Some("admin-secret")).send();
        let text = res.await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
    }

    /// A procedure called with the operator's credentials.
    pub async fn admin(&self, nsid: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/xrpc/{nsid}", self.url);
        let res = self.http.post(url).basic_auth("admin", Some("admin-secret")).json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn invite(&self, uses: i64) -> String {
        let res = self.admin("com.atproto.server.createInviteCode", json!({ "useCount": uses })).await;
        assert_eq!(res.0, 200, "{res:?}");
        res.1["code"].as_str().unwrap().to_owned()
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
        remember_secret(&password);
        remember_secret(body["accessJwt"].as_str().unwrap_or_default());
        remember_secret(body["refreshJwt"].as_str().unwrap_or_default());
        Account {
            did: body["did"].as_str().unwrap().to_owned(),
            handle,
            password,
            access: body["accessJwt"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts `vow signer` for the account; returns once it prints that it is connected.
    pub fn signer(&self, account: &Account, key_file: &std::path::Path) -> Proc {
        self.signer_with(account, key_file, &[])
    }

    /// [`Stack::signer`] with extra flags (`--approve-identity`, …).
    pub fn signer_with(&self, account: &Account, key_file: &std::path::Path, flags: &[&str]) -> Proc {
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
            .arg("--plc")
            .arg(&self.plc)
            .args(flags)
            .env("VOW_LOG_LEVEL", test_log_level());
        cmd.stdout(Stdio::piped());
        log_to_run_dir(&mut cmd, "signer");
        let mut child = cmd.spawn().expect("spawn signer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let proc = Proc(Some(child));
        loop {
            let line = lines.next().expect("signer exited before connecting").unwrap();
            if line.contains("signer connected") {
                remember_key_file(key_file);
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

/// Waits until the server has (or no longer has) a signer registered for the account: it
/// registers a socket just after the upgrade response and notices a dropped one a little later.
pub async fn wait_for_signer(s: &Stack, access: &str, connected: bool) {
    for _ in 0..1200 {
        let (_, status) = s.call("GET", "app.vow.signer.getStatus", Some(access), None).await;
        if status["signerConnected"] == connected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("signer never became connected={connected}");
}

/// A DNS server on loopback that answers TXT queries from a table the test fills (NXDOMAIN for
/// names it does not hold), for the handle checks that ask DNS (`VOW_DNS_SERVER`).
pub struct Dns {
    pub addr: std::net::SocketAddr,
    records: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
}

impl Dns {
    pub fn start() -> Dns {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let records = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let table = records.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = dns_answer(&buf[..n], &table.lock().unwrap()) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Dns { addr, records }
    }

    /// Sets the TXT strings of `name` (no trailing dot).
    pub fn txt(&self, name: &str, values: &[&str]) {
        self.records.lock().unwrap().insert(name.to_ascii_lowercase(), values.iter().map(|v| v.to_string()).collect());
    }

    /// Points `name` (no trailing dot) at an IPv4 address with an A record.
    pub fn a(&self, name: &str, ip: std::net::Ipv4Addr) {
        self.records.lock().unwrap().insert(name.to_ascii_lowercase(), vec![format!("{A_PREFIX}{ip}")]);
    }
}

/// How an A record is kept among the TXT strings of the table.
const A_PREFIX: &str = "\u{0}A:";

fn dns_answer(query: &[u8], table: &std::collections::HashMap<String, Vec<String>>) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let found = table.get(&labels.join("."));
    let is_a = |v: &String| v.starts_with(A_PREFIX);
    let answers: Vec<&String> = match found {
        Some(v) if qtype == 16 => v.iter().filter(|t| !is_a(t)).collect(),
        Some(v) if qtype == 1 => v.iter().filter(|t| is_a(t)).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(query.get(0..2)?);
    let rcode = if found.is_some() { 0 } else { 3 };
    out.extend((0x8180u16 | rcode).to_be_bytes());
    out.extend(1u16.to_be_bytes());
    out.extend((answers.len() as u16).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    for txt in answers {
        if let Some(ip) = txt.strip_prefix(A_PREFIX) {
            let ip: std::net::Ipv4Addr = ip.parse().ok()?;
            out.extend([0xc0, 0x0c]);
            out.extend(1u16.to_be_bytes());
            out.extend(1u16.to_be_bytes());
            out.extend(0u32.to_be_bytes());
            out.extend(4u16.to_be_bytes());
            out.extend(ip.octets());
            continue;
        }
        out.extend([0xc0, 0x0c]);
        out.extend(16u16.to_be_bytes());
        out.extend(1u16.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend((txt.len() as u16 + 1).to_be_bytes());
        out.push(txt.len() as u8);
        out.extend(txt.as_bytes());
    }
    Some(out)
}

/// The first `XXXXX-XXXXX` code (the shape Vow's mailed codes have) in a mail's text.
pub fn code_in(text: &str) -> Option<String> {
    let ok = |c: u8| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c);
    let b = text.as_bytes();
    (0..b.len().saturating_sub(10)).find_map(|i| {
        let w = &b[i..i + 11];
        let edge = |j: usize| b.get(j).is_none_or(|c| !c.is_ascii_alphanumeric());
        (w[..5].iter().all(|&c| ok(c))
            && w[5] == b'-'
            && w[6..].iter().all(|&c| ok(c))
            && edge(i + 11)
            && (i == 0 || edge(i - 1)))
        .then(|| String::from_utf8_lossy(w).into_owned())
    })
}

/// The newest mail to `to` among the `.eml` files in `dir` (a `VOW_MAIL_DIR`, or the SMTP
/// sink's), waiting for one to arrive after `after` mails to that address.
pub fn mail_to(dir: &std::path::Path, to: &str, after: usize) -> String {
    for _ in 0..600 {
        let mut mails: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
            .filter(|(_, t)| {
                t.lines().any(|l| l.eq_ignore_ascii_case(&format!("to: {to}")) || l == format!("X-Envelope-To: {to}"))
            })
            .collect();
        mails.sort();
        if mails.len() > after {
            return mails.pop().unwrap().1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no mail to {to} arrived in {}", dir.display());
}

/// How many mails to `to` are in `dir` now.
pub fn mails_to(dir: &std::path::Path, to: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|t| {
                    t.lines()
                        .any(|l| l.eq_ignore_ascii_case(&format!("to: {to}")) || l == format!("X-Envelope-To: {to}"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// A real SMTP server on loopback (aiosmtpd, installed in `e2e/smtp/venv` by scripts/test.sh);
/// every message lands as a file in `dir`.
pub struct Smtp {
    _proc: Proc,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start() -> Smtp {
        let python = e2e_dir().join("smtp/venv/bin/python");
        assert!(python.exists(), "run scripts/test.sh first: it installs aiosmtpd into e2e/smtp/venv");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(python);
        cmd.arg(e2e_dir().join("smtp/smtp-sink.py")).arg(dir.path()).arg(port.to_string());
        let (proc, _) = start_until(cmd, "SMTP listening");
        Smtp { _proc: proc, port, dir }
    }

    /// The settings that send Vow's mail here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VOW_SMTP_HOST", "127.0.0.1".into()),
            ("VOW_SMTP_PORT", self.port.to_string()),
            ("VOW_SMTP_TLS", "none".into()),
            ("VOW_SMTP_EMAIL", "noreply@pds.test".into()),
        ]
    }
}

//! The Bluesky app's calls through Vow against the real Bluesky AppView (`@atproto/bsky` on
//! Node 22, with its own PostgreSQL cluster on loopback), indexing Vow's firehose and verifying
//! the service tokens Vow attaches, which the users' signers sign. The client side is
//! `@atproto/api`'s AtpAgent (`e2e/appview-flow.js`); a feed generator of our own
//! (`e2e/appview/feedgen.mjs`) verifies getFeed's tokens with `@atproto/xrpc-server`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// A private PostgreSQL cluster on a loopback port, stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    // initdb refuses to run as root; the cluster then belongs to the postgres user.
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        cmd
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::env::var_os("PG_BIN").map(PathBuf::from).unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into());
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL is not installed at {} (scripts/test.sh installs it)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres"]).arg(dir.path());
            run(chown, "chown");
        }
        let data = dir.path().join("data");
        let mut init = as_postgres(&bin, "initdb");
        init.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres"]);
        run(init, "initdb");
        let port = free_port();
        let mut start = as_postgres(&bin, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("pg.log"))
            .arg("-w")
            .arg("-o")
            .arg(format!("-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off", dir.path().display()));
        start.arg("start");
        run(start, "pg_ctl start");
        let mut create = as_postgres(&bin, "psql");
        create.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-qc", "create database appview"]);
        run(create, "create database");
        Postgres { dir, bin, port }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/appview", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = as_postgres(&self.bin, "pg_ctl");
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "stop"]);
        let _ = stop.output();
    }
}

/// The AppView on `port`, indexing the firehose at `pds_ws`.
fn appview(port: u16, plc: &str, pds_ws: &str, db: &str) -> Proc {
    // @atproto/identity fetches by hostname only: an IP literal is an invalid host to it.
    let plc = plc.replace("127.0.0.1", "localhost");
    let mut cmd = Command::new(node22());
    cmd.arg(e2e_dir().join("appview/appview.mjs"))
        .env("PORT", port.to_string())
        .env("PLC_URL", &plc)
        .env("PDS_WS", pds_ws)
        .env("DB_URL", db)
        .env("LOG_ENABLED", std::env::var("APPVIEW_LOG").unwrap_or_else(|_| "false".into()));
    start_until(cmd, "appview up").0
}

fn flow(phase: &str, cfg: &Value) -> Value {
    run_script("appview-flow.js", &[phase, &cfg.to_string()])
}

/// Waits until the account's signer has signed every stored read token.
async fn wait_for_read_tokens(s: &Stack, access: &str) {
    for _ in 0..1200 {
        let (_, status) = s.call("GET", "app.vow.signer.getStatus", Some(access), None).await;
        let tokens = &status["readTokens"];
        if tokens["stored"].as_u64().is_some_and(|n| n > 0 && Some(n) == tokens["methods"].as_u64()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the read tokens were never all signed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bluesky_app_works_through_vow_with_tokens_from_the_users_signer() {
    let pg = Postgres::start();
    let av_port = free_port();
    let appview_did = format!("did:web:localhost%3A{av_port}");
    let appview_url = format!("http://localhost:{av_port}");
    let s = stack_with(
        false,
        &[
            ("VOW_BSKY_APP_VIEW_URL", &appview_url),
            ("VOW_BSKY_APP_VIEW_DID", &appview_did),
            ("VOW_PROXY_ALLOW_PRIVATE", "true"),
        ],
    );
    let pds_ws = s.url.replace("http://", "ws://");
    let mut av = appview(av_port, &s.plc, &pds_ws, &pg.url());
    let fg_port = free_port();
    let mut fg = Command::new(node22());
    fg.arg(e2e_dir().join("appview/feedgen.mjs"))
        .env("PORT", fg_port.to_string())
        .env("PLC_URL", s.plc.replace("127.0.0.1", "localhost"));
    let (_feedgen, _) = start_until(fg, "feedgen up");

    let (alice, bob, carol) = (s.account("alice").await, s.account("bob").await, s.account("carol").await);
    let keys = tempfile::tempdir().unwrap();
    let alice_signer = s.signer(&alice, &keys.path().join("alice.key"));
    let _bob_signer = s.signer(&bob, &keys.path().join("bob.key"));
    wait_for_read_tokens(&s, &alice.access).await;

    let who = |a: &Account| json!({ "handle": a.handle, "password": a.password, "did": a.did });
    let mut cfg = json!({
        "vow": s.url, "appview": appview_url, "appviewDid": appview_did,
        "feedgen": format!("http://localhost:{fg_port}"), "feedgenDid": format!("did:web:localhost%3A{fg_port}"),
        "alice": who(&alice), "bob": who(&bob), "carol": who(&carol),
    });
    let live = flow("live", &cfg);
    for field in ["bobPost", "own", "feedUri"] {
        cfg[field] = live[field].clone();
    }

    // Alice closes her signer: reading goes on with the stored tokens.
    drop(alice_signer);
    wait_for_signer(&s, &alice.access, false).await;
    let offline = flow("offline", &cfg);
    assert!(offline["muted"].as_str().unwrap().contains("signer"), "{offline}");

    // The AppView stops indexing (its firehose now points nowhere): what alice writes next
    // reaches her only through Vow's read-after-write.
    drop(std::mem::replace(&mut av, Proc::none()));
    let nowhere = format!("ws://127.0.0.1:{}", free_port());
    av = appview(av_port, &s.plc, &nowhere, &pg.url());
    let _alice_signer = s.signer(&alice, &keys.path().join("alice.key"));
    flow("raw", &cfg);
    drop(av);
}

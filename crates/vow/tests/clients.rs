//! Integration: real ATProto client libraries (`@atproto/api` from e2e/) against the real `vow`
//! binary and the real PLC server.

mod common;

use std::process::Command;

use common::*;

/// Runs one of the e2e scripts and fails the test with its output if it exits non-zero.
fn run_script(script: &str, args: &[&str]) {
    let out = Command::new("node").arg(e2e_dir().join(script)).args(args).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{script} printed no summary:\n{stdout}");
    println!("{stdout}");
}

#[tokio::test]
async fn atproto_api_signs_up_and_logs_in() {
    let s = stack(true);
    let code = s.invite(1).await;
    run_script("account-flow.js", &[&s.url, "--plc", &s.plc, "--invite", &code, "--public-url", "http://pds.test"]);
}

/// A free loopback port, for servers whose public URL must be known before they start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn browser_registers_a_passkey_and_signs_for_atproto_api() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} missing: scripts/test.sh installs it");
    // WebAuthn needs a secure context: http://localhost is one, and the RP ID is `localhost`.
    let port = free_port();
    let public = format!("http://localhost:{port}");
    let s = stack_with(
        false,
        &[("VOW_ADDR", &format!("127.0.0.1:{port}")), ("VOW_HOSTNAME", "localhost"), ("VOW_PUBLIC_URL", &public)],
    );
    run_script("browser-flow.js", &[&public, "--plc", &s.plc, "--chromium", &chromium]);
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_side_verification_of_exports_and_proofs() {
    let s = stack(false);
    let frank = s.account("frank").await;
    let _signer = s.signer(&frank, &s.dir.path().join("frank.key"));
    for i in 0..25 {
        let (status, body) = s
            .call(
                "POST",
                "com.atproto.repo.createRecord",
                Some(&frank.access),
                Some(serde_json::json!({ "repo": frank.did, "collection": "app.bsky.feed.post", "record": {
                    "$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": "2026-11-24T10:00:00.000Z" } })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    run_script("verify-repo.js", &[&s.url, &frank.did, "--plc", &s.plc]);
}

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
}

#[tokio::test]
async fn atproto_api_signs_up_and_logs_in() {
    let s = stack(true);
    let code = s.invite(1).await;
    run_script("account-flow.js", &[&s.url, "--plc", &s.plc, "--invite", &code, "--public-url", "http://pds.test"]);
}

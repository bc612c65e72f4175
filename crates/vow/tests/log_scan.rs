//! Secrets never reach the log, checked over a whole test run: scripts/test.sh points
//! `VOW_TEST_LOG_DIR` at a directory, every server and signer the tests start logs there (at
//! `VOW_TEST_LOG_LEVEL`), the harness notes there every secret it makes or is given (passwords,
//! tokens, key files), and once all tests have run, `cargo test --test log_scan -- --ignored`
//! searches every log for them and for anything shaped like a token, an app password or a
//! mailed code.

use std::path::Path;

/// What a log must never hold, beyond the secrets the harness noted.
fn shaped_like_a_secret(line: &str) -> Option<&'static str> {
    let b = line.as_bytes();
    let base64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let base32 = |c: u8| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c);
    let code = |c: u8| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c);
    let edge = |i: usize| i == 0 || !b[i - 1].is_ascii_alphanumeric();
    let edge_after = |j: usize| b.get(j).is_none_or(|c| !c.is_ascii_alphanumeric());
    for i in 0..b.len() {
        // A JWT: `eyJ…` (a JSON header in base64url), a dot, more base64url, a dot.
        if b[i..].starts_with(b"eyJ") {
            let header = b[i..].iter().take_while(|&&c| base64url(c)).count();
            let rest = &b[i + header..];
            if header >= 10 && rest.first() == Some(&b'.') {
                let payload = rest[1..].iter().take_while(|&&c| base64url(c)).count();
                if payload >= 10 && rest.get(1 + payload) == Some(&b'.') {
                    return Some("a JWT");
                }
            }
        }
        // An app password: xxxx-xxxx-xxxx-xxxx in lowercase base32.
        if edge(i) && i + 19 <= b.len() {
            let w = &b[i..i + 19];
            if (0..19).all(|j| if j % 5 == 4 { w[j] == b'-' } else { base32(w[j]) }) && edge_after(i + 19) {
                return Some("an app password");
            }
        }
        // A mailed code: XXXXX-XXXXX.
        if edge(i) && i + 11 <= b.len() {
            let w = &b[i..i + 11];
            if (0..11).all(|j| if j == 5 { w[j] == b'-' } else { code(w[j]) }) && edge_after(i + 11) {
                return Some("a mailed code");
            }
        }
    }
    None
}

/// Every finding in the logs under `dir`: (file, line number, what was found).
fn scan(dir: &Path) -> (usize, Vec<(String, usize, String)>) {
    let secrets: Vec<String> = std::fs::read_to_string(dir.join("secrets.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|s| s.len() >= 8)
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut logs = 0;
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        logs += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = shaped_like_a_secret(line) {
                found.push((name.clone(), n + 1, format!("{what}: {line}")));
            }
            if let Some(secret) = secrets.iter().find(|s| line.contains(s.as_str())) {
                found.push((name.clone(), n + 1, format!("the secret {secret:?}: {line}")));
            }
        }
    }
    (logs, found)
}

/// Run by scripts/test.sh after every other test, on the logs they left.
#[test]
#[ignore = "run by scripts/test.sh once the other tests have run"]
fn the_whole_runs_log_holds_no_secret() {
    let dir = std::env::var("VOW_TEST_LOG_DIR").expect("VOW_TEST_LOG_DIR names the run's log directory");
    let dir = Path::new(&dir);
    let (logs, found) = scan(dir);
    let secrets = std::fs::read_to_string(dir.join("secrets.txt")).unwrap_or_default().lines().count();
    let lines: usize = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).map(|t| t.lines().count()).unwrap_or(0))
        .sum();
    eprintln!("searched {logs} logs ({lines} lines) for {secrets} noted secrets and secret-shaped strings");
    assert!(logs > 50 && secrets > 50, "the run left too little to search: {logs} logs, {secrets} secrets");
    assert!(
        found.is_empty(),
        "secrets in the log:\n{}",
        found.iter().map(|(f, n, w)| format!("{f}:{n}: {w}")).collect::<Vec<_>>().join("\n")
    );
}

/// The search itself finds each kind of secret, and passes ordinary log lines.
#[test]
fn the_search_finds_what_it_looks_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets.txt"), "pw-somebody-secret\nshort\n").unwrap();
    let lines = [
        "INFO vow: request answered status=200 did=did:plc:64hrsmy6ohtwhmemahik36ap",
        "WARN vow: account deleted blocks=2 cid=bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
        "DEBUG token=eyJhbGciOiJFUzI1NksifQ.eyJzdWIiOiJkaWQ6cGxjOng.c2lnbmF0dXJl",
        "INFO app password made: abcd-efgh-2345-ijkl",
        "INFO mailed AB2CD-EF3GH to somebody",
        "INFO login with pw-somebody-secret",
        "INFO the word short is fine",
    ];
    std::fs::write(dir.path().join("vow-1-0.log"), lines.join("\n")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "eyJhbGciOiJFUzI1NksifQ.eyJzdWIiOiJkaWQ6cGxjOng.c2ln").unwrap();
    let (logs, found) = scan(dir.path());
    assert_eq!(logs, 1, "only .log files are searched");
    let at: Vec<usize> = found.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(at, [3, 4, 5, 6], "{found:?}");
}

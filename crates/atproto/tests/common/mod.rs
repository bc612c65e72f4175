//! Helpers shared by the interop tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a file under `tests/interop/` (the atproto interop vectors, CC0).
pub fn interop(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(path)
}

pub fn read_json(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(interop(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The test lines of a syntax fixture: comments and blank lines dropped, nothing trimmed.
pub fn lines(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(interop(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split('\n').filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// A small deterministic generator (xorshift), so failures reproduce.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

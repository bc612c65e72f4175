use super::{all_bytes, string_type};

string_type!(
    /// A decentralized identifier, e.g. `did:plc:ewvi7nxzyoun6zhxrhs64oiz`.
    Did, "DID", check_did
);

impl Did {
    /// The method name, e.g. `plc` or `web`.
    pub fn method(&self) -> &str {
        self.0[4..].split(':').next().unwrap_or("")
    }
}

fn check_did(s: &str) -> Result<(), String> {
    if s.len() > 2048 {
        return Err("longer than 2048 characters".into());
    }
    let rest = s.strip_prefix("did:").ok_or("must start with 'did:'")?;
    let (method, id) = rest.split_once(':').ok_or("missing method-specific identifier")?;
    if method.is_empty() || !all_bytes(method, |b| b.is_ascii_lowercase()) {
        return Err("method must be lowercase letters".into());
    }
    if id.is_empty() {
        return Err("empty method-specific identifier".into());
    }
    if !all_bytes(id, |b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b)) {
        return Err("disallowed character in identifier".into());
    }
    if id.ends_with(':') || id.ends_with('%') {
        return Err("identifier cannot end with ':' or '%'".into());
    }
    Ok(())
}

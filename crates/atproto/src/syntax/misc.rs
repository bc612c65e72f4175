use super::{Did, Handle, SyntaxError, all_bytes, string_type};

string_type!(
    /// A record key: 1-512 characters of `[A-Za-z0-9._:~-]`, not `.` or `..`.
    RecordKey, "record key", check_record_key
);

fn check_record_key(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 512 {
        return Err("must be 1 to 512 characters".into());
    }
    if s == "." || s == ".." {
        return Err("cannot be '.' or '..'".into());
    }
    if !all_bytes(s, |b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b)) {
        return Err("disallowed character".into());
    }
    Ok(())
}

string_type!(
    /// The string form of a CID, as accepted by the lexicon `cid` format. This is a syntax
    /// check only; use [`crate::Cid`] to decode one.
    CidString, "CID", check_cid_string
);

fn check_cid_string(s: &str) -> Result<(), String> {
    if s.len() < 8 || s.len() > 256 {
        return Err("must be 8 to 256 characters".into());
    }
    if !all_bytes(s, |b| b.is_ascii_alphanumeric() || b == b'+' || b == b'=') {
        return Err("disallowed character".into());
    }
    if s.starts_with("Qm") {
        return Err("CIDv0 is not allowed".into());
    }
    Ok(())
}

string_type!(
    /// A generic URI as accepted by the lexicon `uri` format.
    Uri, "URI", check_uri
);

fn check_uri(s: &str) -> Result<(), String> {
    if s.len() > 8192 {
        return Err("longer than 8192 characters".into());
    }
    let (scheme, rest) = s.split_once(':').ok_or("missing scheme")?;
    let sb = scheme.as_bytes();
    if sb.is_empty() || sb.len() > 81 || !sb[0].is_ascii_alphabetic() {
        return Err("scheme must start with a letter".into());
    }
    if !all_bytes(scheme, |b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) {
        return Err("disallowed character in scheme".into());
    }
    if rest.is_empty() || !all_bytes(rest, |b| (b'!'..=b'~').contains(&b)) {
        return Err("empty or contains whitespace or non-ASCII".into());
    }
    Ok(())
}

/// Either a DID or a handle, as accepted in `repo` and `actor` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AtIdentifier {
    Did(Did),
    Handle(Handle),
}

impl AtIdentifier {
    /// Parses a DID (if it starts with `did:`) or a handle.
    pub fn new(s: &str) -> Result<Self, SyntaxError> {
        if s.starts_with("did:") {
            Did::new(s).map(Self::Did)
        } else {
            Handle::new(s).map(Self::Handle).map_err(|e| SyntaxError::new("at-identifier", e.reason))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Did(d) => d.as_str(),
            Self::Handle(h) => h.as_str(),
        }
    }
}

impl std::str::FromStr for AtIdentifier {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, SyntaxError> {
        Self::new(s)
    }
}

impl std::fmt::Display for AtIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

use super::{all_bytes, string_type};

string_type!(
    /// A domain-name handle, e.g. `alice.bsky.social`. Compare handles with
    /// [`Handle::normalized`]: they are case-insensitive.
    Handle, "handle", check_handle
);

impl Handle {
    /// The lowercase form used for storage and comparison.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// Checks one DNS label: 1-63 of `[a-zA-Z0-9-]`, no hyphen at either end.
pub(crate) fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 63 {
        return Err(format!("label '{label}' must be 1 to 63 characters"));
    }
    if !all_bytes(label, |b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("label '{label}' has a disallowed character"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label '{label}' starts or ends with a hyphen"));
    }
    Ok(())
}

fn check_handle(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels".into());
    }
    for label in &labels {
        check_label(label)?;
    }
    let tld = labels[labels.len() - 1];
    if !tld.as_bytes()[0].is_ascii_alphabetic() {
        return Err("top-level domain must start with a letter".into());
    }
    Ok(())
}

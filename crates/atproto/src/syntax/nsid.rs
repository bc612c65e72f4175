use super::handle::check_label;
use super::{all_bytes, string_type};

string_type!(
    /// A namespaced identifier, e.g. `app.bsky.feed.post`.
    Nsid, "NSID", check_nsid
);

impl Nsid {
    /// The final segment, e.g. `post`.
    pub fn name(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or("")
    }

    /// The reversed-domain authority, e.g. `app.bsky.feed`.
    pub fn authority(&self) -> &str {
        self.0.rsplit_once('.').map(|(a, _)| a).unwrap_or("")
    }
}

fn check_nsid(s: &str) -> Result<(), String> {
    if s.len() > 317 {
        return Err("longer than 317 characters".into());
    }
    let segments: Vec<&str> = s.split('.').collect();
    if segments.len() < 3 {
        return Err("needs at least three segments".into());
    }
    let (name, authority) = segments.split_last().expect("three segments");
    for label in authority {
        check_label(label)?;
    }
    if !authority[0].as_bytes()[0].is_ascii_alphabetic() {
        return Err("first segment must start with a letter".into());
    }
    if name.is_empty() || name.len() > 63 {
        return Err("name must be 1 to 63 characters".into());
    }
    if !name.as_bytes()[0].is_ascii_alphabetic() || !all_bytes(name, |b| b.is_ascii_alphanumeric()) {
        return Err("name must be letters and digits, starting with a letter".into());
    }
    Ok(())
}

use super::{AtIdentifier, Nsid, RecordKey, SyntaxError};

/// An `at://` URI in the restricted form records use:
/// `at://AUTHORITY[/COLLECTION[/RKEY]]`, with no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AtUri {
    raw: String,
    authority: AtIdentifier,
    collection: Option<Nsid>,
    rkey: Option<RecordKey>,
}

impl AtUri {
    /// Parses and validates an AT-URI.
    pub fn new(s: &str) -> Result<Self, SyntaxError> {
        let err = |r: &str| SyntaxError::new("AT-URI", r);
        if s.len() > 8192 {
            return Err(err("longer than 8192 characters"));
        }
        let rest = s.strip_prefix("at://").ok_or_else(|| err("must start with 'at://'"))?;
        if rest.contains('#') || rest.contains('?') {
            return Err(err("query and fragment are not allowed"));
        }
        let mut parts = rest.split('/');
        let authority =
            AtIdentifier::new(parts.next().unwrap_or("")).map_err(|e| err(&format!("authority: {}", e.reason)))?;
        let collection = match parts.next() {
            None => None,
            Some(c) => Some(Nsid::new(c).map_err(|e| err(&format!("collection: {}", e.reason)))?),
        };
        let rkey = match parts.next() {
            None => None,
            Some(r) => Some(RecordKey::new(r).map_err(|e| err(&format!("record key: {}", e.reason)))?),
        };
        if parts.next().is_some() {
            return Err(err("too many path segments"));
        }
        Ok(Self { raw: s.to_owned(), authority, collection, rkey })
    }

    /// Builds the URI of a record.
    pub fn for_record(authority: &super::Did, collection: &Nsid, rkey: &RecordKey) -> Self {
        Self {
            raw: format!("at://{authority}/{collection}/{rkey}"),
            authority: AtIdentifier::Did(authority.clone()),
            collection: Some(collection.clone()),
            rkey: Some(rkey.clone()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
    pub fn authority(&self) -> &AtIdentifier {
        &self.authority
    }
    pub fn collection(&self) -> Option<&Nsid> {
        self.collection.as_ref()
    }
    pub fn rkey(&self) -> Option<&RecordKey> {
        self.rkey.as_ref()
    }
}

impl std::str::FromStr for AtUri {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, SyntaxError> {
        Self::new(s)
    }
}

impl std::fmt::Display for AtUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

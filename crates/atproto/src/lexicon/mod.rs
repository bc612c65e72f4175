//! Lexicon schemas and record validation.
//!
//! A [`Catalog`] holds lexicon documents (the bundled `com.atproto.*` and `app.bsky.*` ones via
//! [`Catalog::bundled`], plus any added) and validates record values against them.

mod schema;
mod validate;

use std::collections::HashMap;
use std::sync::OnceLock;

pub use schema::*;
pub use validate::ValidationError;

use crate::syntax::Nsid;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_lexicons.rs"));
}

/// Why a lexicon document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lexicon{}: {reason}", id.as_ref().map(|i| format!(" {i}")).unwrap_or_default())]
pub struct LexiconError {
    pub id: Option<String>,
    pub reason: String,
}

/// A set of lexicon documents by NSID.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    docs: HashMap<String, Entry>,
}

/// One document of a catalog. A bundled one is kept as its text until it is first needed: most
/// of the 259 bundled documents are never used by a running server, and parsed they would hold
/// about 2 MB.
#[derive(Debug, Clone)]
struct Entry {
    /// Whether `main` is a query, known without parsing.
    query: bool,
    /// The JSON text of a bundled document, parsed on first use.
    text: Option<&'static str>,
    /// The parsed document; `None` if the bundled text did not parse (a unit test keeps every
    /// bundled document parsing, so a running server never sees that).
    doc: OnceLock<Option<LexiconDoc>>,
}

impl Entry {
    fn doc(&self) -> Option<&LexiconDoc> {
        self.doc
            .get_or_init(|| {
                let text = self.text?;
                serde_json::from_str(text).ok().and_then(|json| parse_doc(&json).ok())
            })
            .as_ref()
    }
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `com.atproto.*` and `app.bsky.*` lexicons shipped inside the crate.
    pub fn bundled() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(Self::unparsed_bundle)
    }

    fn unparsed_bundle() -> Catalog {
        let docs = bundled::BUNDLED
            .iter()
            .map(|&(nsid, query, text)| (nsid.to_owned(), Entry { query, text: Some(text), doc: OnceLock::new() }))
            .collect();
        Catalog { docs }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Checks and adds a lexicon document given as JSON.
    pub fn add_json(&mut self, json: &serde_json::Value) -> Result<(), LexiconError> {
        let doc = parse_doc(json)?;
        let query = matches!(doc.defs.get("main"), Some(TypeDef::Query(_)));
        self.docs.insert(doc.id.clone(), Entry { query, text: None, doc: OnceLock::from(Some(doc)) });
        Ok(())
    }

    /// The document with this NSID.
    pub fn doc(&self, nsid: &str) -> Option<&LexiconDoc> {
        self.docs.get(nsid)?.doc()
    }

    /// The NSIDs of the query methods (`main` of type query), in no particular order.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.docs.iter().filter(|(_, entry)| entry.query).map(|(nsid, _)| nsid.as_str())
    }

    /// Resolves a reference (`nsid`, `nsid#def` or `#def` relative to `context`).
    pub fn resolve(&self, reference: &str, context: &str) -> Option<(&str, &TypeDef)> {
        let (nsid, def) = split_ref(reference, context);
        let doc = self.doc(nsid)?;
        doc.defs.get(def).map(|d| (doc.id.as_str(), d))
    }

    /// Validates a record value against the record schema of `collection`.
    ///
    /// Returns [`ValidationError::UnknownSchema`] when no such record type is known, so
    /// callers can tell "unknown" (allowed in `validate: unset` mode) from "invalid".
    pub fn validate_record(&self, collection: &str, value: &crate::Ipld) -> Result<(), ValidationError> {
        let Some(TypeDef::Record(record)) = self.doc(collection).and_then(|d| d.defs.get("main")) else {
            return Err(ValidationError::UnknownSchema(collection.to_owned()));
        };
        validate::Validator { catalog: self }.record(collection, record, value)
    }
}

/// Splits a reference into (nsid, def name), defaulting the def to `main`.
fn split_ref<'a>(reference: &'a str, context: &'a str) -> (&'a str, &'a str) {
    match reference.split_once('#') {
        Some(("", def)) => (context, def),
        Some((nsid, def)) => (nsid, def),
        None => (reference, "main"),
    }
}

/// The canonical `nsid#def` form of a reference (`nsid#main` is written `nsid`).
pub(crate) fn full_ref(reference: &str, context: &str) -> String {
    match split_ref(reference, context) {
        (nsid, "main") => nsid.to_owned(),
        (nsid, def) => format!("{nsid}#{def}"),
    }
}

fn parse_doc(json: &serde_json::Value) -> Result<LexiconDoc, LexiconError> {
    let id = json.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    let err = |reason: String| LexiconError { id: id.clone(), reason };
    if json.get("lexicon").and_then(|v| v.as_u64()) != Some(1) {
        return Err(err("'lexicon' must be the integer 1".into()));
    }
    let doc: LexiconDoc = serde_json::from_value(json.clone()).map_err(|e| err(e.to_string()))?;
    Nsid::new(&doc.id).map_err(|e| err(e.to_string()))?;
    for (name, def) in &doc.defs {
        if def.is_primary() && name != "main" {
            return Err(err(format!("'{name}' is a {}, which may only be the 'main' definition", def.name())));
        }
        if matches!(def, TypeDef::Ref(_) | TypeDef::Union(_) | TypeDef::Unknown | TypeDef::Params(_) | TypeDef::Null) {
            return Err(err(format!("'{name}': a {} cannot be a named definition", def.name())));
        }
        if let TypeDef::Record(record) = def {
            if !matches!(*record.record, TypeDef::Object(_)) {
                return Err(err("a record's 'record' must be an object".into()));
            }
            let key_ok = matches!(record.key.as_str(), "tid" | "nsid" | "any") || record.key.starts_with("literal:");
            if !key_ok {
                return Err(err(format!("unknown record key type '{}'", record.key)));
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bundled document parses, and the NSID and query flag the build recorded for it
    /// without parsing are the document's own.
    #[test]
    fn every_bundled_document_parses_as_indexed() {
        assert!(bundled::BUNDLED.len() > 250);
        for &(nsid, query, text) in bundled::BUNDLED {
            let json: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{nsid}: {e}"));
            let doc = parse_doc(&json).unwrap_or_else(|e| panic!("{nsid}: {e}"));
            assert_eq!(doc.id, nsid);
            assert_eq!(matches!(doc.defs.get("main"), Some(TypeDef::Query(_))), query, "{nsid}");
        }
        let catalog = Catalog::bundled();
        assert_eq!(catalog.queries().count(), bundled::BUNDLED.iter().filter(|d| d.1).count());
        assert!(catalog.queries().any(|q| q == "app.bsky.feed.getTimeline"));
        assert!(!catalog.queries().any(|q| q == "com.atproto.repo.createRecord"));
    }

    #[test]
    fn a_bundled_document_is_parsed_when_first_used() {
        let catalog = Catalog::unparsed_bundle();
        let parsed = |nsid: &str| catalog.docs[nsid].doc.get().is_some();
        assert!(!parsed("app.bsky.feed.like"));
        let first = catalog.doc("app.bsky.feed.like").expect("bundled");
        assert!(parsed("app.bsky.feed.like"));
        assert!(!parsed("app.bsky.feed.post"), "only the document asked for is parsed");
        assert!(std::ptr::eq(first, catalog.doc("app.bsky.feed.like").expect("bundled")));
        // A reference into another document parses that one.
        assert!(catalog.resolve("com.atproto.repo.strongRef", "app.bsky.feed.like").is_some());
        assert!(parsed("com.atproto.repo.strongRef"));
    }
}

//! Validation of data-model values against lexicon types.

use std::collections::BTreeMap;

use ipld_core::ipld::Ipld;
use unicode_segmentation::UnicodeSegmentation;

use super::schema::*;
use super::{Catalog, full_ref};
use crate::syntax;

/// Why a value does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// No record schema is known for the collection.
    #[error("no lexicon schema for '{0}'")]
    UnknownSchema(String),
    /// The value breaks the schema; `path` says where (e.g. `record/embed/images/0/alt`).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Deepest nesting of refs followed, so a cyclic schema cannot recurse forever.
const MAX_DEPTH: usize = 64;

pub(super) struct Validator<'a> {
    pub catalog: &'a Catalog,
}

fn fail<T>(path: &str, message: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError::Invalid { path: path.to_owned(), message: message.into() })
}

impl Validator<'_> {
    pub(super) fn record(&self, collection: &str, def: &RecordDef, value: &Ipld) -> Result<(), ValidationError> {
        let path = "record";
        let Ipld::Map(map) = value else {
            return fail(path, "must be an object");
        };
        if let Some(t) = map.get("$type")
            && !matches!(t, Ipld::String(s) if s == collection)
        {
            return fail(path, format!("$type must be '{collection}'"));
        }
        self.value(&def.record, value, path, collection, 0)
    }

    fn value(
        &self,
        def: &TypeDef,
        value: &Ipld,
        path: &str,
        context: &str,
        depth: usize,
    ) -> Result<(), ValidationError> {
        if depth > MAX_DEPTH {
            return fail(path, "schema references nest too deeply");
        }
        match def {
            TypeDef::Null => match value {
                Ipld::Null => Ok(()),
                _ => fail(path, "must be null"),
            },
            TypeDef::Boolean(d) => match value {
                Ipld::Bool(b) => match d.const_value {
                    Some(c) if c != *b => fail(path, format!("must be {c}")),
                    _ => Ok(()),
                },
                _ => fail(path, "must be a boolean"),
            },
            TypeDef::Integer(d) => integer(d, value, path),
            TypeDef::String(d) => string(d, value, path),
            TypeDef::Bytes(d) => match value {
                Ipld::Bytes(b) => length(b.len(), d.min_length, d.max_length, path, "bytes"),
                _ => fail(path, "must be bytes"),
            },
            TypeDef::CidLink => match value {
                Ipld::Link(_) => Ok(()),
                _ => fail(path, "must be a CID link"),
            },
            TypeDef::Blob(d) => blob(d, value, path),
            TypeDef::Array(d) => {
                let Ipld::List(items) = value else {
                    return fail(path, "must be an array");
                };
                length(items.len(), d.min_length, d.max_length, path, "items")?;
                for (i, item) in items.iter().enumerate() {
                    self.value(&d.items, item, &format!("{path}/{i}"), context, depth + 1)?;
                }
                Ok(())
            }
            TypeDef::Object(d) | TypeDef::Params(d) => {
                let Ipld::Map(map) = value else {
                    return fail(path, "must be an object");
                };
                self.object(d, map, path, context, depth)
            }
            TypeDef::Ref(r) => {
                let Some((doc_id, target)) = self.catalog.resolve(&r.target, context) else {
                    return fail(path, format!("unknown schema reference '{}'", r.target));
                };
                if let TypeDef::Token = target {
                    return match value {
                        Ipld::String(s) if *s == full_ref(&r.target, context) => Ok(()),
                        _ => fail(path, format!("must be the token '{}'", full_ref(&r.target, context))),
                    };
                }
                self.value(target, value, path, doc_id, depth + 1)
            }
            TypeDef::Union(u) => self.union(u, value, path, context, depth),
            TypeDef::Unknown => match value {
                Ipld::Map(map) if !matches!(map.get("$type"), Some(Ipld::String(t)) if t == "blob") => Ok(()),
                _ => fail(path, "must be an object"),
            },
            TypeDef::Token => fail(path, "a token cannot hold a value"),
            other => fail(path, format!("a {} cannot appear inside a record", other.name())),
        }
    }

    fn object(
        &self,
        def: &ObjectDef,
        map: &BTreeMap<String, Ipld>,
        path: &str,
        context: &str,
        depth: usize,
    ) -> Result<(), ValidationError> {
        for name in &def.required {
            match map.get(name) {
                None => return fail(path, format!("must have the property '{name}'")),
                Some(Ipld::Null) if !def.nullable.contains(name) => {
                    return fail(&format!("{path}/{name}"), "cannot be null");
                }
                _ => {}
            }
        }
        for (name, prop) in &def.properties {
            let Some(v) = map.get(name) else { continue };
            if matches!(v, Ipld::Null) && def.nullable.contains(name) {
                continue;
            }
            self.value(prop, v, &format!("{path}/{name}"), context, depth + 1)?;
        }
        Ok(())
    }

    fn union(
        &self,
        def: &UnionDef,
        value: &Ipld,
        path: &str,
        context: &str,
        depth: usize,
    ) -> Result<(), ValidationError> {
        let Ipld::Map(map) = value else {
            return fail(path, "must be an object (a union member)");
        };
        let Some(Ipld::String(type_name)) = map.get("$type") else {
            return fail(path, "a union member must have a $type");
        };
        let wanted = full_ref(type_name, type_name);
        let member = def.refs.iter().find(|r| full_ref(r, context) == wanted);
        match member {
            Some(r) => {
                let Some((doc_id, target)) = self.catalog.resolve(r, context) else {
                    return fail(path, format!("unknown schema reference '{r}'"));
                };
                self.value(target, value, path, doc_id, depth + 1)
            }
            None if def.closed => fail(path, format!("$type '{type_name}' is not one of the allowed types")),
            // Open unions accept types this server does not know.
            None => Ok(()),
        }
    }
}

fn length(len: usize, min: Option<usize>, max: Option<usize>, path: &str, unit: &str) -> Result<(), ValidationError> {
    if let Some(min) = min
        && len < min
    {
        return fail(path, format!("must have at least {min} {unit}"));
    }
    if let Some(max) = max
        && len > max
    {
        return fail(path, format!("must have at most {max} {unit}"));
    }
    Ok(())
}

fn integer(def: &IntegerDef, value: &Ipld, path: &str) -> Result<(), ValidationError> {
    let Ipld::Integer(n) = value else {
        return fail(path, "must be an integer");
    };
    let n = i64::try_from(*n).or_else(|_| fail(path, "integer out of range"))?;
    if let Some(c) = def.const_value
        && n != c
    {
        return fail(path, format!("must be {c}"));
    }
    if let Some(values) = &def.enum_values
        && !values.contains(&n)
    {
        return fail(path, format!("must be one of {values:?}"));
    }
    if def.minimum.is_some_and(|m| n < m) || def.maximum.is_some_and(|m| n > m) {
        return fail(path, format!("must be between {:?} and {:?}", def.minimum, def.maximum));
    }
    Ok(())
}

fn string(def: &StringDef, value: &Ipld, path: &str) -> Result<(), ValidationError> {
    let Ipld::String(s) = value else {
        return fail(path, "must be a string");
    };
    if let Some(c) = &def.const_value
        && s != c
    {
        return fail(path, format!("must be '{c}'"));
    }
    if let Some(values) = &def.enum_values
        && !values.contains(s)
    {
        return fail(path, format!("must be one of {values:?}"));
    }
    length(s.len(), def.min_length, def.max_length, path, "bytes (UTF-8)")?;
    if def.min_graphemes.is_some() || def.max_graphemes.is_some() {
        length(s.graphemes(true).count(), def.min_graphemes, def.max_graphemes, path, "graphemes")?;
    }
    if let Some(format) = &def.format {
        let ok = match format.as_str() {
            "did" => syntax::Did::new(s.as_str()).is_ok(),
            "handle" => syntax::Handle::new(s.as_str()).is_ok(),
            "at-identifier" => syntax::AtIdentifier::new(s).is_ok(),
            "nsid" => syntax::Nsid::new(s.as_str()).is_ok(),
            "at-uri" => syntax::AtUri::new(s).is_ok(),
            "cid" => syntax::CidString::new(s.as_str()).is_ok(),
            "datetime" => syntax::Datetime::new(s.as_str()).is_ok(),
            "language" => syntax::Language::new(s.as_str()).is_ok(),
            "uri" => syntax::Uri::new(s.as_str()).is_ok(),
            "tid" => syntax::Tid::new(s.as_str()).is_ok(),
            "record-key" => syntax::RecordKey::new(s.as_str()).is_ok(),
            // Formats this version does not know are not enforced.
            _ => true,
        };
        if !ok {
            return fail(path, format!("must be a valid {format}"));
        }
    }
    Ok(())
}

fn blob(def: &BlobDef, value: &Ipld, path: &str) -> Result<(), ValidationError> {
    let Ipld::Map(map) = value else {
        return fail(path, "must be a blob");
    };
    let (mime, size) = match (map.get("$type"), map.get("ref"), map.get("mimeType"), map.get("size")) {
        (Some(Ipld::String(t)), Some(Ipld::Link(_)), Some(Ipld::String(m)), Some(Ipld::Integer(n))) if t == "blob" => {
            (m.as_str(), Some(*n))
        }
        // Legacy blob references: `{cid, mimeType}` without a size.
        (None, None, Some(Ipld::String(m)), None) if matches!(map.get("cid"), Some(Ipld::String(_))) => {
            (m.as_str(), None)
        }
        _ => return fail(path, "must be a blob reference"),
    };
    if let (Some(max), Some(size)) = (def.max_size, size)
        && size > i128::from(max)
    {
        return fail(path, format!("blob is larger than {max} bytes"));
    }
    if let Some(accept) = &def.accept
        && !accept.iter().any(|pattern| mime_matches(pattern, mime))
    {
        return fail(path, format!("blob type '{mime}' is not accepted ({accept:?})"));
    }
    Ok(())
}

fn mime_matches(pattern: &str, mime: &str) -> bool {
    if pattern == "*/*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => mime.split_once('/').is_some_and(|(t, _)| t.eq_ignore_ascii_case(prefix)),
        None => pattern.eq_ignore_ascii_case(mime),
    }
}

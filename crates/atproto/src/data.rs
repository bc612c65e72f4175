//! The atproto data model: strict DAG-CBOR and the JSON form.
//!
//! Values are [`Ipld`]. Decoding refuses anything the data model forbids (floats, integers
//! outside i64, non-canonical or indefinite-length CBOR, tags other than 42, trailing bytes)
//! and enforces size and nesting limits before any allocation happens. Maps with a `$type`
//! must carry a non-empty string there, and `$type: "blob"` maps must be well-formed blob refs.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use ipld_core::ipld::Ipld;

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("value is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("value nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("invalid DAG-CBOR: {0}")]
    InvalidCbor(String),
    #[error("invalid data: {0}")]
    InvalidData(String),
}

fn invalid(msg: impl Into<String>) -> DataError {
    DataError::InvalidData(msg.into())
}

/// Limits applied when decoding untrusted DAG-CBOR.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted encoding in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of lists and maps.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 2 MiB and 128 levels: above what any record or MST node needs, far below what could
    /// exhaust memory or stack.
    fn default() -> Self {
        Self { max_bytes: 2 * 1024 * 1024, max_depth: 128 }
    }
}

/// Decodes one DAG-CBOR value with the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<Ipld, DataError> {
    decode_with(bytes, &Limits::default())
}

/// Decodes one DAG-CBOR value, refusing anything outside the atproto data model.
pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Ipld, DataError> {
    if bytes.len() > limits.max_bytes {
        return Err(DataError::TooLarge { size: bytes.len(), limit: limits.max_bytes });
    }
    prescan(bytes, limits.max_depth)?;
    let value: Ipld = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DataError::InvalidCbor(e.to_string()))?;
    check_value(&value)?;
    Ok(value)
}

/// Decodes DAG-CBOR straight into a serde type, with the same limits and checks on the bytes.
pub fn decode_as<T: serde::de::DeserializeOwned>(bytes: &[u8], limits: &Limits) -> Result<T, DataError> {
    if bytes.len() > limits.max_bytes {
        return Err(DataError::TooLarge { size: bytes.len(), limit: limits.max_bytes });
    }
    prescan(bytes, limits.max_depth)?;
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DataError::InvalidCbor(e.to_string()))
}

/// Encodes a value as canonical DAG-CBOR. Floats are refused.
pub fn encode(value: &Ipld) -> Result<Vec<u8>, DataError> {
    check_value(value)?;
    serde_ipld_dagcbor::to_vec(value).map_err(|e| DataError::InvalidCbor(e.to_string()))
}

/// Encodes any serde value as canonical DAG-CBOR (struct fields are sorted canonically).
pub fn encode_as<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, DataError> {
    serde_ipld_dagcbor::to_vec(value).map_err(|e| DataError::InvalidCbor(e.to_string()))
}

/// Walks the CBOR item headers without building anything: checks nesting depth, refuses
/// indefinite lengths, floats, tags other than 42 and trailing bytes, and makes sure every
/// declared length fits in the input (so no decoder allocates for a lie).
fn prescan(bytes: &[u8], max_depth: usize) -> Result<(), DataError> {
    let cbor = |m: &str| DataError::InvalidCbor(m.to_owned());
    let mut pos = 0usize;
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let initial = *bytes.get(pos).ok_or_else(|| cbor("unexpected end of input"))?;
        pos += 1;
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let raw = bytes.get(pos..pos + n).ok_or_else(|| cbor("unexpected end of input"))?;
                pos += n;
                raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            }
            31 => return Err(cbor("indefinite-length items are not allowed")),
            _ => return Err(cbor("reserved additional information")),
        };
        let remaining = (bytes.len() - pos) as u64;
        match major {
            0 | 1 => {}
            2 | 3 => {
                if arg > remaining {
                    return Err(cbor("string length exceeds input"));
                }
                pos += arg as usize;
            }
            4 | 5 => {
                let items = if major == 5 { arg.checked_mul(2).ok_or_else(|| cbor("map too large"))? } else { arg };
                if items > remaining {
                    return Err(cbor("container length exceeds input"));
                }
                if items > 0 {
                    pending.push(items);
                    if pending.len() - 1 > max_depth {
                        return Err(DataError::TooDeep { limit: max_depth });
                    }
                }
            }
            6 => {
                if arg != 42 {
                    return Err(cbor("only tag 42 (CID) is allowed"));
                }
                // The tagged item still has to be read at this level.
                *pending.last_mut().expect("non-empty") += 1;
            }
            _ => match info {
                20..=22 => {}
                25..=27 => return Err(invalid("floats are not allowed in the atproto data model")),
                _ => return Err(cbor("unsupported simple value")),
            },
        }
    }
    if pos != bytes.len() {
        return Err(cbor("trailing bytes after value"));
    }
    Ok(())
}

/// Checks the rules of the data model that a generic IPLD value could break.
fn check_value(value: &Ipld) -> Result<(), DataError> {
    match value {
        Ipld::Float(_) => Err(invalid("floats are not allowed in the atproto data model")),
        Ipld::Integer(i) if *i < i128::from(i64::MIN) || *i > i128::from(i64::MAX) => {
            Err(invalid("integer out of 64-bit range"))
        }
        Ipld::List(items) => items.iter().try_for_each(check_value),
        Ipld::Map(map) => {
            if let Some(t) = map.get("$type") {
                match t {
                    Ipld::String(s) if !s.is_empty() => {}
                    _ => return Err(invalid("$type must be a non-empty string")),
                }
                if matches!(t, Ipld::String(s) if s == "blob") {
                    check_blob(map)?;
                }
            }
            map.values().try_for_each(check_value)
        }
        Ipld::Link(cid) => crate::cid::check_atproto_cid(cid).map_err(invalid),
        _ => Ok(()),
    }
}

fn check_blob(map: &BTreeMap<String, Ipld>) -> Result<(), DataError> {
    if !matches!(map.get("ref"), Some(Ipld::Link(_))) {
        return Err(invalid("blob ref must have a 'ref' link"));
    }
    if !matches!(map.get("mimeType"), Some(Ipld::String(_))) {
        return Err(invalid("blob ref must have a string 'mimeType'"));
    }
    if !matches!(map.get("size"), Some(Ipld::Integer(n)) if *n >= 0) {
        return Err(invalid("blob ref must have a non-negative integer 'size'"));
    }
    Ok(())
}

/// Converts a record from its JSON form: the top level must be an object.
pub fn record_from_json(json: &serde_json::Value) -> Result<Ipld, DataError> {
    if !json.is_object() {
        return Err(invalid("a record must be a JSON object"));
    }
    from_json(json)
}

/// Converts the JSON form (`$link`, `$bytes`, blob refs) into a data-model value.
pub fn from_json(json: &serde_json::Value) -> Result<Ipld, DataError> {
    let value = json_to_ipld(json, 0)?;
    check_value(&value)?;
    Ok(value)
}

fn json_to_ipld(json: &serde_json::Value, depth: usize) -> Result<Ipld, DataError> {
    use serde_json::Value;
    if depth > Limits::default().max_depth {
        return Err(DataError::TooDeep { limit: Limits::default().max_depth });
    }
    Ok(match json {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ipld::Integer(i.into())
            } else if n.is_u64() {
                return Err(invalid("integer out of 64-bit range"));
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // JSON has one number type; integral values written as 1.0 are still integers.
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    Ipld::Integer(f as i128)
                } else {
                    return Err(invalid("floats are not allowed in the atproto data model"));
                }
            }
        }
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(items) => Ipld::List(items.iter().map(|v| json_to_ipld(v, depth + 1)).collect::<Result<_, _>>()?),
        Value::Object(map) => {
            if let Some(link) = map.get("$link") {
                let s = link
                    .as_str()
                    .filter(|_| map.len() == 1)
                    .ok_or_else(|| invalid("$link must be the only key and a string"))?;
                return crate::cid::parse_atproto_cid(s).map(Ipld::Link).map_err(invalid);
            }
            if let Some(bytes) = map.get("$bytes") {
                let s = bytes
                    .as_str()
                    .filter(|_| map.len() == 1)
                    .ok_or_else(|| invalid("$bytes must be the only key and a string"))?;
                return decode_base64(s).map(Ipld::Bytes);
            }
            let mut out = BTreeMap::new();
            for (k, v) in map {
                out.insert(k.clone(), json_to_ipld(v, depth + 1)?);
            }
            Ipld::Map(out)
        }
    })
}

/// `$bytes` is standard base64 without padding; be lenient about padding and unused trailing
/// bits, as the reference implementation is.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn decode_base64(s: &str) -> Result<Vec<u8>, DataError> {
    LENIENT_BASE64.decode(s).map_err(|_| invalid("$bytes is not valid base64"))
}

/// Converts a data-model value to its JSON form.
pub fn to_json(value: &Ipld) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i).map(Value::from).unwrap_or(Value::Null),
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => serde_json::json!({ "$bytes": STANDARD_NO_PAD.encode(b) }),
        Ipld::List(items) => Value::Array(items.iter().map(to_json).collect()),
        Ipld::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Ipld::Link(cid) => serde_json::json!({ "$link": cid.to_string() }),
    }
}

/// Every blob CID referenced anywhere in a value (nested objects and arrays included).
pub fn blob_refs(value: &Ipld) -> Vec<::cid::Cid> {
    let mut out = Vec::new();
    collect_blobs(value, &mut out);
    out
}

fn collect_blobs(value: &Ipld, out: &mut Vec<::cid::Cid>) {
    match value {
        Ipld::Map(map) => {
            if let (Some(Ipld::String(t)), Some(Ipld::Link(cid))) = (map.get("$type"), map.get("ref"))
                && t == "blob"
            {
                out.push(*cid);
            }
            map.values().for_each(|v| collect_blobs(v, out));
        }
        Ipld::List(items) => items.iter().for_each(|v| collect_blobs(v, out)),
        _ => {}
    }
}

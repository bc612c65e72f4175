//! The lexicon schema language, as serde types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One lexicon document: an NSID and its named definitions.
#[derive(Debug, Clone, Deserialize)]
pub struct LexiconDoc {
    pub lexicon: u64,
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    pub defs: BTreeMap<String, TypeDef>,
}

/// Any type a lexicon can define or use.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TypeDef {
    Null,
    Boolean(BooleanDef),
    Integer(IntegerDef),
    String(StringDef),
    Bytes(BytesDef),
    CidLink,
    Blob(BlobDef),
    Array(ArrayDef),
    Object(ObjectDef),
    Params(ObjectDef),
    Token,
    Ref(RefDef),
    Union(UnionDef),
    Unknown,
    Record(RecordDef),
    Query(XrpcDef),
    Procedure(XrpcDef),
    Subscription(XrpcDef),
    PermissionSet(serde_json::Map<String, serde_json::Value>),
}

impl TypeDef {
    /// Record, query, procedure, subscription and permission-set may only be a doc's `main`.
    pub fn is_primary(&self) -> bool {
        matches!(
            self,
            Self::Record(_) | Self::Query(_) | Self::Procedure(_) | Self::Subscription(_) | Self::PermissionSet(_)
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean(_) => "boolean",
            Self::Integer(_) => "integer",
            Self::String(_) => "string",
            Self::Bytes(_) => "bytes",
            Self::CidLink => "cid-link",
            Self::Blob(_) => "blob",
            Self::Array(_) => "array",
            Self::Object(_) => "object",
            Self::Params(_) => "params",
            Self::Token => "token",
            Self::Ref(_) => "ref",
            Self::Union(_) => "union",
            Self::Unknown => "unknown",
            Self::Record(_) => "record",
            Self::Query(_) => "query",
            Self::Procedure(_) => "procedure",
            Self::Subscription(_) => "subscription",
            Self::PermissionSet(_) => "permission-set",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BooleanDef {
    #[serde(rename = "const")]
    pub const_value: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IntegerDef {
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<i64>>,
    #[serde(rename = "const")]
    pub const_value: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringDef {
    pub format: Option<String>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub min_graphemes: Option<usize>,
    pub max_graphemes: Option<usize>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    #[serde(rename = "const")]
    pub const_value: Option<String>,
    pub known_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BytesDef {
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobDef {
    pub accept: Option<Vec<String>>,
    pub max_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArrayDef {
    pub items: Box<TypeDef>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectDef {
    #[serde(default)]
    pub properties: BTreeMap<String, TypeDef>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub nullable: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefDef {
    #[serde(rename = "ref")]
    pub target: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UnionDef {
    pub refs: Vec<String>,
    #[serde(default)]
    pub closed: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordDef {
    pub key: String,
    pub record: Box<TypeDef>,
}

/// Query, procedure or subscription.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct XrpcDef {
    pub parameters: Option<Box<TypeDef>>,
    pub input: Option<BodyDef>,
    pub output: Option<BodyDef>,
    pub message: Option<BodyDef>,
    #[serde(default)]
    pub errors: Vec<ErrorDef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BodyDef {
    pub encoding: Option<String>,
    pub schema: Option<Box<TypeDef>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDef {
    pub name: String,
}

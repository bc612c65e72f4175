//! Typed identifiers of the AT Protocol. Each type can only hold a value that passed its
//! syntax check, so code that receives one never re-validates.

mod aturi;
mod datetime;
mod did;
mod handle;
mod language;
mod misc;
mod nsid;
mod tid;

pub use aturi::AtUri;
pub use datetime::Datetime;
pub use did::Did;
pub use handle::Handle;
pub use language::Language;
pub use misc::{AtIdentifier, CidString, RecordKey, Uri};
pub use nsid::Nsid;
pub use tid::{Tid, TidGenerator};

/// A string that failed an atproto syntax check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct SyntaxError {
    /// The kind of identifier, e.g. "handle".
    pub kind: &'static str,
    /// Why the value was rejected.
    pub reason: String,
}

impl SyntaxError {
    pub(crate) fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self { kind, reason: reason.into() }
    }
}

/// Declares a string newtype whose constructor runs a validation function.
macro_rules! string_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates a value.
            pub fn new(value: impl Into<String>) -> Result<Self, $crate::syntax::SyntaxError> {
                let value = value.into();
                $check(&value).map_err(|reason| $crate::syntax::SyntaxError::new($kind, reason))?;
                Ok(Self(value))
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Gives back the owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::syntax::SyntaxError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_type;

/// True when every byte of `s` satisfies `allowed`.
pub(crate) fn all_bytes(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(allowed)
}

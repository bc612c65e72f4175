//! v3 repository commits.
//!
//! In Vow the server never holds the user's key: it builds an [`UnsignedCommit`], sends
//! [`UnsignedCommit::bytes_to_sign`] to the user's signer, and attaches the signature that comes
//! back with [`UnsignedCommit::with_signature`], after checking it with [`SignedCommit::verify`].

use ::cid::Cid;
use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoError, PublicKey};
use crate::data::{DataError, Limits};
use crate::syntax::{Did, Tid};

/// Why a commit could not be decoded or verified.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("commit is not valid DAG-CBOR: {0}")]
    Data(#[from] DataError),
    #[error("commit has version {0}; only version 3 is supported")]
    Version(u64),
    #[error("commit field is invalid: {0}")]
    Field(String),
    #[error("commit signature: {0}")]
    Signature(#[from] CryptoError),
}

/// A commit before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedCommit {
    pub did: Did,
    /// Root of the MST holding the records.
    pub data: Cid,
    pub rev: Tid,
    /// Always `None` in v3 (kept, as null, for compatibility with v2 readers).
    pub prev: Option<Cid>,
}

#[derive(Serialize)]
struct UnsignedWire<'a> {
    did: &'a str,
    version: u64,
    data: Cid,
    rev: &'a str,
    prev: Option<Cid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsignedOwned {
    did: String,
    version: u64,
    data: Cid,
    rev: String,
    prev: Option<Cid>,
}

#[derive(Serialize, Deserialize)]
struct SignedWire {
    did: String,
    version: u64,
    data: Cid,
    rev: String,
    prev: Option<Cid>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

impl UnsignedCommit {
    /// A v3 commit (with `prev: null`).
    pub fn new(did: Did, data: Cid, rev: Tid) -> Self {
        Self { did, data, rev, prev: None }
    }

    /// The canonical DAG-CBOR of the unsigned commit: exactly the bytes the signer signs.
    pub fn bytes_to_sign(&self) -> Vec<u8> {
        crate::data::encode_as(&UnsignedWire {
            did: self.did.as_str(),
            version: 3,
            data: self.data,
            rev: self.rev.as_str(),
            prev: self.prev,
        })
        .expect("a commit always encodes")
    }

    /// Decodes the bytes a signer is asked to sign, accepting only the exact canonical
    /// encoding of a v3 unsigned commit (no other fields, no signature, nothing appended).
    pub fn from_bytes_to_sign(bytes: &[u8]) -> Result<Self, CommitError> {
        let wire: UnsignedOwned = crate::data::decode_as(bytes, &Limits { max_bytes: 64 * 1024, max_depth: 4 })?;
        if wire.version != 3 {
            return Err(CommitError::Version(wire.version));
        }
        let did = Did::new(wire.did).map_err(|e| CommitError::Field(e.to_string()))?;
        let rev = Tid::new(wire.rev).map_err(|e| CommitError::Field(e.to_string()))?;
        let commit = Self { did, data: wire.data, rev, prev: wire.prev };
        if commit.bytes_to_sign() != bytes {
            return Err(CommitError::Field("not the canonical encoding of an unsigned commit".into()));
        }
        Ok(commit)
    }

    /// Attaches a signature. Nothing is checked here; call [`SignedCommit::verify`].
    pub fn with_signature(self, sig: Vec<u8>) -> SignedCommit {
        SignedCommit { unsigned: self, sig }
    }
}

/// A signed commit as stored in a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommit {
    pub unsigned: UnsignedCommit,
    pub sig: Vec<u8>,
}

impl SignedCommit {
    /// The block bytes of the signed commit.
    pub fn to_block(&self) -> Vec<u8> {
        let u = &self.unsigned;
        crate::data::encode_as(&SignedWire {
            did: u.did.to_string(),
            version: 3,
            data: u.data,
            rev: u.rev.to_string(),
            prev: u.prev,
            sig: self.sig.clone(),
        })
        .expect("a commit always encodes")
    }

    /// The block bytes and their CID.
    pub fn to_block_with_cid(&self) -> (Cid, Vec<u8>) {
        let bytes = self.to_block();
        (crate::cid::cbor_cid(&bytes), bytes)
    }

    /// Decodes a commit block. Only v3 commits are accepted.
    pub fn from_block(bytes: &[u8]) -> Result<Self, CommitError> {
        let wire: SignedWire = crate::data::decode_as(bytes, &Limits { max_bytes: 64 * 1024, max_depth: 4 })?;
        if wire.version != 3 {
            return Err(CommitError::Version(wire.version));
        }
        let did = Did::new(wire.did).map_err(|e| CommitError::Field(e.to_string()))?;
        let rev = Tid::new(wire.rev).map_err(|e| CommitError::Field(e.to_string()))?;
        Ok(Self { unsigned: UnsignedCommit { did, data: wire.data, rev, prev: wire.prev }, sig: wire.sig })
    }

    /// Checks the signature against the account's signing key.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CommitError> {
        key.verify(&self.unsigned.bytes_to_sign(), &self.sig)?;
        Ok(())
    }
}

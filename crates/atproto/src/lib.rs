//! The AT Protocol data layer used by Vow.
//!
//! Everything here is pure: no I/O, no async, no clocks beyond the TID generator. The server
//! crate builds storage, networking and signing on top of these types.
//!
//! - [`syntax`]: typed identifiers (DID, handle, NSID, record key, TID, AT-URI, datetime, ...)
//! - [`data`]: the atproto data model, strict DAG-CBOR and its JSON form
//! - [`cid`]: CIDv1 helpers (dag-cbor and raw, sha2-256)
//! - [`car`]: streaming CAR v1 reader and writer with hash verification and limits
//! - [`crypto`]: did:key, multikey, low-S compact ECDSA over K-256 and P-256
//! - [`mst`]: the Merkle Search Tree with diffs and proofs
//! - [`commit`]: v3 repo commits, unsigned bytes to sign and verification
//! - [`lexicon`]: lexicon schema loading and record validation

pub mod blocks;
pub mod car;
pub mod cid;
pub mod commit;
pub mod crypto;
pub mod data;
pub mod lexicon;
pub mod mst;
pub mod syntax;

pub use ::cid::Cid;
pub use ipld_core::ipld::Ipld;

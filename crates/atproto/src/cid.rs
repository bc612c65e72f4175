//! CIDv1 helpers. atproto uses sha2-256 everywhere, with the `dag-cbor` codec for structured
//! data and `raw` for blobs.

use ::cid::Cid;
use multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes (blobs).
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

fn cid_with_codec(codec: u64, bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    let hash = Multihash::<64>::wrap(SHA2_256, &digest).expect("32-byte digest fits");
    Cid::new_v1(codec, hash)
}

/// The CID of a DAG-CBOR block.
pub fn cbor_cid(bytes: &[u8]) -> Cid {
    cid_with_codec(DAG_CBOR, bytes)
}

/// The CID of a blob: CIDv1, raw codec, sha2-256 of the whole file.
pub fn raw_cid(bytes: &[u8]) -> Cid {
    cid_with_codec(RAW, bytes)
}

/// Builds a raw-codec CID from a sha2-256 digest computed elsewhere (e.g. while streaming).
pub fn raw_cid_from_digest(digest: [u8; 32]) -> Cid {
    let hash = Multihash::<64>::wrap(SHA2_256, &digest).expect("32-byte digest fits");
    Cid::new_v1(RAW, hash)
}

/// True when `bytes` hash to `cid` (sha2-256 only; other hash functions are refused).
pub fn matches(cid: &Cid, bytes: &[u8]) -> bool {
    let hash = cid.hash();
    hash.code() == SHA2_256 && hash.digest() == Sha256::digest(bytes).as_slice()
}

/// Parses a CID string, refusing CIDv0 and anything but dag-cbor or raw with sha2-256,
/// as atproto requires for links.
pub fn parse_atproto_cid(s: &str) -> Result<Cid, String> {
    let cid = Cid::try_from(s).map_err(|e| format!("invalid CID '{s}': {e}"))?;
    check_atproto_cid(&cid)?;
    Ok(cid)
}

/// Checks that a CID is one atproto accepts in data: v1, dag-cbor or raw, sha2-256.
pub fn check_atproto_cid(cid: &Cid) -> Result<(), String> {
    if cid.version() != ::cid::Version::V1 {
        return Err("CIDv0 is not allowed".into());
    }
    if cid.codec() != DAG_CBOR && cid.codec() != RAW {
        return Err(format!("CID codec 0x{:x} is not allowed", cid.codec()));
    }
    if cid.hash().code() != SHA2_256 || cid.hash().size() != 32 {
        return Err("CID hash must be sha2-256".into());
    }
    Ok(())
}

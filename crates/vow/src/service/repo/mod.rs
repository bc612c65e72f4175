//! The repository layer: the genesis commit of a new account (signed by the PDS rotation key,
//! which is the account's key until handover) and the write pipeline.

pub mod backfill;
pub mod import;
pub mod queue;
pub mod writer;

use atproto::Cid;
use atproto::blocks::BlockMap;
use atproto::commit::UnsignedCommit;
use atproto::crypto::Keypair;
use atproto::mst::Mst;
use atproto::syntax::{Did, TidGenerator};

/// What a new commit produced: its CID, rev and the blocks to store.
pub struct NewCommit {
    pub cid: Cid,
    /// The MST root the commit points at.
    pub data: Cid,
    pub rev: String,
    pub blocks: BlockMap,
}

/// The first commit of an empty repo.
pub fn genesis_commit(did: &Did, key: &Keypair, tids: &TidGenerator) -> NewCommit {
    let mut tree = Mst::new();
    let data = tree.commit();
    let rev = tids.next();
    let unsigned = UnsignedCommit::new(did.clone(), data.root, rev.clone());
    let sig = key.sign(&unsigned.bytes_to_sign()).to_vec();
    let (cid, bytes) = unsigned.with_signature(sig).to_block_with_cid();
    let mut blocks = data.blocks;
    blocks.insert(cid, bytes);
    NewCommit { cid, data: data.root, rev: rev.into_string(), blocks }
}

//! The repository layer. For now: the embedded blockstore and the genesis commit of a new
//! account (signed by the PDS rotation key, which is the account's key until handover).

use atproto::Cid;
use atproto::blocks::BlockMap;
use atproto::commit::UnsignedCommit;
use atproto::crypto::Keypair;
use atproto::mst::Mst;
use atproto::syntax::{Did, TidGenerator};
use sqlx::{Sqlite, Transaction};

/// What a new commit produced: its CID, rev and the blocks to store.
pub struct NewCommit {
    pub cid: Cid,
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
    NewCommit { cid, rev: rev.into_string(), blocks }
}

/// Stores blocks in the embedded blockstore within a transaction.
pub async fn put_blocks(tx: &mut Transaction<'_, Sqlite>, blocks: &BlockMap) -> Result<(), sqlx::Error> {
    for (cid, bytes) in blocks.iter() {
        sqlx::query("INSERT OR IGNORE INTO blocks (cid, bytes) VALUES (?, ?)")
            .bind(cid.to_string())
            .bind(bytes)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Reads one block from the embedded blockstore.
pub async fn get_block(db: &sqlx::SqlitePool, cid: &Cid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT bytes FROM blocks WHERE cid = ?").bind(cid.to_string()).fetch_optional(db).await?;
    Ok(row.map(|r| r.0))
}

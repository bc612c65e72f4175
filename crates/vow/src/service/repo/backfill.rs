//! Indexing of repos written before the block index existed.

use atproto::Cid;

use crate::store::db::refs::add_blocks;

/// Fills `repo_blocks` for repos written before it existed, by walking each tree once.
pub async fn backfill(
    db: &sqlx::SqlitePool,
    blocks: &crate::store::blocks::Blocks,
) -> Result<(), crate::error::XrpcError> {
    use crate::store::blocks::{BlockStore, SyncReader};
    let todo = crate::store::db::accounts::unindexed_repos(db).await?;
    for (did, root, rev) in todo {
        let root: Cid = root.parse().map_err(|e| crate::error::XrpcError::internal("stored root is invalid", e))?;
        let bytes = blocks.get(&root).await?.ok_or_else(|| crate::error::XrpcError::internal("head missing", root))?;
        let commit = atproto::commit::SignedCommit::from_block(&bytes)
            .map_err(|e| crate::error::XrpcError::internal("head commit does not decode", e))?;
        // Runs on a runtime worker like the writer does (the reader blocks in place).
        let reader = SyncReader::uncached(blocks);
        let diff = atproto::mst::diff(&reader, None, commit.unsigned.data)
            .map_err(|e| crate::error::XrpcError::internal("repo tree could not be read", e))?;
        let mut cids: Vec<Cid> =
            diff.new_nodes.into_iter().chain(diff.ops.into_iter().filter_map(|op| op.new)).collect();
        cids.push(root);
        let mut tx = db.begin().await?;
        add_blocks(&mut tx, &did, &rev, &cids).await?;
        tx.commit().await?;
        tracing::info!(%did, blocks = cids.len(), "indexed the blocks of a repo");
    }
    Ok(())
}

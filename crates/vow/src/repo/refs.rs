//! Which blocks and blobs each repo references, kept in step with the repo root inside the
//! transaction that moves it. This is what lets a block shared by several accounts (identical
//! records, the empty tree) be released only when the last one lets go of it, and what answers
//! getRepo from one indexed query.

use atproto::Cid;
use sqlx::SqliteConnection;

/// Records that the repo of `did` references `cids` as of `rev` (a block already referenced
/// moves to `rev`: it is new again for anyone syncing since an older revision).
pub async fn add_blocks<'a>(
    conn: &mut SqliteConnection,
    did: &str,
    rev: &str,
    cids: impl IntoIterator<Item = &'a Cid>,
) -> Result<(), sqlx::Error> {
    let cids: Vec<String> = cids.into_iter().map(Cid::to_string).collect();
    for chunk in cids.chunks(300) {
        let mut query = sqlx::QueryBuilder::new("INSERT OR REPLACE INTO repo_blocks (did, cid, rev) ");
        query.push_values(chunk, |mut row, cid| {
            row.push_bind(did).push_bind(cid).push_bind(rev);
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops the repo's references to those of `candidates` it no longer holds (a record CID that
/// another key of the repo still has stays). Must run after the record index is updated. With
/// `delete_blocks` (the embedded store) it also deletes blocks no repo references any more.
pub async fn drop_blocks(
    conn: &mut SqliteConnection,
    did: &str,
    candidates: &[Cid],
    delete_blocks: bool,
) -> Result<(), sqlx::Error> {
    for chunk in candidates.chunks(300) {
        let mut query = sqlx::QueryBuilder::new("DELETE FROM repo_blocks WHERE did = ");
        query.push_bind(did).push(" AND cid IN (");
        let mut list = query.separated(", ");
        for cid in chunk {
            list.push_bind(cid.to_string());
        }
        query.push(
            ") AND NOT EXISTS (SELECT 1 FROM records r WHERE r.did = repo_blocks.did AND r.cid = repo_blocks.cid)",
        );
        query.build().execute(&mut *conn).await?;
        if delete_blocks {
            let mut query = sqlx::QueryBuilder::new("DELETE FROM blocks WHERE cid IN (");
            let mut list = query.separated(", ");
            for cid in chunk {
                list.push_bind(cid.to_string());
            }
            query.push(") AND NOT EXISTS (SELECT 1 FROM repo_blocks r WHERE r.cid = blocks.cid)");
            query.build().execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Replaces the blob references of one record (none for a deleted record).
pub async fn set_record_blobs(
    conn: &mut SqliteConnection,
    did: &str,
    collection: &str,
    rkey: &str,
    blobs: &[Cid],
    existed: bool,
) -> Result<(), sqlx::Error> {
    if existed {
        sqlx::query("DELETE FROM record_blobs WHERE did = ? AND collection = ? AND rkey = ?")
            .bind(did)
            .bind(collection)
            .bind(rkey)
            .execute(&mut *conn)
            .await?;
    }
    if !blobs.is_empty() {
        let mut query = sqlx::QueryBuilder::new("INSERT OR IGNORE INTO record_blobs (did, collection, rkey, cid) ");
        query.push_values(blobs, |mut row, cid| {
            row.push_bind(did).push_bind(collection).push_bind(rkey).push_bind(cid.to_string());
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Those of `blobs` that `did` has not uploaded.
pub async fn missing_blobs(conn: &mut SqliteConnection, did: &str, blobs: &[Cid]) -> Result<Vec<Cid>, sqlx::Error> {
    let mut missing = Vec::new();
    for cid in blobs {
        let found: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM blobs WHERE did = ? AND cid = ?")
            .bind(did)
            .bind(cid.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            missing.push(*cid);
        }
    }
    Ok(missing)
}

/// Fills `repo_blocks` for repos written before it existed, by walking each tree once.
pub async fn backfill(state: &crate::server::AppState) -> Result<(), crate::error::XrpcError> {
    use crate::storage::{BlockStore, SyncReader};
    let todo: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT did, repo_root, repo_rev FROM accounts a WHERE repo_root IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM repo_blocks r WHERE r.did = a.did)",
    )
    .fetch_all(&state.db)
    .await?;
    for (did, root, rev) in todo {
        let root: Cid = root.parse().map_err(|e| crate::error::XrpcError::internal("stored root is invalid", e))?;
        let bytes =
            state.blocks.get(&root).await?.ok_or_else(|| crate::error::XrpcError::internal("head missing", root))?;
        let commit = atproto::commit::SignedCommit::from_block(&bytes)
            .map_err(|e| crate::error::XrpcError::internal("head commit does not decode", e))?;
        // Runs on a runtime worker like the writer does (the reader blocks in place).
        let reader = SyncReader::uncached(&state.blocks);
        let diff = atproto::mst::diff(&reader, None, commit.unsigned.data)
            .map_err(|e| crate::error::XrpcError::internal("repo tree could not be read", e))?;
        let mut cids: Vec<Cid> =
            diff.new_nodes.into_iter().chain(diff.ops.into_iter().filter_map(|op| op.new)).collect();
        cids.push(root);
        let mut tx = state.db.begin().await?;
        add_blocks(&mut tx, &did, &rev, &cids).await?;
        tx.commit().await?;
        tracing::info!(%did, blocks = cids.len(), "indexed the blocks of a repo");
    }
    Ok(())
}

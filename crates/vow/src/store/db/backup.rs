//! Online snapshots of the database: `VACUUM INTO` writes a transactionally consistent copy
//! while the server keeps writing, and the lists a backup needs from that copy.

use sqlx::SqlitePool;

/// Writes a consistent copy of `db` to `to` (which must not exist).
pub async fn snapshot(db: &SqlitePool, to: &std::path::Path) -> Result<(), sqlx::Error> {
    sqlx::query("VACUUM INTO ?").bind(to.to_string_lossy().into_owned()).execute(db).await?;
    Ok(())
}

/// Blobs held in the blob files of the embedded store (their CIDs), and every CID the IPFS
/// node must keep pinned: repo blocks, and the node's CIDs of blobs.
pub async fn contents(db: &SqlitePool) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let blobs: Vec<String> = sqlx::query_scalar("SELECT DISTINCT cid FROM blobs ORDER BY cid").fetch_all(db).await?;
    let pins: Vec<String> = sqlx::query_scalar(
        "SELECT cid FROM repo_blocks UNION SELECT ipfs_cid FROM blobs WHERE ipfs_cid IS NOT NULL ORDER BY 1",
    )
    .fetch_all(db)
    .await?;
    Ok((blobs, pins))
}

/// Accounts and the newest commit of each, as a backup's manifest lists them.
pub async fn heads(db: &SqlitePool) -> Result<Vec<(String, Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT did, repo_root, repo_rev FROM accounts ORDER BY did").fetch_all(db).await
}

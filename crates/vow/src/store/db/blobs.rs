//! Blob rows: what each account uploaded, and where the bytes are.

use sqlx::SqlitePool;

/// Records an upload; a re-upload restarts the grace period and may move the bytes.
pub async fn upsert(
    db: &SqlitePool,
    did: &str,
    cid: &str,
    mime: &str,
    size: i64,
    ipfs_cid: Option<String>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO blobs (did, cid, mime, size, created_at, ipfs_cid) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (did, cid) DO UPDATE SET mime = excluded.mime, created_at = excluded.created_at, \
         ipfs_cid = excluded.ipfs_cid",
    )
    .bind(did)
    .bind(cid)
    .bind(mime)
    .bind(size)
    .bind(super::now())
    .bind(ipfs_cid)
    .execute(db)
    .await?;
    Ok(())
}

/// An account's blob: (mime, size, IPFS root).
pub async fn get(db: &SqlitePool, did: &str, cid: &str) -> Result<Option<(String, i64, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT mime, size, ipfs_cid FROM blobs WHERE did = ? AND cid = ?")
        .bind(did)
        .bind(cid)
        .fetch_optional(db)
        .await
}

/// A page of the account's blobs that its current records reference, after `cursor`; with
/// `since`, only those referenced by a record written after that revision.
pub async fn referenced_page(
    db: &SqlitePool,
    did: &str,
    cursor: &str,
    since: Option<String>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT b.cid FROM blobs b JOIN record_blobs r ON r.did = b.did AND r.cid = b.cid \
         JOIN records rec ON rec.did = r.did AND rec.collection = r.collection AND rec.rkey = r.rkey \
         WHERE b.did = ? AND b.cid > ? AND (?3 IS NULL OR EXISTS ( \
             SELECT 1 FROM repo_blocks rb WHERE rb.cid = rec.cid AND rb.did = rec.did AND rb.rev > ?3)) \
         ORDER BY b.cid LIMIT ?4",
    )
    .bind(did)
    .bind(cursor)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// A page of the blobs the account's records reference but that were never uploaded here:
/// (cid, collection, rkey) of one record referencing each.
pub async fn missing_page(
    db: &SqlitePool,
    did: &str,
    cursor: &str,
    limit: i64,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.cid, MIN(r.collection), MIN(r.rkey) FROM record_blobs r \
         WHERE r.did = ? AND r.cid > ? \
         AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.did = r.did AND b.cid = r.cid) \
         GROUP BY r.cid ORDER BY r.cid LIMIT ?",
    )
    .bind(did)
    .bind(cursor)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Removes the blob rows older than `cutoff` that no record references; returns their
/// (cid, IPFS root).
pub async fn delete_unreferenced(db: &SqlitePool, cutoff: &str) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM blobs WHERE created_at < ? \
         AND NOT EXISTS (SELECT 1 FROM record_blobs r WHERE r.did = blobs.did AND r.cid = blobs.cid) \
         RETURNING cid, ipfs_cid",
    )
    .bind(cutoff)
    .fetch_all(db)
    .await
}

/// Whether any account still holds the blob `cid`.
pub async fn held_by_anyone(db: &SqlitePool, cid: &str) -> Result<bool, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM blobs WHERE cid = ?").bind(cid).fetch_one(db).await?;
    Ok(n > 0)
}

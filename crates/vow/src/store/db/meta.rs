//! Server facts kept across restarts (`server_meta`), and the counts start-up checks need.

use sqlx::SqlitePool;

pub async fn get(db: &SqlitePool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM server_meta WHERE key = ?").bind(key).fetch_optional(db).await
}

pub async fn set(db: &SqlitePool, key: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO server_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(db)
    .await?;
    Ok(())
}

/// How many accounts have a registered passkey.
pub async fn passkey_accounts(db: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE passkey_credential_id IS NOT NULL").fetch_one(db).await
}

/// Accounts by status: active, deactivated, taken down.
pub async fn accounts_by_status(db: &SqlitePool) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let (active, deactivated, takendown): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(takedown_ref IS NULL AND deactivated_at IS NULL), 0), \
                COALESCE(SUM(takedown_ref IS NULL AND deactivated_at IS NOT NULL), 0), \
                COALESCE(SUM(takedown_ref IS NOT NULL), 0) FROM accounts",
    )
    .fetch_one(db)
    .await?;
    Ok(vec![("active", active), ("deactivated", deactivated), ("takendown", takendown)])
}

/// What is stored: records, bytes of repo blocks held in SQLite, blobs and their bytes.
pub async fn stored(db: &SqlitePool) -> Result<(i64, i64, i64, i64), sqlx::Error> {
    let (records,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM records").fetch_one(db).await?;
    let (block_bytes,): (i64,) =
        sqlx::query_as("SELECT COALESCE(SUM(length(bytes)), 0) FROM blocks").fetch_one(db).await?;
    let (blobs, blob_bytes): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs").fetch_one(db).await?;
    Ok((records, block_bytes, blobs, blob_bytes))
}

/// SQLite's quick integrity check: `ok`, or what is wrong.
pub async fn quick_check(db: &SqlitePool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("PRAGMA quick_check").fetch_one(db).await
}

/// One account's stored data.
#[derive(Debug, sqlx::FromRow)]
pub struct AccountStorage {
    pub did: String,
    pub handle: String,
    pub records: i64,
    pub blocks: i64,
    /// Bytes of the account's blocks held in SQLite (0 for blocks kept on IPFS).
    pub block_bytes: i64,
    pub blobs: i64,
    pub blob_bytes: i64,
}

/// Stored data per account (one, or all by DID), largest first.
pub async fn storage_by_account(db: &SqlitePool, did: Option<&str>) -> Result<Vec<AccountStorage>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.did, a.handle, \
            (SELECT COUNT(*) FROM records r WHERE r.did = a.did) AS records, \
            (SELECT COUNT(*) FROM repo_blocks rb WHERE rb.did = a.did) AS blocks, \
            (SELECT COALESCE(SUM(length(b.bytes)), 0) FROM repo_blocks rb JOIN blocks b ON b.cid = rb.cid \
                WHERE rb.did = a.did) AS block_bytes, \
            (SELECT COUNT(*) FROM blobs bl WHERE bl.did = a.did) AS blobs, \
            (SELECT COALESCE(SUM(bl.size), 0) FROM blobs bl WHERE bl.did = a.did) AS blob_bytes \
         FROM accounts a WHERE (?1 IS NULL OR a.did = ?1) ORDER BY block_bytes + blob_bytes DESC, a.did",
    )
    .bind(did)
    .fetch_all(db)
    .await
}

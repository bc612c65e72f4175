//! Which blocks and blobs each repo references, kept in step with the repo root inside the
//! transaction that moves it. This is what lets a block shared by several accounts (identical
//! records, the empty tree) be released only when the last one lets go of it, and what answers
//! getRepo from one indexed query.

use atproto::Cid;
use sqlx::SqliteConnection;

pub use super::batch::{Batch, batch, execute};

/// Records that the repo of `did` references `cids` as of `rev` (a block already referenced
/// moves to `rev`: it is new again for anyone syncing since an older revision).
pub fn push_add_blocks(q: &mut Batch, did: &str, rev: &str, cids: &[Cid]) {
    for chunk in cids.chunks(300) {
        q.push("INSERT OR REPLACE INTO repo_blocks (cid, did, rev) ");
        q.push_values(chunk, |mut row, cid| {
            row.push_bind(cid.to_string()).push_bind(did.to_owned()).push_bind(rev.to_owned());
        });
        q.push("; ");
    }
}

/// Replaces the blob references of one record (none for a deleted record).
pub fn push_set_record_blobs(q: &mut Batch, did: &str, collection: &str, rkey: &str, blobs: &[Cid], existed: bool) {
    if existed {
        q.push("DELETE FROM record_blobs WHERE did = ");
        q.push_bind(did.to_owned()).push(" AND collection = ");
        q.push_bind(collection.to_owned()).push(" AND rkey = ");
        q.push_bind(rkey.to_owned()).push("; ");
    }
    if !blobs.is_empty() {
        q.push("INSERT OR IGNORE INTO record_blobs (did, collection, rkey, cid) ");
        q.push_values(blobs, |mut row, cid| {
            row.push_bind(did.to_owned())
                .push_bind(collection.to_owned())
                .push_bind(rkey.to_owned())
                .push_bind(cid.to_string());
        });
        q.push("; ");
    }
}

/// Points the record index at `cid` for one key, written at revision `rev`, or removes the
/// key (`None`).
pub fn push_set_record(q: &mut Batch, did: &str, collection: &str, rkey: &str, cid: Option<Cid>, rev: &str, now: &str) {
    match cid {
        Some(cid) => {
            q.push("INSERT INTO records (did, collection, rkey, cid, rev, indexed_at) VALUES (");
            let mut values = q.separated(", ");
            values.push_bind(did.to_owned());
            values.push_bind(collection.to_owned());
            values.push_bind(rkey.to_owned());
            values.push_bind(cid.to_string());
            values.push_bind(rev.to_owned());
            values.push_bind(now.to_owned());
            q.push(
                ") ON CONFLICT (did, collection, rkey) DO UPDATE SET \
                 cid = excluded.cid, rev = excluded.rev, indexed_at = excluded.indexed_at; ",
            );
        }
        None => {
            q.push("DELETE FROM records WHERE did = ");
            q.push_bind(did.to_owned()).push(" AND collection = ");
            q.push_bind(collection.to_owned()).push(" AND rkey = ");
            q.push_bind(rkey.to_owned()).push("; ");
        }
    }
}

/// [`push_add_blocks`] on its own.
pub async fn add_blocks(conn: &mut SqliteConnection, did: &str, rev: &str, cids: &[Cid]) -> Result<(), sqlx::Error> {
    let mut q = batch();
    push_add_blocks(&mut q, did, rev, cids);
    execute(conn, q).await
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

/// The collections the repo of `did` holds records in, in order.
pub async fn collections(db: &sqlx::SqlitePool, did: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT collection FROM records WHERE did = ? ORDER BY collection")
            .bind(did)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// The CID of one record, if it exists.
pub async fn record_cid(
    db: &sqlx::SqlitePool,
    did: &str,
    collection: &str,
    rkey: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT cid FROM records WHERE did = ? AND collection = ? AND rkey = ?")
            .bind(did)
            .bind(collection)
            .bind(rkey)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(cid,)| cid))
}

/// A page of a collection's records as (rkey, cid): newest first, or oldest first when
/// `oldest_first`, after `cursor` (an rkey).
pub async fn records_page(
    db: &sqlx::SqlitePool,
    did: &str,
    collection: &str,
    cursor: Option<&str>,
    limit: i64,
    oldest_first: bool,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = if oldest_first {
        "SELECT rkey, cid FROM records WHERE did = ? AND collection = ? AND (? IS NULL OR rkey > ?) ORDER BY rkey ASC LIMIT ?"
    } else {
        "SELECT rkey, cid FROM records WHERE did = ? AND collection = ? AND (? IS NULL OR rkey < ?) ORDER BY rkey DESC LIMIT ?"
    };
    sqlx::query_as(sql).bind(did).bind(collection).bind(cursor).bind(cursor).bind(limit).fetch_all(db).await
}

/// The bytes of the blocks the repo of `did` references from revisions after `since`, bar
/// `except` (the head), streamed from the embedded store's `blocks` table.
pub fn block_bytes_since<'c>(
    conn: &'c mut SqliteConnection,
    did: &'c str,
    since: &'c str,
    except: &'c str,
) -> futures_util::stream::BoxStream<'c, Result<(String, Vec<u8>), sqlx::Error>> {
    sqlx::query_as::<_, (String, Vec<u8>)>(
        "SELECT r.cid, b.bytes FROM repo_blocks r JOIN blocks b ON b.cid = r.cid \
         WHERE r.did = ? AND r.rev > ? AND r.cid != ?",
    )
    .bind(did)
    .bind(since)
    .bind(except)
    .fetch(conn)
}

/// The CIDs of the blocks the repo of `did` references from revisions after `since`, bar
/// `except` (the head).
pub async fn block_cids_since(
    conn: &mut SqliteConnection,
    did: &str,
    since: &str,
    except: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT cid FROM repo_blocks WHERE did = ? AND rev > ? AND cid != ?")
        .bind(did)
        .bind(since)
        .bind(except)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// Records of `did` in `collection` written after revision `rev` (newest first, at most
/// `limit`): `(rkey, cid, rev, indexed_at)`.
pub async fn records_since(
    db: &sqlx::SqlitePool,
    did: &str,
    collection: &str,
    rev: &str,
    limit: i64,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rkey, cid, rev, indexed_at FROM records
         WHERE did = ? AND collection = ? AND rev > ? ORDER BY rev DESC LIMIT ?",
    )
    .bind(did)
    .bind(collection)
    .bind(rev)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What an account's repo holds, for `checkAccountStatus`.
pub struct RepoCounts {
    pub blocks: i64,
    pub records: i64,
    /// Distinct blobs its records reference, and how many of them were uploaded.
    pub expected_blobs: i64,
    pub imported_blobs: i64,
}

pub async fn repo_counts(db: &sqlx::SqlitePool, did: &str) -> Result<RepoCounts, sqlx::Error> {
    let (blocks, records, expected_blobs, imported_blobs): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM repo_blocks WHERE did = ?1),
                (SELECT COUNT(*) FROM records WHERE did = ?1),
                (SELECT COUNT(DISTINCT cid) FROM record_blobs WHERE did = ?1),
                (SELECT COUNT(DISTINCT r.cid) FROM record_blobs r
                  WHERE r.did = ?1 AND EXISTS (SELECT 1 FROM blobs b WHERE b.did = r.did AND b.cid = r.cid))",
    )
    .bind(did)
    .fetch_one(db)
    .await?;
    Ok(RepoCounts { blocks, records, expected_blobs, imported_blobs })
}

/// After an import at `rev`: removes what an earlier import left that this one does not hold
/// (records, their blob references, block references), so the trigger releases only blocks no
/// repo references any more.
pub async fn drop_older_than_import(conn: &mut SqliteConnection, did: &str, rev: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM records WHERE did = ? AND (rev IS NULL OR rev != ?)")
        .bind(did)
        .bind(rev)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM record_blobs WHERE did = ?1 AND NOT EXISTS \
         (SELECT 1 FROM records r WHERE r.did = ?1 AND r.collection = record_blobs.collection AND r.rkey = record_blobs.rkey)",
    )
    .bind(did)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM repo_blocks WHERE did = ? AND rev != ?").bind(did).bind(rev).execute(&mut *conn).await?;
    Ok(())
}

/// Whether any block the repo references is missing from the embedded block store.
pub async fn blocks_missing(conn: &mut SqliteConnection, did: &str) -> Result<bool, sqlx::Error> {
    let (missing,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM repo_blocks rb WHERE rb.did = ? \
         AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.cid = rb.cid))",
    )
    .bind(did)
    .fetch_one(&mut *conn)
    .await?;
    Ok(missing)
}

//! The firehose table, as other services read it.

use sqlx::SqlitePool;

/// The newest sequence number published, if any.
pub async fn newest_seq(db: &SqlitePool) -> Result<Option<i64>, sqlx::Error> {
    let (seq,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM firehose").fetch_one(db).await?;
    Ok(seq)
}

/// The oldest sequence number still kept, if any.
pub async fn oldest_seq(db: &SqlitePool) -> Result<Option<i64>, sqlx::Error> {
    let (seq,): (Option<i64>,) = sqlx::query_as("SELECT MIN(seq) FROM firehose").fetch_one(db).await?;
    Ok(seq)
}

/// The stored frames numbered after `after` and up to `upto`, in order.
pub async fn frames_between(db: &SqlitePool, after: i64, upto: i64) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, frame FROM firehose WHERE seq > ? AND seq <= ? ORDER BY seq")
        .bind(after)
        .bind(upto)
        .fetch_all(db)
        .await
}

/// Removes events older than `cutoff_millis`, always keeping the newest (so that the next
/// sequence number never goes backwards); returns how many went.
pub async fn delete_older_than(db: &SqlitePool, cutoff_millis: i64) -> Result<u64, sqlx::Error> {
    let swept =
        sqlx::query("DELETE FROM firehose WHERE created_at < ? AND seq < (SELECT COALESCE(MAX(seq), 0) FROM firehose)")
            .bind(cutoff_millis)
            .execute(db)
            .await?;
    Ok(swept.rows_affected())
}

/// Adds the statement storing `row` as number `seq` to a batch.
pub fn push_insert(q: &mut super::batch::Batch, seq: i64, row: &super::commits::EventRow) {
    q.push("INSERT INTO firehose (seq, did, kind, frame, created_at) VALUES (");
    let mut values = q.separated(", ");
    values.push_bind(seq);
    values.push_bind(row.did.clone());
    values.push_bind(row.kind);
    values.push_bind(row.frame.clone());
    values.push_bind(row.created_at);
    q.push("); ");
}

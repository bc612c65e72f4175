//! The firehose table, as other services read it.

use sqlx::SqlitePool;

/// The newest sequence number published, if any.
pub async fn newest_seq(db: &SqlitePool) -> Result<Option<i64>, sqlx::Error> {
    let (seq,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM firehose").fetch_one(db).await?;
    Ok(seq)
}

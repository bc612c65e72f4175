//! A batch of statements sent to SQLite in one round trip.

use sqlx::SqliteConnection;

/// Several statements sent to SQLite as one (each `;`-separated statement takes its share of
/// the bound values), so a write's transaction costs a few round trips to the database thread
/// rather than one per statement.
pub type Batch = sqlx::QueryBuilder<sqlx::Sqlite>;

pub fn batch() -> Batch {
    sqlx::QueryBuilder::new("")
}

/// Batches longer than this are not kept prepared. Their text changes with what they carry
/// (how many records and blocks), so keeping each one would fill every connection's statement
/// cache with large programs used once: about 80 MB after importing 10,000 records 200 at a
/// time, before this bound.
const KEEP_PREPARED_BELOW: usize = 2048;

/// Runs a batch (nothing to do when empty).
pub async fn execute(conn: &mut SqliteConnection, mut batch: Batch) -> Result<(), sqlx::Error> {
    let sql = batch.sql();
    if sql.as_str().trim().is_empty() {
        return Ok(());
    }
    let keep = sql.as_str().len() < KEEP_PREPARED_BELOW;
    batch.build().persistent(keep).execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    #[tokio::test]
    async fn large_batches_are_not_kept_prepared() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)").execute(&mut conn).await.unwrap();
        let before = conn.cached_statements_size();
        // Batches of different sizes, each its own text, as a commit of n records makes.
        for n in 100..120 {
            let mut b = super::batch();
            for i in 0..n {
                b.push("INSERT INTO t (n) VALUES (").push_bind(i).push("); ");
            }
            super::execute(&mut conn, b).await.unwrap();
        }
        assert_eq!(conn.cached_statements_size(), before, "one-off batches stay out of the cache");
        // A small one, the same every time, is kept.
        for _ in 0..3 {
            let mut b = super::batch();
            b.push("INSERT INTO t (n) VALUES (").push_bind(1).push("); ");
            super::execute(&mut conn, b).await.unwrap();
        }
        assert_eq!(conn.cached_statements_size(), before + 1);
    }
}

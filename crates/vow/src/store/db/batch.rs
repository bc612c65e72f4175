//! A batch of statements sent to SQLite in one round trip.

use sqlx::SqliteConnection;

/// Several statements sent to SQLite as one (each `;`-separated statement takes its share of
/// the bound values), so a write's transaction costs a few round trips to the database thread
/// rather than one per statement.
pub type Batch = sqlx::QueryBuilder<sqlx::Sqlite>;

pub fn batch() -> Batch {
    sqlx::QueryBuilder::new("")
}

/// Runs a batch (nothing to do when empty).
pub async fn execute(conn: &mut SqliteConnection, mut batch: Batch) -> Result<(), sqlx::Error> {
    if batch.sql().as_str().trim().is_empty() {
        return Ok(());
    }
    batch.build().execute(&mut *conn).await?;
    Ok(())
}

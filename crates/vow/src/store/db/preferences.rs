//! Account preferences (`app.bsky.actor.getPreferences` / `putPreferences`).

use sqlx::SqlitePool;

/// The stored preferences of `did`, as the JSON array text, if any were ever put.
pub async fn get(db: &SqlitePool, did: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT prefs FROM preferences WHERE did = ?").bind(did).fetch_optional(db).await?;
    Ok(row.map(|(p,)| p))
}

/// Replaces the preferences of `did` with `prefs` (a JSON array text).
pub async fn put(db: &SqlitePool, did: &str, prefs: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO preferences (did, prefs) VALUES (?, ?) ON CONFLICT (did) DO UPDATE SET prefs = excluded.prefs",
    )
    .bind(did)
    .bind(prefs)
    .execute(db)
    .await?;
    Ok(())
}

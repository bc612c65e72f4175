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

//! App password rows.

use sqlx::SqlitePool;

/// An app password of an account.
pub struct AppPassword {
    pub name: String,
    pub password_hash: String,
    pub privileged: bool,
    pub created_at: String,
}

/// The account's app passwords, oldest first.
pub async fn of(db: &SqlitePool, did: &str) -> Result<Vec<AppPassword>, sqlx::Error> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT name, password_hash, privileged, created_at FROM app_passwords WHERE did = ? ORDER BY created_at",
    )
    .bind(did)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, password_hash, privileged, created_at)| AppPassword {
            name,
            password_hash,
            privileged: privileged != 0,
            created_at,
        })
        .collect())
}

/// Adds one; false when the account already has one of that name.
pub async fn insert(
    db: &SqlitePool,
    did: &str,
    name: &str,
    hash: &str,
    privileged: bool,
    created_at: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO app_passwords (did, name, password_hash, privileged, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(did)
    .bind(name)
    .bind(hash)
    .bind(privileged)
    .bind(created_at)
    .execute(db)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes one.
pub async fn delete(executor: impl sqlx::SqliteExecutor<'_>, did: &str, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM app_passwords WHERE did = ? AND name = ?").bind(did).bind(name).execute(executor).await?;
    Ok(())
}

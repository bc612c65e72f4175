//! Single-use challenges: key-registration ceremonies, and (stored hashed) the tokens mailed for
//! identity operations.

use sqlx::SqlitePool;

/// Stores a challenge for `did` and `purpose` until `expires_at` (unix seconds), dropping
/// expired ones on the way.
pub async fn insert(
    db: &SqlitePool,
    challenge: &str,
    did: &str,
    purpose: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    // Expired rows stay a day, so a late code is told it expired rather than that it is wrong.
    sqlx::query("DELETE FROM key_challenges WHERE expires_at < ?")
        .bind(super::unix_now() - 24 * 60 * 60)
        .execute(db)
        .await?;
    sqlx::query("INSERT INTO key_challenges (challenge, did, purpose, expires_at) VALUES (?, ?, ?, ?)")
        .bind(challenge)
        .bind(did)
        .bind(purpose)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Uses up a live challenge issued to `did` for `purpose`; false when there is none.
pub async fn take(db: &SqlitePool, challenge: &str, did: &str, purpose: &str) -> Result<bool, sqlx::Error> {
    let used =
        sqlx::query("DELETE FROM key_challenges WHERE challenge = ? AND did = ? AND purpose = ? AND expires_at >= ?")
            .bind(challenge)
            .bind(did)
            .bind(purpose)
            .bind(super::unix_now())
            .execute(db)
            .await?;
    Ok(used.rows_affected() == 1)
}

/// Like [`insert`], but the new challenge replaces any other live one for `did` and `purpose`:
/// for mailed tokens, where only the newest should work.
pub async fn insert_replacing(
    db: &SqlitePool,
    challenge: &str,
    did: &str,
    purpose: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM key_challenges WHERE did = ? AND purpose = ?")
        .bind(did)
        .bind(purpose)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO key_challenges (challenge, did, purpose, expires_at) VALUES (?, ?, ?, ?)")
        .bind(challenge)
        .bind(did)
        .bind(purpose)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The account and expiry of a challenge stored for `purpose`, live or not.
pub async fn lookup(db: &SqlitePool, challenge: &str, purpose: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT did, expires_at FROM key_challenges WHERE challenge = ? AND purpose = ?")
        .bind(challenge)
        .bind(purpose)
        .fetch_optional(db)
        .await
}

/// Removes a challenge whatever its expiry; false when it was not there (used meanwhile).
pub async fn remove(db: &SqlitePool, challenge: &str, did: &str, purpose: &str) -> Result<bool, sqlx::Error> {
    let gone = sqlx::query("DELETE FROM key_challenges WHERE challenge = ? AND did = ? AND purpose = ?")
        .bind(challenge)
        .bind(did)
        .bind(purpose)
        .execute(db)
        .await?;
    Ok(gone.rows_affected() == 1)
}

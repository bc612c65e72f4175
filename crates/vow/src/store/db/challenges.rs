//! Single-use key-registration challenges.

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
    sqlx::query("DELETE FROM key_challenges WHERE expires_at < ?").bind(super::unix_now()).execute(db).await?;
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

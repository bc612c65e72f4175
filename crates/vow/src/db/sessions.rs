//! Session rows.

use sqlx::SqlitePool;

/// Whether the session `id` of `did` still exists (it ends at sign-out, reuse of an old
/// refresh token, or a password reset).
pub async fn is_live(db: &SqlitePool, id: &str, did: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT refresh_jti FROM sessions WHERE id = ? AND did = ?")
        .bind(id)
        .bind(did)
        .fetch_optional(db)
        .await?;
    Ok(row.is_some())
}

//! Stored service-auth tokens (see `service::service_auth`).

use sqlx::SqlitePool;

/// A stored token for `(did, aud, lxm)` signed by `signing_key` and valid past `after`
/// (unix seconds), with its expiry.
pub async fn valid(
    db: &SqlitePool,
    did: &str,
    aud: &str,
    lxm: &str,
    signing_key: &str,
    after: i64,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT token, expires_at FROM service_tokens
         WHERE did = ? AND aud = ? AND lxm = ? AND signing_key = ? AND expires_at > ?",
    )
    .bind(did)
    .bind(aud)
    .bind(lxm)
    .bind(signing_key)
    .bind(after)
    .fetch_optional(db)
    .await
}

/// The expiry of every stored token of `did` signed by `signing_key`, by `(aud, lxm)`.
pub async fn expiries(
    db: &SqlitePool,
    did: &str,
    signing_key: &str,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT aud, lxm, expires_at FROM service_tokens WHERE did = ? AND signing_key = ?")
        .bind(did)
        .bind(signing_key)
        .fetch_all(db)
        .await
}

/// Stores (or replaces) the token for `(did, aud, lxm)`.
pub async fn put(
    db: &SqlitePool,
    did: &str,
    aud: &str,
    lxm: &str,
    signing_key: &str,
    token: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_tokens (did, aud, lxm, signing_key, token, expires_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (did, aud, lxm) DO UPDATE SET
           signing_key = excluded.signing_key, token = excluded.token, expires_at = excluded.expires_at",
    )
    .bind(did)
    .bind(aud)
    .bind(lxm)
    .bind(signing_key)
    .bind(token)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Removes every stored token of `did`; returns how many.
pub async fn discard(executor: impl sqlx::SqliteExecutor<'_>, did: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM service_tokens WHERE did = ?").bind(did).execute(executor).await?.rows_affected())
}

/// Removes expired tokens of every account.
pub async fn delete_expired(db: &SqlitePool, now: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM service_tokens WHERE expires_at <= ?").bind(now).execute(db).await?.rows_affected())
}

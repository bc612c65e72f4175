//! Session rows.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqlitePool;

/// How many times sessions have been ended in this process. A cache of live sessions notes
/// the count before it asks [`is_live`], and trusts the answer only while the count stays
/// the same: every statement here that ends sessions moves it.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// The count of session endings so far (read it before asking [`is_live`]).
pub fn endings() -> u64 {
    ENDED.load(Ordering::Acquire)
}

/// Counts an ending of sessions. The statements here that delete sessions call it; a caller
/// whose transaction deleted them calls it once more after the commit, since a check that
/// read the rows between the statement and the commit still saw them.
pub fn ended() {
    ENDED.fetch_add(1, Ordering::AcqRel);
}

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

/// A new session row; `expires_at` in unix seconds.
pub async fn insert(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
    did: &str,
    app_password: Option<&str>,
    refresh_jti: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, did, app_password_name, refresh_jti, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(did)
    .bind(app_password)
    .bind(refresh_jti)
    .bind(super::now())
    .bind(expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Moves the session's refresh token from `old` to `new`; false when `old` is not current
/// (already used: a replay).
pub async fn rotate_refresh(db: &SqlitePool, id: &str, old: &str, new: &str) -> Result<bool, sqlx::Error> {
    let rotated = sqlx::query("UPDATE sessions SET refresh_jti = ? WHERE id = ? AND refresh_jti = ?")
        .bind(new)
        .bind(id)
        .bind(old)
        .execute(db)
        .await?;
    Ok(rotated.rows_affected() == 1)
}

/// Ends one session.
pub async fn delete(db: &SqlitePool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id = ?").bind(id).execute(db).await?;
    ended();
    Ok(())
}

/// Ends the sessions opened with an app password (in a transaction: call [`ended`] after
/// the commit).
pub async fn delete_for_app_password(
    executor: impl sqlx::SqliteExecutor<'_>,
    did: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE did = ? AND app_password_name = ?")
        .bind(did)
        .bind(name)
        .execute(executor)
        .await?;
    ended();
    Ok(())
}

/// Whether the session was opened with an app password, and if so whether a privileged one.
pub async fn app_password_of(db: &SqlitePool, id: &str) -> Result<Option<bool>, sqlx::Error> {
    let row: Option<(Option<String>, i64)> = sqlx::query_as(
        "SELECT s.app_password_name, COALESCE(a.privileged, 0) FROM sessions s \
         LEFT JOIN app_passwords a ON a.did = s.did AND a.name = s.app_password_name WHERE s.id = ?",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(name, privileged)| name.map(|_| privileged != 0)))
}

/// Ends every session of an account.
pub async fn delete_all(db: &SqlitePool, did: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE did = ?").bind(did).execute(db).await?;
    ended();
    Ok(())
}

/// How many sessions `did` has.
pub async fn count(db: &SqlitePool, did: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE did = ?").bind(did).fetch_one(db).await?;
    Ok(n)
}

/// One session as the account page lists it.
pub struct Listed {
    pub id: String,
    pub app_password_name: Option<String>,
    /// The app, for a session opened through OAuth.
    pub oauth_client: Option<String>,
    pub created_at: String,
}

/// The account's live sessions, newest first.
pub async fn list(db: &SqlitePool, did: &str) -> Result<Vec<Listed>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT id, app_password_name, oauth_client, created_at FROM sessions WHERE did = ? AND expires_at > ? \
         ORDER BY created_at DESC",
    )
    .bind(did)
    .bind(super::unix_now())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, app_password_name, oauth_client, created_at)| Listed {
            id,
            app_password_name,
            oauth_client,
            created_at,
        })
        .collect())
}

/// Ends one session of `did`; false when it has no such session.
pub async fn delete_of(db: &SqlitePool, did: &str, id: &str) -> Result<bool, sqlx::Error> {
    let gone = sqlx::query("DELETE FROM sessions WHERE id = ? AND did = ?").bind(id).bind(did).execute(db).await?;
    ended();
    Ok(gone.rows_affected() == 1)
}

//! OAuth rows: consents, and the OAuth side of sessions. (Pushed requests and their codes live
//! in memory: `service::oauth::requests`.)

use sqlx::SqlitePool;

pub async fn consent(db: &SqlitePool, did: &str, client_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT scope FROM oauth_consents WHERE did = ? AND client_id = ?")
        .bind(did)
        .bind(client_id)
        .fetch_optional(db)
        .await
}

pub async fn set_consent(db: &SqlitePool, did: &str, client_id: &str, scope: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oauth_consents (did, client_id, scope) VALUES (?, ?, ?) \
         ON CONFLICT (did, client_id) DO UPDATE SET scope = excluded.scope",
    )
    .bind(did)
    .bind(client_id)
    .bind(scope)
    .execute(db)
    .await?;
    Ok(())
}

/// A session's OAuth side: its client, scope and DPoP key thumbprint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OauthSession {
    pub did: String,
    pub refresh_jti: String,
    pub oauth_client: String,
    pub oauth_scope: String,
    pub dpop_jkt: String,
}

/// Records an OAuth session (a `sessions` row with its client, scope and key).
#[allow(clippy::too_many_arguments)]
pub async fn insert_session(
    db: &SqlitePool,
    id: &str,
    did: &str,
    refresh_jti: &str,
    expires_at: i64,
    client: &str,
    scope: &str,
    jkt: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, did, refresh_jti, created_at, expires_at, oauth_client, oauth_scope, dpop_jkt) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(did)
    .bind(refresh_jti)
    .bind(super::now())
    .bind(expires_at)
    .bind(client)
    .bind(scope)
    .bind(jkt)
    .execute(db)
    .await?;
    Ok(())
}

/// The OAuth session with this id, if it is live.
pub async fn session(db: &SqlitePool, id: &str) -> Result<Option<OauthSession>, sqlx::Error> {
    sqlx::query_as(
        "SELECT did, refresh_jti, oauth_client, oauth_scope, dpop_jkt FROM sessions \
         WHERE id = ? AND oauth_client IS NOT NULL AND expires_at >= ?",
    )
    .bind(id)
    .bind(super::unix_now())
    .fetch_optional(db)
    .await
}

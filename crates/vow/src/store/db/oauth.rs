//! OAuth rows: pushed authorization requests and their codes, consents, and the OAuth side of
//! sessions.

use sqlx::SqlitePool;

/// A pushed authorization request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Request {
    pub id: String,
    pub client_id: String,
    /// JSON: redirect_uri, scope, state, code_challenge, login_hint.
    pub parameters: String,
    pub dpop_jkt: String,
    pub expires_at: i64,
    pub did: Option<String>,
    pub code: Option<String>,
}

pub async fn insert_request(
    db: &SqlitePool,
    id: &str,
    client_id: &str,
    parameters: &str,
    dpop_jkt: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    // Expired requests are cleared now and then (one insert in 64), not on every push.
    if rand::random::<u8>() < 4 {
        sqlx::query("DELETE FROM oauth_requests WHERE expires_at < ?").bind(super::unix_now()).execute(db).await?;
    }
    sqlx::query("INSERT INTO oauth_requests (id, client_id, parameters, dpop_jkt, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(id)
        .bind(client_id)
        .bind(parameters)
        .bind(dpop_jkt)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// A live request not yet approved.
pub async fn pending(db: &SqlitePool, id: &str) -> Result<Option<Request>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM oauth_requests WHERE id = ? AND expires_at >= ? AND code IS NULL")
        .bind(id)
        .bind(super::unix_now())
        .fetch_optional(db)
        .await
}

/// Approves a pending request for `did` with the (hashed) code, which lives until
/// `expires_at`; false when it was not pending any more.
pub async fn approve(db: &SqlitePool, id: &str, did: &str, code: &str, expires_at: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE oauth_requests SET did = ?, code = ?, expires_at = ? WHERE id = ? AND code IS NULL AND expires_at >= ?",
    )
    .bind(did)
    .bind(code)
    .bind(expires_at)
    .bind(id)
    .bind(super::unix_now())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Uses up an approved request by its (hashed) code: single use, live only.
pub async fn take_code(db: &SqlitePool, code: &str) -> Result<Option<Request>, sqlx::Error> {
    sqlx::query_as("DELETE FROM oauth_requests WHERE code = ? AND expires_at >= ? RETURNING *")
        .bind(code)
        .bind(super::unix_now())
        .fetch_optional(db)
        .await
}

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

/// Removes a request (declined).
pub async fn delete_request(db: &SqlitePool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oauth_requests WHERE id = ?").bind(id).execute(db).await?;
    Ok(())
}

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

/// Records an OAuth session (a `sessions` row with its client, scope and key), only while the
/// account exists and is not taken down (false otherwise), as [`super::sessions::insert`].
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
) -> Result<bool, sqlx::Error> {
    let made = sqlx::query(
        "INSERT INTO sessions (id, did, refresh_jti, created_at, expires_at, oauth_client, oauth_scope, dpop_jkt) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
         WHERE EXISTS (SELECT 1 FROM accounts WHERE did = ?2 AND takedown_ref IS NULL)",
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
    Ok(made.rows_affected() == 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A code approved before a takedown and exchanged after it makes no session.
    #[tokio::test]
    async fn no_oauth_session_for_an_account_taken_down_or_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::open(&dir.path().join("t.db")).await.unwrap();
        sqlx::query(
            "INSERT INTO accounts (did, handle, password_hash, created_at, takedown_ref) \
             VALUES ('did:a', 'a.test', 'x', 'now', 'ticket-1')",
        )
        .execute(&db)
        .await
        .unwrap();
        let made = |did: &'static str, id: &'static str| {
            let db = db.clone();
            async move { insert_session(&db, id, did, "J", i64::MAX, "https://app.test/m.json", "atproto", "K").await }
        };
        assert!(!made("did:a", "S1").await.unwrap());
        assert!(session(&db, "S1").await.unwrap().is_none(), "a taken-down account got a session");
        assert!(!made("did:gone", "S2").await.unwrap());
        sqlx::query("UPDATE accounts SET takedown_ref = NULL").execute(&db).await.unwrap();
        assert!(made("did:a", "S3").await.unwrap());
        assert!(session(&db, "S3").await.unwrap().is_some());
    }
}

//! Session rows.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqlitePool;

/// How many times sessions have been ended in this process. A cache of live sessions notes
/// the count before it asks [`is_live`], and trusts the answer only while the count stays
/// the same: every statement here that ends a session moves it. One that ended none (a
/// revocation of a session that does not exist) leaves it, so no one can empty the cache
/// for every account by asking for nothing.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// The count of session endings so far (read it before asking [`is_live`]).
pub fn endings() -> u64 {
    ENDED.load(Ordering::Acquire)
}

/// Counts an ending of sessions. Statements that delete sessions inside a transaction call
/// it; the transaction is then committed with [`commit_ending`], which counts again after the
/// commit, since a check that read the rows between the statement and the commit still saw
/// them.
pub(super) fn ended() {
    ENDED.fetch_add(1, Ordering::AcqRel);
}

/// Runs `work`, which may end sessions, to its end on a task of its own and counts the ending
/// after it, unless `work` says it ended none. Were the request that asked dropped meanwhile
/// (its client gone), the statement would still run on the connection's thread, and the count
/// would never move. A failure counts: what it left behind is not known.
async fn ending<T: Send + 'static>(
    work: impl Future<Output = Result<(T, bool), sqlx::Error>> + Send + 'static,
) -> Result<T, sqlx::Error> {
    tokio::spawn(async move {
        let done = work.await;
        if !matches!(done, Ok((_, false))) {
            ended();
        }
        done.map(|(value, _)| value)
    })
    .await
    .unwrap_or_else(|e| Err(sqlx::Error::Protocol(format!("ending sessions: {e}"))))
}

/// Commits a transaction that deleted sessions, then counts the ending (see [`ending`]);
/// `ended_any` false (its statements deleted no session) commits without counting.
pub async fn commit_ending(tx: sqlx::Transaction<'static, sqlx::Sqlite>, ended_any: bool) -> Result<(), sqlx::Error> {
    ending(async move { tx.commit().await.map(|()| ((), ended_any)) }).await
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

/// A new session row; `expires_at` in unix seconds. Made only while the account exists and is
/// not taken down, checked in the same statement: a takedown that commits while a sign-in is
/// checking its password either comes first, and no session is made (false), or ends this one.
pub async fn insert(
    executor: impl sqlx::SqliteExecutor<'_>,
    id: &str,
    did: &str,
    app_password: Option<&str>,
    refresh_jti: &str,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    let made = sqlx::query(
        "INSERT INTO sessions (id, did, app_password_name, refresh_jti, created_at, expires_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM accounts WHERE did = ?2 AND takedown_ref IS NULL)",
    )
    .bind(id)
    .bind(did)
    .bind(app_password)
    .bind(refresh_jti)
    .bind(super::now())
    .bind(expires_at)
    .execute(executor)
    .await?;
    Ok(made.rows_affected() == 1)
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
    let (db, id) = (db.clone(), id.to_owned());
    ending(async move {
        let gone = sqlx::query("DELETE FROM sessions WHERE id = ?").bind(id).execute(&db).await?;
        Ok(((), gone.rows_affected() > 0))
    })
    .await
}

/// Ends the sessions opened with an app password, inside a transaction; whether it ended any
/// (commit with [`commit_ending`], passing it on).
pub async fn delete_for_app_password(
    executor: &mut sqlx::SqliteConnection,
    did: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let gone = sqlx::query("DELETE FROM sessions WHERE did = ? AND app_password_name = ?")
        .bind(did)
        .bind(name)
        .execute(executor)
        .await?;
    let ended_any = gone.rows_affected() > 0;
    if ended_any {
        ended();
    }
    Ok(ended_any)
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
    let (db, did) = (db.clone(), did.to_owned());
    ending(async move {
        let gone = sqlx::query("DELETE FROM sessions WHERE did = ?").bind(did).execute(&db).await?;
        Ok(((), gone.rows_affected() > 0))
    })
    .await
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
    let (db, did, id) = (db.clone(), did.to_owned(), id.to_owned());
    ending(async move {
        let gone = sqlx::query("DELETE FROM sessions WHERE id = ? AND did = ?").bind(id).bind(did).execute(&db).await?;
        let ended = gone.rows_affected() == 1;
        Ok((ended, ended))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// The count is the process's: the tests that watch it take turns. (No other unit test
    /// ends sessions.)
    static WATCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn with_session(dir: &tempfile::TempDir) -> SqlitePool {
        let db = super::super::open(&dir.path().join("t.db")).await.unwrap();
        sqlx::query(
            "INSERT INTO accounts (did, handle, password_hash, created_at) VALUES ('did:a', 'a.test', 'x', 'now')",
        )
        .execute(&db)
        .await
        .unwrap();
        assert!(insert(&db, "S1", "did:a", None, "J1", i64::MAX).await.unwrap());
        db
    }

    /// Asking to end sessions that do not exist leaves the count (and so every account's
    /// remembered sessions) alone; ending one moves it.
    #[tokio::test]
    async fn ending_nothing_is_not_counted() {
        let _turn = WATCHING.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let db = with_session(&dir).await;
        let before = endings();
        assert!(!delete_of(&db, "did:a", "no-such-session").await.unwrap());
        delete(&db, "no-such-session").await.unwrap();
        delete_all(&db, "did:nobody").await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert!(!delete_for_app_password(&mut tx, "did:a", "no-such-app-password").await.unwrap());
        commit_ending(tx, false).await.unwrap();
        assert_eq!(endings(), before, "nothing was ended, yet the count moved");
        assert!(delete_of(&db, "did:a", "S1").await.unwrap());
        assert!(endings() > before);
    }

    /// A sign-in whose password check overlapped a takedown makes no session once the
    /// takedown has committed (nor for an account that is gone).
    #[tokio::test]
    async fn no_session_is_made_for_an_account_taken_down_or_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = with_session(&dir).await;
        sqlx::query("UPDATE accounts SET takedown_ref = 'ticket-1' WHERE did = 'did:a'").execute(&db).await.unwrap();
        assert!(!insert(&db, "S2", "did:a", None, "J2", i64::MAX).await.unwrap());
        assert!(!is_live(&db, "S2", "did:a").await.unwrap(), "a taken-down account got a session");
        assert!(!insert(&db, "S3", "did:gone", None, "J3", i64::MAX).await.unwrap());
        assert!(!is_live(&db, "S3", "did:gone").await.unwrap());
        sqlx::query("UPDATE accounts SET takedown_ref = NULL WHERE did = 'did:a'").execute(&db).await.unwrap();
        assert!(insert(&db, "S4", "did:a", None, "J4", i64::MAX).await.unwrap());
        assert!(is_live(&db, "S4", "did:a").await.unwrap());
    }

    /// A deletion whose caller is dropped after it started still lands and is still counted,
    /// so a cache of live sessions cannot go on trusting the deleted one.
    #[tokio::test]
    async fn an_ending_is_counted_even_when_its_caller_goes_away() {
        let _turn = WATCHING.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let db = with_session(&dir).await;
        let before = endings();
        // Polled once, then dropped: the request that asked is gone.
        assert!(delete(&db, "S1").now_or_never().is_none(), "the deletion needs the connection's thread");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while endings() == before {
            assert!(std::time::Instant::now() < deadline, "the ending was never counted");
            tokio::task::yield_now().await;
        }
        assert!(!is_live(&db, "S1", "did:a").await.unwrap());
    }
}

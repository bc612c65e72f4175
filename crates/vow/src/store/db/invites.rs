//! Invite codes and their uses.

use sqlx::{SqliteConnection, SqlitePool};

/// An invite code as `getAccountInviteCodes` lists it.
pub struct InviteCode {
    pub code: String,
    pub available: i64,
    pub disabled: bool,
    pub for_account: String,
    pub created_by: String,
    pub created_at: String,
}

/// Whether `code` exists, is enabled and has uses left.
pub async fn is_usable(db: &SqlitePool, code: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT available, disabled FROM invite_codes WHERE code = ?")
        .bind(code)
        .fetch_optional(db)
        .await?;
    Ok(matches!(row, Some((available, 0)) if available > 0))
}

/// Uses `code` once for `did`; false when it has no use left (or is disabled).
pub async fn take_use(conn: &mut SqliteConnection, code: &str, did: &str) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE invite_codes SET available = available - 1 WHERE code = ? AND available > 0 AND disabled = 0",
    )
    .bind(code)
    .execute(&mut *conn)
    .await?;
    if taken.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO invite_code_uses (code, used_by, used_at) VALUES (?, ?, ?)")
        .bind(code)
        .bind(did)
        .bind(super::now())
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// A new code with `uses` uses, belonging to `for_account` (a DID, or `admin`).
pub async fn insert(db: &SqlitePool, code: &str, for_account: &str, uses: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invite_codes (code, for_account, created_by, available, created_at) VALUES (?, ?, 'admin', ?, ?)",
    )
    .bind(code)
    .bind(for_account)
    .bind(uses)
    .bind(super::now())
    .execute(db)
    .await?;
    Ok(())
}

/// The codes that belong to `did`, oldest first.
pub async fn of_account(db: &SqlitePool, did: &str) -> Result<Vec<InviteCode>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT code, available, disabled, for_account, created_by, created_at FROM invite_codes \
         WHERE for_account = ? ORDER BY created_at",
    )
    .bind(did)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(code, available, disabled, for_account, created_by, created_at)| InviteCode {
            code,
            available,
            disabled: disabled != 0,
            for_account,
            created_by,
            created_at,
        })
        .collect())
}

/// Who used `code`, and when.
pub async fn uses_of(db: &SqlitePool, code: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT used_by, used_at FROM invite_code_uses WHERE code = ?").bind(code).fetch_all(db).await
}

/// Every invite code, newest first, after `cursor` (a creation time), at most `limit`.
pub async fn page(db: &SqlitePool, cursor: Option<&str>, limit: i64) -> Result<Vec<InviteCode>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT code, available, disabled, for_account, created_by, created_at FROM invite_codes \
         WHERE (? IS NULL OR created_at < ?) ORDER BY created_at DESC, code LIMIT ?",
    )
    .bind(cursor)
    .bind(cursor)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(code, available, disabled, for_account, created_by, created_at)| InviteCode {
            code,
            available,
            disabled: disabled != 0,
            for_account,
            created_by,
            created_at,
        })
        .collect())
}

/// Disables the codes named, and every code of the accounts named; returns how many changed.
pub async fn disable(db: &SqlitePool, codes: &[String], accounts: &[String]) -> Result<u64, sqlx::Error> {
    let mut changed = 0;
    for code in codes {
        changed += sqlx::query("UPDATE invite_codes SET disabled = 1 WHERE code = ?")
            .bind(code)
            .execute(db)
            .await?
            .rows_affected();
    }
    for account in accounts {
        changed += sqlx::query("UPDATE invite_codes SET disabled = 1 WHERE for_account = ?")
            .bind(account)
            .execute(db)
            .await?
            .rows_affected();
    }
    Ok(changed)
}

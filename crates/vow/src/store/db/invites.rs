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
/// One page of every code, newest first (ties by code), after `cursor` (see [`page_cursor`]).
pub async fn page(db: &SqlitePool, cursor: Option<&str>, limit: i64) -> Result<Vec<InviteCode>, sqlx::Error> {
    // A cursor is `created_at::code` of the last code of the previous page; a bare time (what
    // earlier versions handed out) resumes after every code of that time.
    let (after_time, after_code) = match cursor {
        Some(c) => match c.split_once("::") {
            Some((time, code)) => (Some(time), Some(code)),
            None => (Some(c), None),
        },
        None => (None, None),
    };
    let rows: Vec<(String, i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT code, available, disabled, for_account, created_by, created_at FROM invite_codes \
         WHERE ?1 IS NULL OR created_at < ?1 OR (created_at = ?1 AND ?2 IS NOT NULL AND code > ?2) \
         ORDER BY created_at DESC, code LIMIT ?3",
    )
    .bind(after_time)
    .bind(after_code)
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

/// The cursor for the page after `page`, when it was full (`limit` codes).
pub fn page_cursor(page: &[InviteCode], limit: i64) -> Option<String> {
    let last = page.last().filter(|_| page.len() as i64 == limit)?;
    Some(format!("{}::{}", last.created_at, last.code))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes made in one call share their creation time; paging through them by that time
    /// alone would skip those beyond the first page.
    #[tokio::test]
    async fn paging_reaches_every_code_made_at_the_same_moment() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::open(&dir.path().join("t.db")).await.unwrap();
        for i in 0..7 {
            sqlx::query(
                "INSERT INTO invite_codes (code, for_account, created_by, available, created_at) \
                 VALUES (?, 'admin', 'admin', 1, ?)",
            )
            .bind(format!("code-{i}"))
            .bind(if i < 5 { "2026-12-06T10:00:00.000Z" } else { "2026-12-06T09:00:00.000Z" })
            .execute(&db)
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = page(&db, cursor.as_deref(), 2).await.unwrap();
            seen.extend(page.iter().map(|c| c.code.clone()));
            match page_cursor(&page, 2) {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(seen.len() <= 7, "paging went round: {seen:?}");
        }
        let expected: Vec<String> = (0..7).map(|i| format!("code-{i}")).collect();
        assert_eq!(seen, expected, "newest first, then by code, each once");
    }
}

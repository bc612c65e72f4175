//! Account rows.

use sqlx::SqlitePool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub did: String,
    pub handle: String,
    pub email: Option<String>,
    pub email_confirmed_at: Option<String>,
    pub password_hash: String,
    pub signing_key: Option<String>,
    pub repo_root: Option<String>,
    pub repo_rev: Option<String>,
    pub deactivated_at: Option<String>,
    pub created_at: String,
    pub passkey_credential_id: Option<String>,
    pub passkey_public_key: Option<Vec<u8>>,
    pub takedown_ref: Option<String>,
}

impl Account {
    pub fn active(&self) -> bool {
        self.status().is_none()
    }

    /// Why the repo is not served, as `getRepoStatus` names it; `None` when active.
    pub fn status(&self) -> Option<&'static str> {
        status_of(self.takedown_ref.is_some(), self.deactivated_at.is_some())
    }
}

/// The status of an account taken down and/or deactivated (a takedown wins).
pub fn status_of(taken_down: bool, deactivated: bool) -> Option<&'static str> {
    match (taken_down, deactivated) {
        (true, _) => Some("takendown"),
        (false, true) => Some("deactivated"),
        (false, false) => None,
    }
}

pub async fn by_did(db: &SqlitePool, did: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM accounts WHERE did = ?").bind(did).fetch_optional(db).await
}

pub async fn by_handle(db: &SqlitePool, handle: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM accounts WHERE handle = ?").bind(handle.to_ascii_lowercase()).fetch_optional(db).await
}

pub async fn by_email(db: &SqlitePool, email: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM accounts WHERE email = ?").bind(email.to_ascii_lowercase()).fetch_optional(db).await
}

/// Finds an account by DID, handle or email, as createSession's `identifier` allows.
pub async fn by_identifier(db: &SqlitePool, identifier: &str) -> Result<Option<Account>, sqlx::Error> {
    let id = identifier.trim();
    if id.starts_with("did:") {
        by_did(db, id).await
    } else if id.contains('@') {
        by_email(db, id).await
    } else {
        by_handle(db, id).await
    }
}

/// The account's repo root (its head commit's CID), if it has a repo.
pub async fn repo_root(db: impl sqlx::SqliteExecutor<'_>, did: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT repo_root FROM accounts WHERE did = ?").bind(did).fetch_optional(db).await?;
    Ok(row.and_then(|(root,)| root))
}

/// An account arriving with its DID from another PDS: deactivated, without a repo until its
/// repo is imported.
pub async fn insert_migrating(
    conn: &mut sqlx::SqliteConnection,
    did: &str,
    handle: &str,
    email: &str,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    let now = super::now();
    sqlx::query(
        "INSERT INTO accounts (did, handle, email, password_hash, deactivated_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(did)
    .bind(handle)
    .bind(email.to_ascii_lowercase())
    .bind(password_hash)
    .bind(&now)
    .bind(&now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the account's deactivation.
pub async fn activate(conn: &mut sqlx::SqliteConnection, did: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET deactivated_at = NULL WHERE did = ?").bind(did).execute(conn).await?;
    Ok(())
}

/// Deactivates the account (its user asked, or it moved away); a no-op if it already is.
pub async fn deactivate(conn: &mut sqlx::SqliteConnection, did: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET deactivated_at = ? WHERE did = ? AND deactivated_at IS NULL")
        .bind(super::now())
        .bind(did)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the repo root and revision outright (an imported repo).
pub async fn set_repo(conn: &mut sqlx::SqliteConnection, did: &str, root: &str, rev: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET repo_root = ?, repo_rev = ? WHERE did = ?")
        .bind(root)
        .bind(rev)
        .bind(did)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert(
    conn: &mut sqlx::SqliteConnection,
    did: &str,
    handle: &str,
    email: &str,
    password_hash: &str,
    root: &str,
    rev: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO accounts (did, handle, email, password_hash, repo_root, repo_rev, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(did)
    .bind(handle)
    .bind(email)
    .bind(password_hash)
    .bind(root)
    .bind(rev)
    .bind(super::now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets the password hash; false when there is no such account.
pub async fn set_password(db: &SqlitePool, did: &str, hash: &str) -> Result<bool, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE accounts SET password_hash = ? WHERE did = ?").bind(hash).bind(did).execute(db).await?;
    Ok(updated.rows_affected() == 1)
}

/// Sets the account's handle.
pub async fn set_handle(conn: &mut sqlx::SqliteConnection, did: &str, handle: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET handle = ? WHERE did = ?").bind(handle).bind(did).execute(&mut *conn).await?;
    Ok(())
}

/// Sets the account's signing key and passkey if its key is still `current` (a
/// compare-and-swap); returns whether it was.
pub async fn set_signing_key(
    conn: &mut sqlx::SqliteConnection,
    did: &str,
    current: Option<&str>,
    key: &str,
    passkey_credential_id: Option<String>,
    passkey_public_key: Option<Vec<u8>>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE accounts SET signing_key = ?, passkey_credential_id = ?, passkey_public_key = ? \
         WHERE did = ? AND signing_key IS ?",
    )
    .bind(key)
    .bind(passkey_credential_id)
    .bind(passkey_public_key)
    .bind(did)
    .bind(current)
    .execute(&mut *conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Repos whose blocks are not indexed yet: (did, root, rev).
pub async fn unindexed_repos(db: &SqlitePool) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT did, repo_root, repo_rev FROM accounts a WHERE repo_root IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM repo_blocks r WHERE r.did = a.did)",
    )
    .fetch_all(db)
    .await
}

/// A hosted repo as `listRepos` shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct HostedRepo {
    pub did: String,
    pub repo_root: Option<String>,
    pub repo_rev: Option<String>,
    pub deactivated_at: Option<String>,
    pub takedown_ref: Option<String>,
}

/// A page of the accounts that have a repo, by DID, after `cursor`.
pub async fn repos_page(db: &SqlitePool, cursor: &str, limit: i64) -> Result<Vec<HostedRepo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT did, repo_root, repo_rev, deactivated_at, takedown_ref FROM accounts \
         WHERE did > ? AND repo_root IS NOT NULL ORDER BY did LIMIT ?",
    )
    .bind(cursor)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Sets a new email address, which then needs confirming again.
pub async fn set_email(db: &SqlitePool, did: &str, email: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE accounts SET email = ?, email_confirmed_at = NULL WHERE did = ?")
        .bind(email.to_ascii_lowercase())
        .bind(did)
        .execute(&mut *tx)
        .await?;
    // Codes mailed to the old address must not work for the new one.
    sqlx::query("DELETE FROM key_challenges WHERE did = ? AND (purpose LIKE 'code:%' OR purpose = 'plc_operation')")
        .bind(did)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Marks the account's current address as confirmed, if it is still `email`.
pub async fn confirm_email(db: &SqlitePool, did: &str, email: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE accounts SET email_confirmed_at = ? WHERE did = ? AND email = ?")
        .bind(super::now())
        .bind(did)
        .bind(email.to_ascii_lowercase())
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets or lifts a takedown (`reference` None lifts it).
pub async fn set_takedown(
    conn: &mut sqlx::SqliteConnection,
    did: &str,
    reference: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET takedown_ref = ? WHERE did = ?").bind(reference).bind(did).execute(conn).await?;
    Ok(())
}

/// What deleting an account left for the stores to clean: the blocks its repo referenced and
/// its blobs (cid, IPFS root); those still held by another account must stay.
pub struct Removed {
    pub blocks: Vec<String>,
    pub blobs: Vec<(String, Option<String>)>,
}

/// Deletes every row of the account: records, blob references and blobs, its repo's block
/// references (on the embedded store the trigger removes blocks no other repo references),
/// sessions, app passwords, stored service tokens, preferences, challenges, its firehose
/// history, and the account. In a transaction: commit it with
/// [`super::sessions::commit_ending`].
pub async fn delete_everything(conn: &mut sqlx::SqliteConnection, did: &str) -> Result<Removed, sqlx::Error> {
    // Writes only, the first of them taking the write lock: a transaction that read first
    // could not write after another connection did (SQLITE_BUSY_SNAPSHOT).
    sqlx::query("DELETE FROM records WHERE did = ?").bind(did).execute(&mut *conn).await?;
    let blocks: Vec<(String,)> =
        sqlx::query_as("DELETE FROM repo_blocks WHERE did = ? RETURNING cid").bind(did).fetch_all(&mut *conn).await?;
    let blobs: Vec<(String, Option<String>)> =
        sqlx::query_as("DELETE FROM blobs WHERE did = ? RETURNING cid, ipfs_cid")
            .bind(did)
            .fetch_all(&mut *conn)
            .await?;
    for statement in [
        "DELETE FROM record_blobs WHERE did = ?",
        "DELETE FROM sessions WHERE did = ?",
        "DELETE FROM app_passwords WHERE did = ?",
        "DELETE FROM service_tokens WHERE did = ?",
        "DELETE FROM preferences WHERE did = ?",
        "DELETE FROM key_challenges WHERE did = ?",
        "DELETE FROM oauth_consents WHERE did = ?",
        // Its history on the firehose too: replaying from an old cursor must not serve what
        // the user deleted (the `#account` event that says so is appended after this).
        "DELETE FROM firehose WHERE did = ?",
    ] {
        sqlx::query(statement).bind(did).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM accounts WHERE did = ?").bind(did).execute(&mut *conn).await?;
    super::sessions::ended();
    Ok(Removed { blocks: blocks.into_iter().map(|(c,)| c).collect(), blobs })
}

/// Ends every session of the account, inside a transaction (commit it with
/// [`super::sessions::commit_ending`]).
pub async fn end_sessions(conn: &mut sqlx::SqliteConnection, did: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE did = ?").bind(did).execute(conn).await?;
    super::sessions::ended();
    Ok(())
}

/// Accounts in DID order after `cursor`, optionally only those whose email starts with
/// `email` (the admin search).
pub async fn search(
    db: &SqlitePool,
    email: Option<&str>,
    cursor: &str,
    limit: i64,
) -> Result<Vec<Account>, sqlx::Error> {
    let prefix = email.map(|e| format!("{}%", e.to_ascii_lowercase().replace(['%', '_'], "")));
    sqlx::query_as("SELECT * FROM accounts WHERE did > ? AND (? IS NULL OR email LIKE ?) ORDER BY did LIMIT ?")
        .bind(cursor)
        .bind(prefix.as_deref())
        .bind(prefix.as_deref())
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The account whose registered passkey has this credential ID (base64url).
pub async fn by_passkey(db: &SqlitePool, credential_id: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM accounts WHERE passkey_credential_id = ?")
        .bind(credential_id)
        .fetch_optional(db)
        .await
}

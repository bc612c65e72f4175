//! The single-use codes mailed for the email flows and identity operations: random, stored only
//! as a hash, bound to one account and one purpose, expiring; a newer code for the same account
//! and purpose replaces the older one.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::XrpcError;
use crate::store::db::{self, challenges};

/// What a code is for, and how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Confirming the account's email address: a day, as people read mail late.
    ConfirmEmail,
    /// Allowing an email change on a confirmed account: 15 minutes.
    UpdateEmail,
    /// Resetting a forgotten password: 15 minutes.
    ResetPassword,
    /// Deleting the account: 15 minutes.
    DeleteAccount,
    /// Signing a PLC operation (`signPlcOperation`): 15 minutes.
    PlcOperation,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Self::ConfirmEmail => "code:confirm_email",
            Self::UpdateEmail => "code:update_email",
            Self::ResetPassword => "code:reset_password",
            Self::DeleteAccount => "code:delete_account",
            // Kept from before the other codes existed: tokens already mailed stay valid.
            Self::PlcOperation => "plc_operation",
        }
    }

    pub fn lifetime_secs(self) -> i64 {
        match self {
            Self::ConfirmEmail => 24 * 60 * 60,
            _ => 15 * 60,
        }
    }

    /// The lifetime in words, for the mail.
    pub fn lifetime(self) -> String {
        match self.lifetime_secs() {
            s if s >= 3600 => format!("{} hours", s / 3600),
            s => format!("{} minutes", s / 60),
        }
    }
}

/// Why a code was not accepted: the lexicons' `InvalidToken` and `ExpiredToken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Invalid,
    Expired,
}

impl From<Refused> for XrpcError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Invalid => XrpcError::named(
                "InvalidToken",
                "The code is wrong or was already used; use the newest mail, or ask for a new code",
            ),
            Refused::Expired => XrpcError::named("ExpiredToken", "The code has expired; ask for a new one"),
        }
    }
}

fn hash(code: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(code.trim().to_ascii_uppercase().as_bytes()))
}

/// A fresh code for `did`, replacing any earlier one for the same purpose; returned in clear
/// to be mailed.
pub async fn issue(db: &sqlx::SqlitePool, did: &str, purpose: Purpose) -> Result<String, sqlx::Error> {
    let code = format!("{}-{}", super::random_code(5), super::random_code(5));
    challenges::insert_replacing(db, &hash(&code), did, purpose.tag(), db::unix_now() + purpose.lifetime_secs())
        .await?;
    Ok(code)
}

/// Checks a code without using it up; returns the account it was issued to.
pub async fn check(
    db: &sqlx::SqlitePool,
    code: &str,
    purpose: Purpose,
) -> Result<Result<String, Refused>, sqlx::Error> {
    Ok(match challenges::lookup(db, &hash(code), purpose.tag()).await? {
        None => Err(Refused::Invalid),
        Some((_, expires)) if expires < db::unix_now() => Err(Refused::Expired),
        Some((did, _)) => Ok(did),
    })
}

/// Uses up a code issued to `did` (or, with `did` None, to whichever account; returned).
pub async fn take(
    db: &sqlx::SqlitePool,
    did: Option<&str>,
    code: &str,
    purpose: Purpose,
) -> Result<Result<String, Refused>, sqlx::Error> {
    let owner = match check(db, code, purpose).await? {
        Ok(owner) => owner,
        Err(Refused::Expired) => {
            if let Some((owner, _)) = challenges::lookup(db, &hash(code), purpose.tag()).await? {
                challenges::remove(db, &hash(code), &owner, purpose.tag()).await?;
            }
            return Ok(Err(Refused::Expired));
        }
        Err(r) => return Ok(Err(r)),
    };
    if did.is_some_and(|d| d != owner) {
        return Ok(Err(Refused::Invalid));
    }
    // Two requests with the same code: only one removes it.
    if !challenges::remove(db, &hash(code), &owner, purpose.tag()).await? {
        return Ok(Err(Refused::Invalid));
    }
    Ok(Ok(owner))
}

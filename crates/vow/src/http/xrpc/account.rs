//! `com.atproto.server.*` for a person's account over its life: the email flows (confirm,
//! change, reset a forgotten password) and deletion. Codes are single-use, hashed and expiring
//! (see `service::auth::codes`), and mailed through `service::mail`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcJson;
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::codes::{self, Purpose};
use crate::service::auth::{AccessAuth, password};
use crate::service::mail::Template;
use crate::state::AppState;
use crate::store::db::{accounts, sessions};

async fn account_of(state: &AppState, did: &str) -> XrpcResult<accounts::Account> {
    accounts::by_did(&state.db, did).await?.ok_or_else(|| XrpcError::named("AccountNotFound", "No such account"))
}

/// Issues a code for `purpose` and mails it to `to`.
async fn mail_code(
    state: &AppState,
    account: &accounts::Account,
    to: &str,
    purpose: Purpose,
    template: Template,
) -> XrpcResult<()> {
    state.mailer.require()?;
    let code = codes::issue(&state.db, &account.did, purpose).await?;
    let lifetime = purpose.lifetime();
    let vars = [
        ("handle", account.handle.as_str()),
        ("host", state.config.hostname.as_str()),
        ("token", code.as_str()),
        ("lifetime", lifetime.as_str()),
    ];
    state.mailer.send(to, template, &vars).await.map_err(|e| XrpcError::internal("could not queue the mail", e))
}

fn email_of(account: &accounts::Account) -> XrpcResult<&str> {
    account.email.as_deref().ok_or_else(|| XrpcError::invalid_request("This account has no email address"))
}

/// `requestEmailConfirmation`: mails a code to the account's address.
pub async fn request_email_confirmation(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    send_confirmation(&state, &auth.did).await?;
    Ok(Json(json!({})))
}

/// Mails the account a confirmation code (also for the account page).
pub(crate) async fn send_confirmation(state: &AppState, did: &str) -> XrpcResult<()> {
    let account = account_of(state, did).await?;
    let email = email_of(&account)?.to_owned();
    mail_code(state, &account, &email, Purpose::ConfirmEmail, Template::ConfirmEmail).await
}

#[derive(Deserialize)]
pub struct ConfirmEmailInput {
    email: String,
    token: String,
}

/// `confirmEmail`: the code mailed to the account's current address confirms it.
pub async fn confirm_email(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<ConfirmEmailInput>,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    confirm(&state, &auth.did, &input.email, &input.token).await?;
    Ok(Json(json!({})))
}

/// Confirms the account's address `email` with the mailed code (also for the account page).
pub(crate) async fn confirm(state: &AppState, did: &str, email: &str, token: &str) -> XrpcResult<()> {
    let account = account_of(state, did).await?;
    if !email_of(&account)?.eq_ignore_ascii_case(email.trim()) {
        return Err(XrpcError::named("InvalidEmail", "That is not this account's email address"));
    }
    codes::take(&state.db, Some(&account.did), token, Purpose::ConfirmEmail).await??;
    if !accounts::confirm_email(&state.db, &account.did, email.trim()).await? {
        return Err(XrpcError::named("InvalidEmail", "The account's email address changed meanwhile"));
    }
    tracing::info!(did = %account.did, "email confirmed");
    Ok(())
}

/// `requestEmailUpdate`: once the address is confirmed, changing it needs a code mailed to it.
pub async fn request_email_update(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let account = account_of(&state, &auth.did).await?;
    let required = account.email_confirmed_at.is_some();
    if required {
        let email = email_of(&account)?.to_owned();
        mail_code(&state, &account, &email, Purpose::UpdateEmail, Template::UpdateEmail).await?;
    }
    Ok(Json(json!({ "tokenRequired": required })))
}

#[derive(Deserialize)]
pub struct UpdateEmailInput {
    email: String,
    token: Option<String>,
}

/// `updateEmail`: a new address (free, valid), with the mailed code when the old one was
/// confirmed; the new address must then be confirmed.
pub async fn update_email(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<UpdateEmailInput>,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let account = account_of(&state, &auth.did).await?;
    let email = super::server::check_email(&input.email)?;
    if account.email_confirmed_at.is_some() {
        let token = input.token.as_deref().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            XrpcError::named("TokenRequired", "Confirm the change with the code mailed to your current address")
        })?;
        // Checked first, used up only once the new address is known to be free.
        match codes::check(&state.db, token, Purpose::UpdateEmail).await? {
            Ok(owner) if owner == account.did => {}
            Ok(_) => return Err(codes::Refused::Invalid.into()),
            Err(r) => return Err(r.into()),
        }
    }
    if let Some(other) = accounts::by_email(&state.db, &email).await?
        && other.did != account.did
    {
        return Err(XrpcError::invalid_request("This email address is already in use; use a different one"));
    }
    if account.email_confirmed_at.is_some() {
        codes::take(&state.db, Some(&account.did), input.token.as_deref().unwrap_or(""), Purpose::UpdateEmail)
            .await??;
    }
    if account.email.as_deref() != Some(email.as_str()) {
        accounts::set_email(&state.db, &account.did, &email).await?;
        tracing::info!(did = %account.did, "email address changed");
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct RequestPasswordResetInput {
    email: String,
}

/// `requestPasswordReset`: no session needed, and the answer is the same, as fast, whether
/// or not the address belongs to an account: the lookup and the mail happen after it.
pub async fn request_password_reset(
    State(state): State<AppState>,
    XrpcJson(input): XrpcJson<RequestPasswordResetInput>,
) -> XrpcResult<Json<Value>> {
    start_password_reset(&state, &input.email)?;
    Ok(Json(json!({})))
}

/// Mails a reset code if `email` is an account's, after answering (also for the forgot-password
/// page): the caller learns nothing from the answer or its timing.
pub(crate) fn start_password_reset(state: &AppState, email: &str) -> XrpcResult<()> {
    state.mailer.require()?;
    let email = email.trim().to_ascii_lowercase();
    let state = state.clone();
    tokio::spawn(async move {
        let found = match accounts::by_email(&state.db, &email).await {
            Ok(found) => found,
            Err(e) => return tracing::warn!(error = %e, "password reset: account lookup failed"),
        };
        let Some(account) = found else { return };
        if account.takedown_ref.is_some() {
            return;
        }
        if let Err(e) = mail_code(&state, &account, &email, Purpose::ResetPassword, Template::ResetPassword).await {
            tracing::warn!(did = %account.did, error = %e, "password reset: the code could not be mailed");
        }
    });
    Ok(())
}

#[derive(Deserialize)]
pub struct ResetPasswordInput {
    token: String,
    password: String,
}

/// `resetPassword`: the mailed code sets a new password and ends every session.
pub async fn reset_password(
    State(state): State<AppState>,
    XrpcJson(input): XrpcJson<ResetPasswordInput>,
) -> XrpcResult<Json<Value>> {
    finish_password_reset(&state, &input.token, input.password).await?;
    Ok(Json(json!({})))
}

/// Sets a new password with the mailed code and ends every session (also for the page).
pub(crate) async fn finish_password_reset(state: &AppState, token: &str, new_password: String) -> XrpcResult<String> {
    password::check_new(&new_password)?;
    let did = match codes::check(&state.db, token, Purpose::ResetPassword).await? {
        Ok(did) => did,
        Err(r) => {
            // An expired code is used up, so asking twice gives the same answer.
            let _ = codes::take(&state.db, None, token, Purpose::ResetPassword).await?;
            return Err(r.into());
        }
    };
    let hash = password::hash_async(new_password).await?;
    codes::take(&state.db, Some(&did), token, Purpose::ResetPassword).await??;
    accounts::set_password(&state.db, &did, &hash).await?;
    sessions::delete_all(&state.db, &did).await?;
    tracing::info!(%did, "password reset; every session ended");
    Ok(did)
}

/// `requestAccountDelete`: mails the code `deleteAccount` needs.
pub async fn request_account_delete(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    send_delete_code(&state, &auth.did).await?;
    Ok(Json(json!({})))
}

/// Mails the account the code its deletion needs (also for the account page).
pub(crate) async fn send_delete_code(state: &AppState, did: &str) -> XrpcResult<()> {
    let account = account_of(state, did).await?;
    let email = email_of(&account)?.to_owned();
    mail_code(state, &account, &email, Purpose::DeleteAccount, Template::DeleteAccount).await
}

#[derive(Deserialize)]
pub struct DeleteAccountInput {
    did: String,
    password: String,
    token: String,
}

/// `deleteAccount`: the password and the mailed code; then everything this server holds for
/// the account goes (see `service::lifecycle`). The DID itself stays the user's: only their
/// key can tombstone it (the account page offers that first).
pub async fn delete_account(
    State(state): State<AppState>,
    XrpcJson(input): XrpcJson<DeleteAccountInput>,
) -> XrpcResult<Json<Value>> {
    let denied = || XrpcError::auth_required("Invalid did or password");
    let account = accounts::by_did(&state.db, input.did.trim()).await?.ok_or_else(denied)?;
    if !password::verify_async(input.password, account.password_hash.clone()).await? {
        return Err(denied());
    }
    delete_with_code(&state, &account.did, &input.token).await?;
    Ok(Json(json!({})))
}

/// Deletes the account once the mailed code checks out (the caller checked who asks).
pub(crate) async fn delete_with_code(state: &AppState, did: &str, token: &str) -> XrpcResult<()> {
    codes::take(&state.db, Some(did), token, Purpose::DeleteAccount).await??;
    state.lifecycle.delete(did).await?;
    state.proxy.tokens.forget_key(did);
    Ok(())
}

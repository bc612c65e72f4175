//! `com.atproto.admin.*`: the operator's account management, with admin (basic) auth, as the
//! reference PDS serves it. Every change is logged with the account it touched.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{XrpcJson, XrpcQuery};
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::{AdminAuth, password};
use crate::state::AppState;
use crate::store::db::{accounts, invites, sessions};

fn not_found() -> XrpcError {
    XrpcError::named("AccountNotFound", "No such account")
}

async fn account_of(state: &AppState, did: &str) -> XrpcResult<accounts::Account> {
    accounts::by_did(&state.db, did.trim()).await?.ok_or_else(not_found)
}

/// `com.atproto.admin.defs#accountView`.
async fn account_view(state: &AppState, a: &accounts::Account) -> XrpcResult<Value> {
    let codes = invites::of_account(&state.db, &a.did).await?;
    let mut view = json!({
        "did": a.did,
        "handle": a.handle,
        "indexedAt": a.created_at,
        "invitesDisabled": false,
        "invites": codes.iter().map(|c| json!({
            "code": c.code, "available": c.available, "disabled": c.disabled, "forAccount": c.for_account,
            "createdBy": c.created_by, "createdAt": c.created_at, "uses": [],
        })).collect::<Vec<_>>(),
    });
    if let Some(email) = &a.email {
        view["email"] = json!(email);
    }
    if let Some(at) = &a.email_confirmed_at {
        view["emailConfirmedAt"] = json!(at);
    }
    if let Some(at) = &a.deactivated_at {
        view["deactivatedAt"] = json!(at);
    }
    Ok(view)
}

#[derive(Deserialize)]
pub struct DidParam {
    did: String,
}

pub async fn get_account_info(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcQuery(p): XrpcQuery<DidParam>,
) -> XrpcResult<Json<Value>> {
    let account = account_of(&state, &p.did).await?;
    Ok(Json(account_view(&state, &account).await?))
}

/// `getAccountInfos?dids=…&dids=…` (repeated parameters, read from the raw query).
pub async fn get_account_infos(
    State(state): State<AppState>,
    _: AdminAuth,
    uri: axum::http::Uri,
) -> XrpcResult<Json<Value>> {
    let dids: Vec<String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "dids")
        .map(|(_, v)| v.into_owned())
        .collect();
    if dids.is_empty() || dids.len() > 100 {
        return Err(XrpcError::invalid_request("Give 1 to 100 dids"));
    }
    let mut infos = Vec::new();
    for did in &dids {
        if let Some(a) = accounts::by_did(&state.db, did).await? {
            infos.push(account_view(&state, &a).await?);
        }
    }
    Ok(Json(json!({ "infos": infos })))
}

#[derive(Deserialize)]
pub struct SearchParams {
    email: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

pub async fn search_accounts(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcQuery(p): XrpcQuery<SearchParams>,
) -> XrpcResult<Json<Value>> {
    let limit = p.limit.unwrap_or(50).clamp(1, 100);
    let found = accounts::search(&state.db, p.email.as_deref(), p.cursor.as_deref().unwrap_or(""), limit).await?;
    let cursor = (found.len() as i64 == limit).then(|| found.last().map(|a| a.did.clone())).flatten();
    let mut views = Vec::with_capacity(found.len());
    for a in &found {
        views.push(account_view(&state, a).await?);
    }
    let mut out = json!({ "accounts": views });
    if let Some(c) = cursor {
        out["cursor"] = json!(c);
    }
    Ok(Json(out))
}

fn repo_ref(did: &str) -> Value {
    json!({ "$type": "com.atproto.admin.defs#repoRef", "did": did })
}

fn takedown_view(a: &accounts::Account) -> Value {
    match &a.takedown_ref {
        Some(r) => json!({ "applied": true, "ref": r }),
        None => json!({ "applied": false }),
    }
}

#[derive(Deserialize)]
pub struct SubjectParams {
    did: Option<String>,
    uri: Option<String>,
    blob: Option<String>,
}

/// `getSubjectStatus`: accounts only (record and blob takedowns are not kept here).
pub async fn get_subject_status(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcQuery(p): XrpcQuery<SubjectParams>,
) -> XrpcResult<Json<Value>> {
    let Some(did) = p.did else {
        if p.uri.is_some() || p.blob.is_some() {
            return Err(XrpcError::invalid_request("Only accounts (did) have a status on this server"));
        }
        return Err(XrpcError::invalid_request("Give a did"));
    };
    let a = account_of(&state, &did).await?;
    Ok(Json(json!({
        "subject": repo_ref(&a.did),
        "takedown": takedown_view(&a),
        "deactivated": { "applied": a.deactivated_at.is_some() },
    })))
}

#[derive(Deserialize)]
pub struct StatusAttr {
    applied: bool,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
pub struct UpdateSubjectInput {
    subject: Value,
    takedown: Option<StatusAttr>,
}

/// `updateSubjectStatus`: takes an account down, or lifts it (`#account` either way).
pub async fn update_subject_status(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<UpdateSubjectInput>,
) -> XrpcResult<Json<Value>> {
    let did = match input.subject["$type"].as_str() {
        Some("com.atproto.admin.defs#repoRef") => input.subject["did"].as_str().unwrap_or("").to_owned(),
        other => {
            return Err(XrpcError::invalid_request(format!(
                "Only accounts (com.atproto.admin.defs#repoRef) can be taken down here, not {other:?}"
            )));
        }
    };
    account_of(&state, &did).await?;
    if let Some(t) = &input.takedown {
        let reference = t.applied.then(|| t.reference.clone().unwrap_or_else(|| "takedown".to_owned()));
        state.lifecycle.set_takedown(&did, reference.as_deref()).await?;
        tracing::warn!(target: "vow::admin", %did, applied = t.applied, "admin: takedown");
    }
    let a = account_of(&state, &did).await?;
    Ok(Json(json!({ "subject": repo_ref(&a.did), "takedown": takedown_view(&a) })))
}

#[derive(Deserialize)]
pub struct HandleInput {
    did: String,
    handle: String,
}

/// `updateAccountHandle`: the PLC operation is still the user's to sign, through their signer.
pub async fn update_account_handle(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<HandleInput>,
) -> XrpcResult<Json<Value>> {
    super::identity::change_handle(&state, input.did.trim(), &input.handle).await?;
    tracing::warn!(target: "vow::admin", did = %input.did, handle = %input.handle, "admin: handle changed");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct EmailInput {
    account: String,
    email: String,
}

pub async fn update_account_email(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<EmailInput>,
) -> XrpcResult<Json<Value>> {
    let a = account_of(&state, &input.account).await?;
    let email = super::server::check_email(&input.email)?;
    if accounts::by_email(&state.db, &email).await?.is_some_and(|o| o.did != a.did) {
        return Err(XrpcError::invalid_request("This email address is already in use"));
    }
    accounts::set_email(&state.db, &a.did, &email).await?;
    tracing::warn!(target: "vow::admin", did = %a.did, "admin: email changed");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct PasswordInput {
    did: String,
    password: String,
}

/// `updateAccountPassword`: sets the password and ends every session.
pub async fn update_account_password(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<PasswordInput>,
) -> XrpcResult<Json<Value>> {
    let a = account_of(&state, &input.did).await?;
    password::check_new(&input.password)?;
    let hash = password::hash_async(input.password).await?;
    accounts::set_password(&state.db, &a.did, &hash).await?;
    sessions::delete_all(&state.db, &a.did).await?;
    tracing::warn!(target: "vow::admin", did = %a.did, "admin: password set; sessions ended");
    Ok(Json(json!({})))
}

pub async fn delete_account(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<DidParam>,
) -> XrpcResult<Json<Value>> {
    let a = account_of(&state, &input.did).await?;
    state.lifecycle.delete(&a.did).await?;
    state.proxy.tokens.forget_key(&a.did);
    tracing::warn!(target: "vow::admin", did = %a.did, "admin: account deleted");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct InviteParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn get_invite_codes(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcQuery(p): XrpcQuery<InviteParams>,
) -> XrpcResult<Json<Value>> {
    let limit = p.limit.unwrap_or(100).clamp(1, 500);
    let page = invites::page(&state.db, p.cursor.as_deref(), limit).await?;
    let mut codes = Vec::with_capacity(page.len());
    for c in &page {
        let uses = invites::uses_of(&state.db, &c.code).await?;
        codes.push(json!({
            "code": c.code, "available": c.available, "disabled": c.disabled, "forAccount": c.for_account,
            "createdBy": c.created_by, "createdAt": c.created_at,
            "uses": uses.into_iter().map(|(by, at)| json!({ "usedBy": by, "usedAt": at })).collect::<Vec<_>>(),
        }));
    }
    let mut out = json!({ "codes": codes });
    if let Some(cursor) = invites::page_cursor(&page, limit) {
        out["cursor"] = json!(cursor);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct DisableInput {
    #[serde(default)]
    codes: Vec<String>,
    #[serde(default)]
    accounts: Vec<String>,
}

pub async fn disable_invite_codes(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<DisableInput>,
) -> XrpcResult<Json<Value>> {
    let changed = invites::disable(&state.db, &input.codes, &input.accounts).await?;
    tracing::warn!(target: "vow::admin", changed, "admin: invite codes disabled");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendEmailInput {
    recipient_did: String,
    content: String,
    subject: Option<String>,
}

/// `sendEmail`: the operator writes to an account's address.
pub async fn send_email(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcJson(input): XrpcJson<SendEmailInput>,
) -> XrpcResult<Json<Value>> {
    let a = account_of(&state, &input.recipient_did).await?;
    let to = a.email.ok_or_else(|| XrpcError::invalid_request("This account has no email address"))?;
    state.mailer.require()?;
    let subject = input.subject.unwrap_or_else(|| format!("A message from {}", state.config.hostname));
    state
        .mailer
        .send_text(&to, &subject, &input.content)
        .await
        .map_err(|e| XrpcError::internal("could not queue the mail", e))?;
    tracing::warn!(target: "vow::admin", did = %a.did, "admin: email sent");
    Ok(Json(json!({ "sent": true })))
}

#[derive(Deserialize)]
pub struct StorageParams {
    did: Option<String>,
}

/// `app.vow.admin.getStorage[?did=]`: records, blocks and blobs per account, and the totals.
pub async fn get_storage(
    State(state): State<AppState>,
    _: AdminAuth,
    XrpcQuery(p): XrpcQuery<StorageParams>,
) -> XrpcResult<Json<Value>> {
    let rows = crate::store::db::meta::storage_by_account(&state.db, p.did.as_deref()).await?;
    if p.did.is_some() && rows.is_empty() {
        return Err(XrpcError::not_found("AccountNotFound", "No account with that DID"));
    }
    let sum = |f: fn(&crate::store::db::meta::AccountStorage) -> i64| rows.iter().map(f).sum::<i64>();
    let total = json!({
        "records": sum(|r| r.records),
        "blocks": sum(|r| r.blocks),
        "blockBytes": sum(|r| r.block_bytes),
        "blobs": sum(|r| r.blobs),
        "blobBytes": sum(|r| r.blob_bytes),
    });
    let accounts: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({ "did": r.did, "handle": r.handle, "records": r.records, "blocks": r.blocks,
                "blockBytes": r.block_bytes, "blobs": r.blobs, "blobBytes": r.blob_bytes })
        })
        .collect();
    Ok(Json(json!({ "accounts": accounts, "total": total })))
}

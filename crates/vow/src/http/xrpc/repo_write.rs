//! `com.atproto.repo.*` writes: parse, check the caller owns the repo, hand to the write
//! pipeline, shape the response.

use atproto::Cid;
use atproto::syntax::{AtIdentifier, Did, Nsid, RecordKey};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::XrpcJson;
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::AccessAuth;
use crate::service::repo::writer::{self, Action, Committed, Write};
use crate::state::AppState;
use crate::store::db::accounts;

/// Distinguishes an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn nsid(s: &str) -> XrpcResult<Nsid> {
    Nsid::new(s).map_err(|e| XrpcError::invalid_request(format!("Invalid collection: {e}")))
}

fn rkey(s: &str) -> XrpcResult<RecordKey> {
    RecordKey::new(s).map_err(|e| XrpcError::invalid_request(format!("Invalid record key: {e}")))
}

fn cid(s: &str, field: &str) -> XrpcResult<Cid> {
    s.parse().map_err(|e| XrpcError::invalid_request(format!("Invalid {field}: {e}")))
}

fn swap_commit(v: &Option<String>) -> XrpcResult<Option<Cid>> {
    v.as_deref().map(|s| cid(s, "swapCommit")).transpose()
}

fn swap(v: Option<Option<String>>) -> XrpcResult<Option<Option<Cid>>> {
    v.map(|inner| inner.map(|s| cid(&s, "swapRecord")).transpose()).transpose()
}

/// The repo named in the request must be the caller's own.
async fn own_repo(state: &AppState, auth: &AccessAuth, repo: &str) -> XrpcResult<Did> {
    let id = AtIdentifier::new(repo).map_err(|e| XrpcError::invalid_request(format!("Invalid repo: {e}")))?;
    let did = match id {
        AtIdentifier::Did(did) => did,
        AtIdentifier::Handle(handle) => {
            let account = accounts::by_handle(&state.db, &handle.normalized())
                .await?
                .ok_or_else(|| XrpcError::named("RepoNotFound", format!("Could not find repo: {repo}")))?;
            Did::new(account.did).map_err(|e| XrpcError::internal("stored DID is invalid", e))?
        }
    };
    if did.as_str() != auth.did {
        return Err(XrpcError::forbidden("You can only write to your own repo"));
    }
    Ok(did)
}

/// Counts writes against the account's hourly and daily write points (a create costs 3, an
/// update 2, a delete 1, as the reference PDS counts them).
fn charge_writes(state: &AppState, did: &Did, writes: &[Write]) -> XrpcResult<()> {
    use crate::service::ratelimit::Policy;
    let points: u32 = writes
        .iter()
        .map(|w| match w {
            Write::Create { .. } => 3,
            Write::Update { .. } | Write::Put { .. } => 2,
            Write::Delete { .. } => 1,
        })
        .sum();
    state.limits.check(Policy::WritesHour, did.as_str(), points)?;
    state.limits.check(Policy::WritesDay, did.as_str(), points)?;
    Ok(())
}

fn record_response(committed: &Committed) -> Json<Value> {
    let r = &committed.results[0];
    let mut out = json!({
        "uri": r.uri,
        "cid": r.cid.map(|c| c.to_string()),
        "commit": committed.commit_json(),
    });
    if let Some(status) = r.validation_status {
        out["validationStatus"] = json!(status);
    }
    Json(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRecordInput {
    repo: String,
    collection: String,
    rkey: Option<String>,
    validate: Option<bool>,
    record: Value,
    swap_commit: Option<String>,
}

pub async fn create_record(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<CreateRecordInput>,
) -> XrpcResult<Json<Value>> {
    let did = own_repo(&state, &auth, &input.repo).await?;
    auth.require_write(&input.collection, "create")?;
    let write = Write::Create {
        collection: nsid(&input.collection)?,
        rkey: input.rkey.as_deref().map(rkey).transpose()?,
        value: input.record,
    };
    charge_writes(&state, &did, std::slice::from_ref(&write))?;
    let committed =
        writer::apply(&state.writer, &did, vec![write], swap_commit(&input.swap_commit)?, input.validate).await?;
    Ok(record_response(&committed))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutRecordInput {
    repo: String,
    collection: String,
    rkey: String,
    validate: Option<bool>,
    record: Value,
    #[serde(default, deserialize_with = "present")]
    swap_record: Option<Option<String>>,
    swap_commit: Option<String>,
}

pub async fn put_record(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<PutRecordInput>,
) -> XrpcResult<Json<Value>> {
    let did = own_repo(&state, &auth, &input.repo).await?;
    // A put creates or replaces: the grant must allow both.
    auth.require_write(&input.collection, "create")?;
    auth.require_write(&input.collection, "update")?;
    let write = Write::Put {
        collection: nsid(&input.collection)?,
        rkey: rkey(&input.rkey)?,
        value: input.record,
        swap: swap(input.swap_record)?,
    };
    charge_writes(&state, &did, std::slice::from_ref(&write))?;
    let committed =
        writer::apply(&state.writer, &did, vec![write], swap_commit(&input.swap_commit)?, input.validate).await?;
    Ok(record_response(&committed))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRecordInput {
    repo: String,
    collection: String,
    rkey: String,
    #[serde(default, deserialize_with = "present")]
    swap_record: Option<Option<String>>,
    swap_commit: Option<String>,
}

pub async fn delete_record(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<DeleteRecordInput>,
) -> XrpcResult<Json<Value>> {
    let did = own_repo(&state, &auth, &input.repo).await?;
    auth.require_write(&input.collection, "delete")?;
    let write = Write::Delete {
        collection: nsid(&input.collection)?,
        rkey: rkey(&input.rkey)?,
        swap: swap(input.swap_record)?,
        must_exist: false,
    };
    charge_writes(&state, &did, std::slice::from_ref(&write))?;
    let committed = writer::apply(&state.writer, &did, vec![write], swap_commit(&input.swap_commit)?, None).await?;
    // Deleting what is not there changes nothing, and says so with no commit, as the
    // reference PDS does.
    if !committed.new_commit {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "commit": committed.commit_json() })))
}

#[derive(Deserialize)]
pub struct ApplyWrite {
    #[serde(rename = "$type")]
    kind: String,
    collection: String,
    rkey: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyWritesInput {
    repo: String,
    validate: Option<bool>,
    writes: Vec<ApplyWrite>,
    swap_commit: Option<String>,
}

pub async fn apply_writes(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<ApplyWritesInput>,
) -> XrpcResult<Json<Value>> {
    let did = own_repo(&state, &auth, &input.repo).await?;
    let mut writes = Vec::with_capacity(input.writes.len());
    for (i, w) in input.writes.into_iter().enumerate() {
        let collection = nsid(&w.collection)?;
        let action = match w.kind.as_str() {
            "com.atproto.repo.applyWrites#create" => "create",
            "com.atproto.repo.applyWrites#update" => "update",
            _ => "delete",
        };
        auth.require_write(collection.as_str(), action)?;
        let need_rkey = || {
            w.rkey
                .as_deref()
                .map(rkey)
                .transpose()?
                .ok_or_else(|| XrpcError::invalid_request(format!("writes[{i}]: rkey is required")))
        };
        let need_value =
            || w.value.clone().ok_or_else(|| XrpcError::invalid_request(format!("writes[{i}]: value is required")));
        writes.push(match w.kind.as_str() {
            "com.atproto.repo.applyWrites#create" => {
                Write::Create { collection, rkey: w.rkey.as_deref().map(rkey).transpose()?, value: need_value()? }
            }
            "com.atproto.repo.applyWrites#update" => {
                Write::Update { collection, rkey: need_rkey()?, value: need_value()? }
            }
            "com.atproto.repo.applyWrites#delete" => {
                Write::Delete { collection, rkey: need_rkey()?, swap: None, must_exist: true }
            }
            other => return Err(XrpcError::invalid_request(format!("writes[{i}]: unknown $type {other:?}"))),
        });
    }
    charge_writes(&state, &did, &writes)?;
    let committed =
        writer::apply(&state.writer, &did, writes, swap_commit(&input.swap_commit)?, input.validate).await?;
    let results: Vec<Value> = committed
        .results
        .iter()
        .map(|r| match r.action {
            Action::Delete => json!({ "$type": "com.atproto.repo.applyWrites#deleteResult" }),
            action => {
                let mut v = json!({
                    "$type": format!("com.atproto.repo.applyWrites#{}Result", action.name()),
                    "uri": r.uri,
                    "cid": r.cid.map(|c| c.to_string()),
                });
                if let Some(status) = r.validation_status {
                    v["validationStatus"] = json!(status);
                }
                v
            }
        })
        .collect();
    Ok(Json(json!({ "commit": committed.commit_json(), "results": results })))
}

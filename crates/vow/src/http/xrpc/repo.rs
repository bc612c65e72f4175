//! `com.atproto.repo.*` reads.

use atproto::syntax::{AtIdentifier, Nsid, RecordKey};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcQuery;
use crate::error::{XrpcError, XrpcResult};
use crate::state::AppState;
use crate::store::blocks::BlockStore;
use crate::store::db::accounts::{self, Account};

/// Finds a hosted repo by DID or handle.
async fn find_repo(state: &AppState, repo: &str) -> XrpcResult<Account> {
    let id = AtIdentifier::new(repo).map_err(|e| XrpcError::invalid_request(format!("Invalid repo: {e}")))?;
    let account = match &id {
        AtIdentifier::Did(did) => accounts::by_did(&state.db, did.as_str()).await?,
        AtIdentifier::Handle(handle) => accounts::by_handle(&state.db, &handle.normalized()).await?,
    };
    account.ok_or_else(|| XrpcError::named("RepoNotFound", format!("Could not find repo: {repo}")))
}

fn parse_nsid(collection: &str) -> XrpcResult<Nsid> {
    Nsid::new(collection).map_err(|e| XrpcError::invalid_request(format!("Invalid collection: {e}")))
}

pub(crate) async fn record_value(state: &AppState, cid: &str) -> XrpcResult<Value> {
    let cid: atproto::Cid = cid.parse().map_err(|e| XrpcError::internal("bad CID in the records index", e))?;
    let bytes = state.blocks.get(&cid).await?.ok_or_else(|| XrpcError::internal("record block missing", cid))?;
    let value = atproto::data::decode(&bytes).map_err(|e| XrpcError::internal("stored record does not decode", e))?;
    Ok(atproto::data::to_json(&value))
}

#[derive(Deserialize)]
pub struct DescribeRepoParams {
    repo: String,
}

pub async fn describe_repo(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<DescribeRepoParams>,
) -> XrpcResult<Json<Value>> {
    let account = find_repo(&state, &p.repo).await?;
    let collections = crate::store::db::refs::collections(&state.db, &account.did).await?;
    let did_doc = match state.plc.resolve(&account.did).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return Err(XrpcError::upstream("DID document not found on the PLC directory", &account.did)),
        Err(e) => return Err(XrpcError::upstream("Could not fetch the DID document", e)),
    };
    let handle_is_correct = did_doc["alsoKnownAs"]
        .as_array()
        .is_some_and(|aka| aka.iter().any(|a| a == &json!(format!("at://{}", account.handle))));
    Ok(Json(json!({
        "handle": account.handle,
        "did": account.did,
        "didDoc": did_doc,
        "collections": collections,
        "handleIsCorrect": handle_is_correct,
    })))
}

#[derive(Deserialize)]
pub struct GetRecordParams {
    repo: String,
    collection: String,
    rkey: String,
    cid: Option<String>,
}

pub async fn get_record(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<GetRecordParams>,
) -> XrpcResult<Json<Value>> {
    let account = find_repo(&state, &p.repo).await?;
    let collection = parse_nsid(&p.collection)?;
    let rkey = RecordKey::new(p.rkey.as_str()).map_err(|e| XrpcError::invalid_request(format!("Invalid rkey: {e}")))?;
    let row = crate::store::db::refs::record_cid(&state.db, &account.did, collection.as_str(), rkey.as_str()).await?;
    let uri = format!("at://{}/{collection}/{rkey}", account.did);
    let cid = match row {
        Some(cid) if p.cid.as_ref().is_none_or(|want| *want == cid) => cid,
        _ => return Err(XrpcError::named("RecordNotFound", format!("Could not locate record: {uri}"))),
    };
    let value = record_value(&state, &cid).await?;
    Ok(Json(json!({ "uri": uri, "cid": cid, "value": value })))
}

#[derive(Deserialize)]
pub struct ListRecordsParams {
    repo: String,
    collection: String,
    limit: Option<i64>,
    cursor: Option<String>,
    reverse: Option<bool>,
}

pub async fn list_records(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<ListRecordsParams>,
) -> XrpcResult<Json<Value>> {
    let account = find_repo(&state, &p.repo).await?;
    let collection = parse_nsid(&p.collection)?;
    let limit = super::page_limit(p.limit, 50, 100)?;
    // Newest first by default: rkeys are TIDs, so descending rkey order is newest first.
    let reverse = p.reverse.unwrap_or(false);
    let rows = crate::store::db::refs::records_page(
        &state.db,
        &account.did,
        collection.as_str(),
        p.cursor.as_deref(),
        limit,
        reverse,
    )
    .await?;
    let cursor = super::next_cursor(&rows, limit, |r| r.0.clone());
    let mut records = Vec::with_capacity(rows.len());
    for (rkey, cid) in rows {
        let value = record_value(&state, &cid).await?;
        records.push(json!({ "uri": format!("at://{}/{collection}/{rkey}", account.did), "cid": cid, "value": value }));
    }
    let mut out = json!({ "records": records });
    if let Some(cursor) = cursor {
        out["cursor"] = json!(cursor);
    }
    Ok(Json(out))
}

//! uploadBlob, sync.getBlob, sync.listBlobs and repo.listMissingBlobs, and the clean-up of
//! blobs no record references.

use atproto::Cid;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcQuery;
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::AccessAuth;
use crate::service::blobs::{BlobBody, BlobError};
use crate::state::AppState;
use crate::store::db;

fn blob_error(e: BlobError) -> XrpcError {
    match e {
        BlobError::TooLarge(limit) => {
            XrpcError::new(StatusCode::PAYLOAD_TOO_LARGE, "BlobTooLarge", format!("Blobs are limited to {limit} bytes"))
        }
        BlobError::Body(m) => XrpcError::invalid_request(format!("Upload failed: {m}")),
        BlobError::Io(e) => XrpcError::internal("blob storage failed", e),
        BlobError::Ipfs(e) => crate::store::blocks::StoreError::Unavailable(e.to_string()).into(),
    }
}

/// The MIME type the client declared, if it is safe to store and echo back (`type/subtype`
/// from a small character set) and says something (`*/*` does not).
fn declared_mime(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let base = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = base.split_once('/').is_some_and(|(t, s)| {
        let good = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        good(t) && good(s)
    });
    ok.then_some(base)
}

pub async fn upload_blob(
    State(state): State<AppState>,
    auth: AccessAuth,
    headers: HeaderMap,
    body: Body,
) -> XrpcResult<Json<Value>> {
    let declared_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("*/*");
    auth.require_blob(declared_type.split(';').next().unwrap_or("").trim())?;
    let limit = state.config.blob_upload_limit;
    // Hopelessly large uploads are refused before reading; slightly large ones are read to the
    // end (and discarded) so the client sees the error instead of a reset connection.
    if let Some(declared) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && declared > limit + crate::service::blobs::DRAIN_LIMIT
    {
        return Err(blob_error(BlobError::TooLarge(limit)));
    }
    // Clean-up must not remove these bytes between storing them and recording the row.
    let _no_sweep = state.blob_sweep.hold_off().await;
    let stored = state.blob_store.put(body, limit).await.map_err(blob_error)?;
    // What the bytes are wins over what the client said, as on the reference PDS: many clients
    // send `*/*` or `application/octet-stream` for images.
    let mime = stored
        .sniffed_mime
        .map(str::to_owned)
        .or_else(|| declared_mime(&headers))
        .unwrap_or_else(|| "application/octet-stream".into());
    // A re-upload restarts the grace period and may move the bytes (embedded store to IPFS).
    db::blobs::upsert(
        &state.db,
        &auth.did,
        &stored.cid.to_string(),
        &mime,
        stored.size as i64,
        stored.ipfs_cid.map(|c| c.to_string()),
    )
    .await?;
    Ok(Json(json!({ "blob": {
        "$type": "blob", "ref": { "$link": stored.cid.to_string() }, "mimeType": mime, "size": stored.size,
    } })))
}

#[derive(Deserialize)]
pub struct GetBlobParams {
    did: String,
    cid: String,
}

pub async fn get_blob(State(state): State<AppState>, XrpcQuery(p): XrpcQuery<GetBlobParams>) -> XrpcResult<Response> {
    let cid: Cid = p.cid.parse().map_err(|e| XrpcError::invalid_request(format!("Invalid cid: {e}")))?;
    super::active_account(&state, &p.did).await?;
    let row = db::blobs::get(&state.db, &p.did, &cid.to_string()).await?;
    let not_found = || XrpcError::named("BlobNotFound", format!("Blob not found: {cid}"));
    let (mime, size, ipfs_cid) = row.ok_or_else(not_found)?;
    let body = match state.blob_store.open(&cid, ipfs_cid.as_deref()).await.map_err(blob_error)? {
        None => return Err(not_found()),
        Some(BlobBody::Redirect(url)) => {
            return Ok((StatusCode::FOUND, [(axum::http::header::LOCATION, url)]).into_response());
        }
        Some(BlobBody::Stream(body)) => body,
    };
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(size as u64));
    // Served bytes are user content: never let a browser run or sniff them as ours.
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{cid}\"")).expect("CIDs are ASCII"),
    );
    Ok(res)
}

#[derive(Deserialize)]
pub struct ListBlobsParams {
    did: String,
    since: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_blobs(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<ListBlobsParams>,
) -> XrpcResult<Json<Value>> {
    let limit = super::page_limit(p.limit, 500, 1000)?;
    let since = super::since_param(p.since)?;
    super::active_account(&state, &p.did).await?;
    // The account's blobs that its current records reference; with `since`, only those
    // referenced by a record written after that revision.
    let rows = db::blobs::referenced_page(&state.db, &p.did, p.cursor.as_deref().unwrap_or(""), since, limit).await?;
    let cursor = super::next_cursor(&rows, limit, |r| r.clone());
    let mut out = json!({ "cids": rows });
    if let Some(c) = cursor {
        out["cursor"] = json!(c);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct ListMissingParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Blobs the caller's records reference but that were never uploaded here (an account moving
/// in brings its records first and its blobs after).
pub async fn list_missing_blobs(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcQuery(p): XrpcQuery<ListMissingParams>,
) -> XrpcResult<Json<Value>> {
    auth.require_not_oauth()?;
    let limit = super::page_limit(p.limit, 500, 1000)?;
    let rows = db::blobs::missing_page(&state.db, &auth.did, p.cursor.as_deref().unwrap_or(""), limit).await?;
    let cursor = super::next_cursor(&rows, limit, |r| r.0.clone());
    let blobs: Vec<Value> = rows
        .into_iter()
        .map(|(cid, collection, rkey)| json!({ "cid": cid, "recordUri": format!("at://{}/{collection}/{rkey}", auth.did) }))
        .collect();
    let mut out = json!({ "blobs": blobs });
    if let Some(c) = cursor {
        out["cursor"] = json!(c);
    }
    Ok(Json(out))
}

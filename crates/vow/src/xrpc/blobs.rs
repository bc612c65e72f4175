//! uploadBlob, sync.getBlob and sync.listBlobs on the embedded blob store.

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
use crate::auth::AccessAuth;
use crate::blobs::BlobError;
use crate::db;
use crate::error::{XrpcError, XrpcResult};
use crate::server::AppState;

fn blob_error(e: BlobError) -> XrpcError {
    match e {
        BlobError::TooLarge(limit) => {
            XrpcError::new(StatusCode::PAYLOAD_TOO_LARGE, "BlobTooLarge", format!("Blobs are limited to {limit} bytes"))
        }
        BlobError::Body(m) => XrpcError::invalid_request(format!("Upload failed: {m}")),
        BlobError::Io(e) => XrpcError::internal("blob storage failed", e),
    }
}

/// A MIME type safe to store and echo back: `type/subtype` from a small character set.
fn clean_mime(headers: &HeaderMap) -> String {
    let raw = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let base = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = base.split_once('/').is_some_and(|(t, s)| {
        let good = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        good(t) && good(s)
    });
    if ok { base } else { "application/octet-stream".into() }
}

pub async fn upload_blob(
    State(state): State<AppState>,
    auth: AccessAuth,
    headers: HeaderMap,
    body: Body,
) -> XrpcResult<Json<Value>> {
    let mime = clean_mime(&headers);
    let limit = state.config.blob_upload_limit;
    // Hopelessly large uploads are refused before reading; slightly large ones are read to the
    // end (and discarded) so the client sees the error instead of a reset connection.
    if let Some(declared) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && declared > limit + crate::blobs::DRAIN_LIMIT
    {
        return Err(blob_error(BlobError::TooLarge(limit)));
    }
    let stored = state.blob_files.put(body, limit).await.map_err(blob_error)?;
    sqlx::query(
        "INSERT INTO blobs (did, cid, mime, size, created_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (did, cid) DO UPDATE SET mime = excluded.mime",
    )
    .bind(&auth.did)
    .bind(stored.cid.to_string())
    .bind(&mime)
    .bind(stored.size as i64)
    .bind(db::now())
    .execute(&state.db)
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
    let row: Option<(String, i64)> = sqlx::query_as("SELECT mime, size FROM blobs WHERE did = ? AND cid = ?")
        .bind(&p.did)
        .bind(cid.to_string())
        .fetch_optional(&state.db)
        .await?;
    let not_found = || XrpcError::named("BlobNotFound", format!("Blob not found: {cid}"));
    let (mime, size) = row.ok_or_else(not_found)?;
    let file = state.blob_files.open(&cid).await.map_err(blob_error)?.ok_or_else(not_found)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
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
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_blobs(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<ListBlobsParams>,
) -> XrpcResult<Json<Value>> {
    let limit = p.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(XrpcError::invalid_request("limit must be between 1 and 1000"));
    }
    super::active_account(&state, &p.did).await?;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT cid FROM blobs WHERE did = ? AND cid > ? ORDER BY cid LIMIT ?")
        .bind(&p.did)
        .bind(p.cursor.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(&state.db)
        .await?;
    let cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.0.clone())).flatten();
    let mut out = json!({ "cids": rows.into_iter().map(|r| r.0).collect::<Vec<_>>() });
    if let Some(c) = cursor {
        out["cursor"] = json!(c);
    }
    Ok(Json(out))
}

//! `com.atproto.sync.*`: for now the repo export and the head. The export is assembled in
//! memory; issue 5 replaces it with a streamed one.

use atproto::commit::SignedCommit;
use atproto::syntax::Did;
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::XrpcQuery;
use crate::error::{XrpcError, XrpcResult};
use crate::state::AppState;
use crate::store::blocks::{BlockStore, Blocks, SyncReader};
use crate::store::db::accounts::{self, Account};

#[derive(Deserialize)]
pub struct DidParams {
    did: String,
}

async fn hosted(state: &AppState, did: &str) -> XrpcResult<(Account, atproto::Cid)> {
    let account = super::active_account(state, did).await?;
    let root = account
        .repo_root
        .as_deref()
        .ok_or_else(|| XrpcError::named("RepoNotFound", format!("No repo for DID: {did}")))?
        .parse()
        .map_err(|e| XrpcError::internal("stored root is invalid", e))?;
    Ok((account, root))
}

pub async fn get_latest_commit(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<DidParams>,
) -> XrpcResult<Json<Value>> {
    let (account, root) = hosted(&state, &p.did).await?;
    Ok(Json(json!({ "cid": root.to_string(), "rev": account.repo_rev })))
}

/// Deprecated `getHead`: the head commit's CID.
pub async fn get_head(State(state): State<AppState>, XrpcQuery(p): XrpcQuery<DidParams>) -> XrpcResult<Json<Value>> {
    let (_, root) = hosted(&state, &p.did).await?;
    Ok(Json(json!({ "root": root.to_string() })))
}

/// Deprecated `getCheckout`: the whole repo, as `getRepo` without `since`.
pub async fn get_checkout(state: State<AppState>, XrpcQuery(p): XrpcQuery<DidParams>) -> XrpcResult<Response> {
    get_repo(state, XrpcQuery(GetRepoParams { did: p.did, since: None })).await
}

#[derive(Deserialize)]
pub struct GetRepoParams {
    did: String,
    since: Option<String>,
}

/// The repo as a CAR, streamed from the per-repo block index (`repo_blocks`): one indexed query
/// inside a read transaction, so the export is one consistent revision even while writes go
/// on, and memory stays flat whatever the repo's size. With `since`, only the blocks the repo
/// gained after that revision, plus the head commit.
pub async fn get_repo(State(state): State<AppState>, XrpcQuery(p): XrpcQuery<GetRepoParams>) -> XrpcResult<Response> {
    super::active_account(&state, &p.did).await?;
    let mut tx = state.db.begin().await?;
    let root = accounts::repo_root(&mut *tx, &p.did).await?;
    let root: atproto::Cid = root
        .ok_or_else(|| XrpcError::named("RepoNotFound", format!("No repo for DID: {}", p.did)))?
        .parse()
        .map_err(|e| XrpcError::internal("stored root is invalid", e))?;
    let commit_bytes = state.blocks.get(&root).await?.ok_or_else(|| XrpcError::internal("repo block missing", root))?;

    let (out_tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let store = state.blocks.clone();
    let (did, since) = (p.did, super::since_param(p.since)?.unwrap_or_default());
    tokio::spawn(async move {
        let mut out = CarStream { car: atproto::car::CarWriter::new(Vec::new(), &[root]).expect("Vec"), tx: out_tx };
        out.car.write_block(&root, &commit_bytes).expect("writing to a Vec cannot fail");
        let result = out.repo_blocks(&store, &mut tx, &did, &since, root).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "getRepo stream ended early");
            let _ = out.tx.send(Err(std::io::Error::other(e))).await;
        }
        let _ = tx.rollback().await;
    });
    let stream = tokio_stream_from(rx);
    Ok(([(CONTENT_TYPE, "application/vnd.ipld.car")], axum::body::Body::from_stream(stream)).into_response())
}

/// Writes CAR sections into a channel, a batch per message.
struct CarStream {
    car: atproto::car::CarWriter<Vec<u8>>,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
}

/// Bytes gathered before a batch is sent on.
const CAR_CHUNK: usize = 256 * 1024;

impl CarStream {
    async fn flush(&mut self) -> Result<(), String> {
        self.tx.send(Ok(self.car.take_bytes())).await.map_err(|_| "client went away".to_owned())
    }

    /// Streams the repo's indexed blocks (bar the head, already written) newer than `since`.
    async fn repo_blocks(
        &mut self,
        store: &Blocks,
        conn: &mut sqlx::SqliteConnection,
        did: &str,
        since: &str,
        root: atproto::Cid,
    ) -> Result<(), String> {
        use futures_util::TryStreamExt;
        let root = root.to_string();
        let db_err = |e: sqlx::Error| e.to_string();
        if store.in_metadata_db() {
            let mut rows = crate::store::db::refs::block_bytes_since(conn, did, since, &root);
            while let Some((cid, bytes)) = rows.try_next().await.map_err(db_err)? {
                let cid: atproto::Cid = cid.parse().map_err(|e| format!("bad CID {cid}: {e}"))?;
                self.car.write_block(&cid, &bytes).expect("writing to a Vec cannot fail");
                if self.car.buffered() >= CAR_CHUNK {
                    self.flush().await?;
                }
            }
            return self.flush().await;
        }
        let cids = crate::store::db::refs::block_cids_since(conn, did, since, &root).await.map_err(db_err)?;
        let cids: Vec<atproto::Cid> =
            cids.into_iter().map(|c| c.parse()).collect::<Result<_, _>>().map_err(|e| format!("bad CID: {e}"))?;
        self.blocks(store, &cids).await
    }

    /// Reads `cids` in batches and writes them.
    async fn blocks(&mut self, store: &impl BlockStore, cids: &[atproto::Cid]) -> Result<(), String> {
        for batch in cids.chunks(256) {
            let blocks = store.get_many(batch).await.map_err(|e| e.to_string())?;
            for (cid, bytes) in batch.iter().zip(blocks) {
                let bytes = bytes.ok_or_else(|| format!("block {cid} missing"))?;
                self.car.write_block(cid, &bytes).expect("writing to a Vec cannot fail");
            }
            self.flush().await?;
        }
        self.flush().await
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[derive(Deserialize)]
pub struct RecordParams {
    did: String,
    collection: String,
    rkey: String,
}

/// A CAR proving a record: the signed head commit, the MST nodes on the record's path and the
/// record itself.
pub async fn get_record(State(state): State<AppState>, XrpcQuery(p): XrpcQuery<RecordParams>) -> XrpcResult<Response> {
    let (_, root) = hosted(&state, &p.did).await?;
    atproto::syntax::Nsid::new(p.collection.as_str())
        .map_err(|e| XrpcError::invalid_request(format!("Invalid collection: {e}")))?;
    atproto::syntax::RecordKey::new(p.rkey.as_str())
        .map_err(|e| XrpcError::invalid_request(format!("Invalid rkey: {e}")))?;
    let missing = |cid: atproto::Cid| XrpcError::internal("repo block missing", cid);
    let commit_bytes = state.blocks.get(&root).await?.ok_or_else(|| missing(root))?;
    let commit = SignedCommit::from_block(&commit_bytes).map_err(|e| XrpcError::internal("bad head commit", e))?;
    let key = format!("{}/{}", p.collection, p.rkey);
    let reader = SyncReader::new(&state.blocks);
    let tree = atproto::mst::Mst::load(&reader, commit.unsigned.data)
        .map_err(|e| XrpcError::internal("repo tree could not be read", e))?;
    let record = tree.get(&reader, &key).map_err(|e| XrpcError::internal("repo tree could not be read", e))?;
    let Some(record) = record else {
        return Err(XrpcError::named("RecordNotFound", format!("Could not locate record: {key}")));
    };
    let proof = atproto::mst::record_proof(&reader, commit.unsigned.data, &key)
        .map_err(|e| XrpcError::internal("repo tree could not be read", e))?;
    let record_bytes = state.blocks.get(&record).await?.ok_or_else(|| missing(record))?;
    let mut blocks = vec![(root, commit_bytes), (record, record_bytes)];
    blocks.extend(proof.iter().map(|(c, b)| (*c, b.to_vec())));
    let car = atproto::car::encode(&[root], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    Ok(([(CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
}

/// `cids` may repeat in the query string, so the raw query is parsed here.
pub async fn get_blocks(State(state): State<AppState>, uri: axum::http::Uri) -> XrpcResult<Response> {
    let mut did = None;
    let mut cids = Vec::new();
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "did" => did = Some(v.into_owned()),
            "cids" => cids.push(v.into_owned()),
            _ => {}
        }
    }
    let did = did.ok_or_else(|| XrpcError::invalid_request("did is required"))?;
    if cids.is_empty() {
        return Err(XrpcError::invalid_request("cids is required: name at least one block"));
    }
    let (_, root) = hosted(&state, &did).await?;
    if cids.len() > 1000 {
        return Err(XrpcError::invalid_request("At most 1000 cids per request"));
    }
    let mut blocks = Vec::with_capacity(cids.len());
    for raw in cids {
        let cid: atproto::Cid =
            raw.parse().map_err(|e| XrpcError::invalid_request(format!("Invalid cid {raw}: {e}")))?;
        let bytes = state
            .blocks
            .get(&cid)
            .await?
            .ok_or_else(|| XrpcError::named("BlockNotFound", format!("Could not find block: {cid}")))?;
        blocks.push((cid, bytes));
    }
    let car = atproto::car::encode(&[root], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    Ok(([(CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
}

pub async fn get_repo_status(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<DidParams>,
) -> XrpcResult<Json<Value>> {
    Did::new(p.did.as_str()).map_err(|e| XrpcError::invalid_request(format!("Invalid did: {e}")))?;
    let account = accounts::by_did(&state.db, &p.did)
        .await?
        .ok_or_else(|| XrpcError::named("RepoNotFound", format!("Could not find repo for DID: {}", p.did)))?;
    let mut out = json!({ "did": account.did, "active": account.active() });
    match account.status() {
        None => out["rev"] = json!(account.repo_rev),
        Some(status) => out["status"] = json!(status),
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct ListReposParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_repos(
    State(state): State<AppState>,
    XrpcQuery(p): XrpcQuery<ListReposParams>,
) -> XrpcResult<Json<Value>> {
    let limit = super::page_limit(p.limit, 500, 1000)?;
    // Accounts without a repo (none yet: every account gets a genesis commit) are skipped
    // rather than breaking the page.
    let rows = accounts::repos_page(&state.db, p.cursor.as_deref().unwrap_or(""), limit).await?;
    let cursor = super::next_cursor(&rows, limit, |r| r.did.clone());
    let repos: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let status = accounts::status_of(row.takedown_ref.is_some(), row.deactivated_at.is_some());
            let mut r =
                json!({ "did": row.did, "head": row.repo_root, "rev": row.repo_rev, "active": status.is_none() });
            if let Some(status) = status {
                r["status"] = json!(status);
            }
            r
        })
        .collect();
    let mut out = json!({ "repos": repos });
    if let Some(c) = cursor {
        out["cursor"] = json!(c);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct SubscribeParams {
    cursor: Option<String>,
}

pub async fn subscribe_repos(
    State(state): State<AppState>,
    client: Option<axum::Extension<crate::http::xrpc::extract::ClientAddr>>,
    XrpcQuery(p): XrpcQuery<SubscribeParams>,
    upgrade: axum::extract::WebSocketUpgrade,
) -> XrpcResult<Response> {
    // Some clients send an empty `cursor=` for "live only".
    let cursor = match p.cursor.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.parse::<i64>() {
            Ok(seq) if seq >= 0 => Some(seq),
            Ok(_) => return Err(XrpcError::invalid_request("cursor must not be negative")),
            Err(_) => return Err(XrpcError::invalid_request("cursor must be an integer")),
        },
    };
    let address = client.and_then(|c| c.0.0).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let firehose = state.firehose.clone();
    // A subscriber only ever sends pings and a close: anything large ends the connection rather
    // than being buffered. Frames go out in writes of about 32 KiB (several frames each), so a
    // subscriber being sent a replay page holds that much, not the 128 KiB the default allows.
    Ok(upgrade
        .read_buffer_size(4096)
        .max_message_size(16 * 1024)
        .max_frame_size(16 * 1024)
        .write_buffer_size(32 * 1024)
        .on_upgrade(move |socket| async move { firehose.serve(socket, cursor, address).await }))
}

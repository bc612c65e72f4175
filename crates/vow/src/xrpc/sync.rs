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
use crate::db::accounts::{self, Account};
use crate::error::{XrpcError, XrpcResult};
use crate::server::AppState;
use crate::storage::{BlockStore, SyncReader};

#[derive(Deserialize)]
pub struct DidParams {
    did: String,
}

async fn hosted(state: &AppState, did: &str) -> XrpcResult<(Account, atproto::Cid)> {
    Did::new(did).map_err(|e| XrpcError::invalid_request(format!("Invalid did: {e}")))?;
    let account = accounts::by_did(&state.db, did)
        .await?
        .ok_or_else(|| XrpcError::named("RepoNotFound", format!("Could not find repo for DID: {did}")))?;
    if !account.active() {
        return Err(XrpcError::named("RepoDeactivated", format!("Repo has been deactivated: {did}")));
    }
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

pub async fn get_repo(State(state): State<AppState>, XrpcQuery(p): XrpcQuery<DidParams>) -> XrpcResult<Response> {
    let (_, root) = hosted(&state, &p.did).await?;
    let missing = |cid: atproto::Cid| XrpcError::internal("repo block missing", cid);
    let commit_bytes = state.blocks.get(&root).await?.ok_or_else(|| missing(root))?;
    let commit = SignedCommit::from_block(&commit_bytes).map_err(|e| XrpcError::internal("bad head commit", e))?;
    let reader = SyncReader::new(&state.blocks);
    let all = atproto::mst::diff(&reader, None, commit.unsigned.data)
        .map_err(|e| XrpcError::internal("repo tree could not be read", e))?;
    let mut blocks = vec![(root, commit_bytes)];
    let cids = all.new_nodes.iter().copied().chain(all.ops.iter().filter_map(|op| op.new));
    for cid in cids {
        blocks.push((cid, state.blocks.get(&cid).await?.ok_or_else(|| missing(cid))?));
    }
    let car = atproto::car::encode(&[root], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    Ok(([(CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
}

//! `importRepo`: a repo arriving from another PDS as a CAR, streamed. Blocks are hash-checked
//! by the CAR reader and stored in batches as they arrive (the body is never held whole); the
//! commit must be the account's and signed by the DID's current `#atproto` key; the tree is
//! walked and every record indexed with its blob references, so `listMissingBlobs` lists what
//! must still be uploaded. Importing again (the same or a newer repo) replaces the index.

use std::collections::{HashMap, HashSet};

use atproto::Cid;
use atproto::blocks::{BlockMap, Overlay};
use atproto::commit::SignedCommit;
use atproto::crypto::PublicKey;
use atproto::syntax::Did;

use super::writer::RepoWriter;
use crate::error::{XrpcError, XrpcResult};
use crate::store::blocks::{BlockStore, SyncReader};
use crate::store::db::refs;

/// Blocks stored per batch, and bytes.
const BATCH_BLOCKS: usize = 2_000;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What an import stored.
#[derive(Debug, Clone)]
pub struct Imported {
    pub commit: Cid,
    pub rev: String,
    pub blocks: usize,
    pub records: usize,
    pub blobs: usize,
}

/// What the streaming side learned about the blocks as they passed.
#[derive(Default)]
struct Seen {
    cids: HashSet<Cid>,
    /// Tree nodes, kept to walk the tree without reading them back.
    nodes: BlockMap,
    /// Blob references of the blocks that have any.
    blobs: HashMap<Cid, Vec<Cid>>,
}

fn invalid(msg: impl Into<String>) -> XrpcError {
    XrpcError::invalid_request(msg)
}

/// Whether a block looks like an MST node (a map with `e` and `l`).
fn is_tree_node(value: &atproto::Ipld) -> bool {
    matches!(value, atproto::Ipld::Map(m) if m.contains_key("e") && m.contains_key("l"))
}

/// Imports the CAR in `body` as the repo of `did`, whose commit `key` must have signed. When it
/// fails, the blocks it stored that no repo references are released again.
pub async fn import(
    w: &RepoWriter,
    did: &Did,
    key: &PublicKey,
    body: axum::body::Body,
    max_bytes: u64,
) -> XrpcResult<Imported> {
    let mut stored = Vec::new();
    let result = import_into(w, did, key, body, max_bytes, &mut stored).await;
    if result.is_err() && !stored.is_empty() {
        match w.blocks.release_unreferenced(&w.db, stored).await {
            Ok(n) => tracing::info!(%did, released = n, "a failed import's blocks were released"),
            Err(e) => tracing::warn!(%did, error = %e, "a failed import's blocks could not be released"),
        }
    }
    result
}

async fn import_into(
    w: &RepoWriter,
    did: &Did,
    key: &PublicKey,
    body: axum::body::Body,
    max_bytes: u64,
    all: &mut Vec<Cid>,
) -> XrpcResult<Imported> {
    use futures_util::TryStreamExt;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BlockMap>(2);
    let limits = atproto::car::CarLimits {
        max_block_size: w.blocks.max_block_size(),
        max_total_bytes: max_bytes,
        ..Default::default()
    };
    let reading = tokio::task::spawn_blocking(move || -> Result<(Vec<Cid>, Seen), String> {
        let mut car = atproto::car::CarReader::new(reader, limits).map_err(|e| e.to_string())?;
        let roots = car.roots().to_vec();
        let (mut seen, mut batch, mut bytes) = (Seen::default(), BlockMap::new(), 0);
        while let Some((cid, data)) = car.next_block().map_err(|e| e.to_string())? {
            if let Ok(value) = atproto::data::decode(&data) {
                if is_tree_node(&value) {
                    seen.nodes.insert(cid, data.clone());
                } else {
                    let blobs = atproto::data::blob_refs(&value);
                    if !blobs.is_empty() {
                        seen.blobs.insert(cid, blobs);
                    }
                }
            }
            seen.cids.insert(cid);
            bytes += data.len();
            batch.insert(cid, data);
            if batch.len() >= BATCH_BLOCKS || bytes >= BATCH_BYTES {
                tx.blocking_send(std::mem::take(&mut batch)).map_err(|_| "the import was abandoned".to_owned())?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            tx.blocking_send(batch).map_err(|_| "the import was abandoned".to_owned())?;
        }
        Ok((roots, seen))
    });
    let mut stored = 0usize;
    while let Some(batch) = rx.recv().await {
        all.extend(batch.iter().map(|(cid, _)| *cid));
        w.blocks.put_many(&batch).await?;
        stored += batch.len();
        if stored / 20_000 != (stored - batch.len()) / 20_000 {
            tracing::info!(%did, blocks = stored, "importing a repo");
        }
    }
    let (roots, seen) = reading
        .await
        .map_err(|e| XrpcError::internal("the import reader stopped", e))?
        .map_err(|e| invalid(format!("The CAR could not be read: {e}")))?;
    // Until the index references them, no clean-up may release these blocks.
    let _protected = w.blocks.protect(all.clone()).await;
    let [root] = roots.as_slice() else { return Err(invalid("The CAR must have exactly one root: the commit")) };
    if !seen.cids.contains(root) {
        return Err(invalid("The CAR does not hold its root commit"));
    }
    let commit_bytes = w.blocks.get(root).await?.ok_or_else(|| XrpcError::internal("imported commit missing", root))?;
    let commit =
        SignedCommit::from_block(&commit_bytes).map_err(|e| invalid(format!("The root is not a commit: {e}")))?;
    if commit.unsigned.did.as_str() != did.as_str() {
        return Err(invalid(format!("The repo is {}'s, not {did}'s", commit.unsigned.did)));
    }
    commit
        .verify(key)
        .map_err(|_| invalid("The commit is not signed by the #atproto key of the DID's current document"))?;

    // The tree: every node and every record must be in the CAR.
    let data = commit.unsigned.data;
    let rev = commit.unsigned.rev.to_string();
    let reader = SyncReader::uncached(&w.blocks);
    let source = Overlay(&seen.nodes, &reader);
    // One walk of the whole tree (a diff against nothing): every node and every key.
    let diff =
        atproto::mst::diff(&source, None, data).map_err(|e| invalid(format!("The repo tree is incomplete: {e}")))?;
    let entries: Vec<(String, Cid)> = diff.ops.into_iter().filter_map(|op| Some((op.key, op.new?))).collect();
    let mut referenced: Vec<Cid> = diff.new_nodes.into_iter().collect();
    referenced.push(*root);
    let mut blob_count = HashSet::new();
    for (path, cid) in &entries {
        if !seen.cids.contains(cid) {
            return Err(invalid(format!("The CAR lacks the record {path} ({cid})")));
        }
        referenced.push(*cid);
        blob_count.extend(seen.blobs.get(cid).into_iter().flatten().copied());
    }

    // The index, in one transaction: new references first, then whatever the previous import
    // left that this one does not hold (so no block both imports hold is ever released).
    let now = crate::store::db::now();
    let mut txn = w.db.begin().await?;
    let mut batch = refs::batch();
    let mut pending = 0;
    for (path, cid) in &entries {
        let (collection, rkey) = path.split_once('/').ok_or_else(|| invalid(format!("Invalid record path {path}")))?;
        refs::push_set_record(&mut batch, did.as_str(), collection, rkey, Some(*cid), &rev, &now);
        let blobs = seen.blobs.get(cid).cloned().unwrap_or_default();
        refs::push_set_record_blobs(&mut batch, did.as_str(), collection, rkey, &blobs, true);
        pending += 1;
        if pending == 500 {
            refs::execute(&mut txn, std::mem::replace(&mut batch, refs::batch())).await?;
            pending = 0;
        }
    }
    refs::execute(&mut txn, batch).await?;
    for chunk in referenced.chunks(3_000) {
        let mut batch = refs::batch();
        refs::push_add_blocks(&mut batch, did.as_str(), &rev, chunk);
        refs::execute(&mut txn, batch).await?;
    }
    refs::drop_older_than_import(&mut txn, did.as_str(), &rev).await?;
    if w.blocks.in_metadata_db() && refs::blocks_missing(&mut txn, did.as_str()).await? {
        // Another account released an identical block while this import was streaming.
        return Err(XrpcError::named(
            "ImportInterrupted",
            "Some blocks were cleaned up during the import; import again",
        ));
    }
    crate::store::db::accounts::set_repo(&mut txn, did.as_str(), &root.to_string(), &rev).await?;
    txn.commit().await?;
    let imported =
        Imported { commit: *root, rev, blocks: referenced.len(), records: entries.len(), blobs: blob_count.len() };
    tracing::info!(%did, blocks = imported.blocks, records = imported.records, blobs = imported.blobs, "repo imported");
    Ok(imported)
}

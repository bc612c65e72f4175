//! The write pipeline: apply record writes to an account's repo and commit them with a
//! signature from the user's signer. One write per account at a time, from reading the root to
//! storing the new one; nothing becomes visible until the signature has been verified and the
//! blocks are stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atproto::Cid;
use atproto::blocks::{BlockMap, BlockSource, Overlay};
use atproto::commit::{SignedCommit, UnsignedCommit};
use atproto::crypto::PublicKey;
use atproto::lexicon::ValidationError;
use atproto::mst::Mst;
use atproto::syntax::{Did, Nsid, RecordKey, Tid};
use serde_json::{Value, json};

use crate::error::{XrpcError, XrpcResult};
use crate::service::events::{Event, RepoOp};
use crate::service::signer::OpSummary;
use crate::service::signer::protocol::{CommitEvidence, EvidenceOp};
use crate::store::blocks::{BlockCache, BlockStore, SyncReader};
use crate::store::db::refs;
use crate::store::db::{self, accounts};

/// Largest record accepted, in DAG-CBOR bytes.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Most writes in one `applyWrites` batch.
pub const MAX_WRITES: usize = 200;

/// One write. `swap` is the `swapRecord` check: `None` means no check, `Some(None)` that the
/// record must not exist, `Some(Some(cid))` that it must currently have that CID.
#[derive(Debug, Clone)]
pub enum Write {
    Create {
        collection: Nsid,
        rkey: Option<RecordKey>,
        value: Value,
    },
    /// Creates or replaces (putRecord).
    Put {
        collection: Nsid,
        rkey: RecordKey,
        value: Value,
        swap: Option<Option<Cid>>,
    },
    /// Replaces an existing record (applyWrites#update).
    Update {
        collection: Nsid,
        rkey: RecordKey,
        value: Value,
    },
    /// Deletes a record. `must_exist`: deleting what is not there is refused (applyWrites)
    /// rather than a no-op (deleteRecord).
    Delete {
        collection: Nsid,
        rkey: RecordKey,
        swap: Option<Option<Cid>>,
        must_exist: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// What one write did.
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub action: Action,
    pub uri: String,
    pub cid: Option<Cid>,
    pub validation_status: Option<&'static str>,
}

/// The commit a batch ended at (the current one if nothing changed).
#[derive(Debug, Clone)]
pub struct Committed {
    pub cid: Cid,
    pub rev: String,
    /// Whether these writes made a new commit (false when they changed nothing).
    pub new_commit: bool,
    pub results: Vec<WriteResult>,
}

impl Committed {
    pub fn commit_json(&self) -> Value {
        json!({ "cid": self.cid.to_string(), "rev": self.rev })
    }
}

/// What an account's lock keeps between writes: the head it last saw and the tree blocks it
/// read or wrote, so the next write does not fetch them again. Blocks are content-addressed and
/// so never stale; the head is checked against the database on every write.
/// The account's signing key is kept too: anything that changes an account's key or status
/// must hold the lock and call [`RepoCache::forget_account`].
#[derive(Default)]
pub struct RepoCache {
    head: Option<(Cid, Cid, Tid)>, // commit, data root, rev
    key: Option<PublicKey>,
    blocks: BlockCache,
}

impl RepoCache {
    /// Makes the next write read the account (key, status) and head from the database again.
    pub fn forget_account(&mut self) {
        self.key = None;
        self.head = None;
    }
}

/// Blocks kept per account; beyond this the cache starts over at the next commit.
const CACHE_BLOCKS: usize = 4096;

/// Per-account write locks, each guarding that account's [`RepoCache`].
#[derive(Default)]
pub struct RepoLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<RepoCache>>>>);

impl RepoLocks {
    pub fn get(&self, did: &str) -> Arc<tokio::sync::Mutex<RepoCache>> {
        self.0.lock().expect("locks").entry(did.to_owned()).or_default().clone()
    }
}

/// The write pipeline as a service: everything a commit needs, and nothing else.
#[derive(Clone)]
pub struct RepoWriter {
    pub db: sqlx::SqlitePool,
    pub blocks: crate::store::blocks::Blocks,
    pub signers: Arc<crate::service::signer::SignerHub>,
    pub firehose: Arc<crate::service::firehose::Firehose>,
    /// Shared with the other services that change an account's key or head.
    pub locks: Arc<RepoLocks>,
    pub lexicons: &'static atproto::lexicon::Catalog,
    pub tids: Arc<atproto::syntax::TidGenerator>,
    /// How long a write waits for the user's signer.
    pub signer_timeout: std::time::Duration,
}

/// A change to the record index and the event.
struct Change {
    action: Action,
    collection: String,
    rkey: String,
    cid: Option<Cid>,
    prev: Option<Cid>,
    /// Blobs the new record references.
    blobs: Vec<Cid>,
}

/// A record ready to store.
struct Prepared {
    cid: Cid,
    bytes: Vec<u8>,
    status: Option<&'static str>,
    blobs: Vec<Cid>,
}

fn invalid(msg: impl Into<String>) -> XrpcError {
    XrpcError::invalid_request(msg)
}

/// Encodes and validates a record.
fn prepare_record(w: &RepoWriter, collection: &Nsid, value: &Value, validate: Option<bool>) -> XrpcResult<Prepared> {
    match value.get("$type").and_then(Value::as_str) {
        Some(t) if t == collection.as_str() => {}
        Some(t) => return Err(invalid(format!("Invalid $type: expected {collection}, got {t}"))),
        None => return Err(invalid("Record must have a $type naming its collection")),
    }
    let ipld = atproto::data::record_from_json(value).map_err(|e| invalid(format!("Invalid record: {e}")))?;
    let status = match validate {
        Some(false) => None,
        _ => match w.lexicons.validate_record(collection.as_str(), &ipld) {
            Ok(()) => Some("valid"),
            Err(ValidationError::UnknownSchema(_)) if validate.is_none() => Some("unknown"),
            Err(ValidationError::UnknownSchema(_)) => {
                return Err(invalid(format!("Lexicon not found for {collection}; cannot validate")));
            }
            Err(e) => return Err(invalid(format!("Invalid {collection} record: {e}"))),
        },
    };
    let bytes = atproto::data::encode(&ipld).map_err(|e| invalid(format!("Invalid record: {e}")))?;
    let limit = MAX_RECORD_BYTES.min(w.blocks.max_block_size());
    if bytes.len() > limit {
        return Err(XrpcError::named(
            "RecordTooLarge",
            format!("Record is {} bytes; the limit is {limit}", bytes.len()),
        ));
    }
    Ok(Prepared { cid: atproto::cid::cbor_cid(&bytes), blobs: atproto::data::blob_refs(&ipld), bytes, status })
}

fn blob_not_found(cid: &Cid) -> XrpcError {
    XrpcError::named(
        "BlobNotFound",
        format!("Could not find blob {cid}; upload it with com.atproto.repo.uploadBlob before referencing it"),
    )
}

fn check_swap(path: &str, swap: &Option<Option<Cid>>, current: Option<Cid>) -> XrpcResult<()> {
    match swap {
        Some(expected) if *expected != current => Err(XrpcError::named(
            "InvalidSwap",
            format!(
                "Record {path} is at {}, not {}",
                current.map_or("nothing".into(), |c| c.to_string()),
                expected.map_or("nothing".into(), |c| c.to_string())
            ),
        )),
        _ => Ok(()),
    }
}

fn mst_error(e: atproto::mst::MstError) -> XrpcError {
    XrpcError::internal("repo tree could not be read", e)
}

/// What a commit changes, for the signer to check and the firehose to carry: the new blocks
/// plus the covering proof of each changed key in the new tree (the sync 1.1 event blocks),
/// and the changes with their old and new CIDs.
struct CommitProof {
    blocks: BlockMap,
    ops: Vec<RepoOp>,
    blobs: Vec<Cid>,
}

fn commit_proof(
    source: &impl BlockSource,
    new_blocks: &BlockMap,
    root: Cid,
    changes: &[Change],
) -> XrpcResult<CommitProof> {
    let paths: Vec<String> = changes.iter().map(|c| format!("{}/{}", c.collection, c.rkey)).collect();
    let blocks = atproto::mst::commit_event_blocks(source, new_blocks, root, paths.iter().map(String::as_str))
        .map_err(mst_error)?;
    let mut blobs = std::collections::BTreeSet::new();
    let mut ops = Vec::with_capacity(changes.len());
    for (c, path) in changes.iter().zip(paths) {
        blobs.extend(c.blobs.iter().copied());
        ops.push(RepoOp { action: c.action.name(), path, cid: c.cid, prev: c.prev });
    }
    Ok(CommitProof { blocks, ops, blobs: blobs.into_iter().collect() })
}

impl CommitProof {
    /// The evidence a signer checks before signing (see `signer::verify::check_commit`):
    /// with the event's blocks, the nodes of the previous tree the commit replaced, so that a
    /// signer can also compare the two trees along the changed keys.
    fn evidence(&self, prev_commit: &[u8], root: Cid, replaced_nodes: &BlockMap) -> CommitEvidence {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        CommitEvidence {
            prev_commit: b64(prev_commit),
            blocks: b64(&atproto::car::encode(&[root], self.blocks.iter().chain(replaced_nodes.iter()))),
            ops: self
                .ops
                .iter()
                .map(|op| EvidenceOp {
                    action: op.action.to_owned(),
                    path: op.path.clone(),
                    cid: op.cid.map(|c| c.to_string()),
                    prev: op.prev.map(|c| c.to_string()),
                })
                .collect(),
        }
    }

    /// The `#commit` event's CAR: the signed commit, then the proof blocks.
    fn event_car(&self, commit: Cid, commit_bytes: &[u8]) -> Vec<u8> {
        let first = [(&commit, commit_bytes)];
        atproto::car::encode(&[commit], first.into_iter().chain(self.blocks.iter()))
    }
}

/// The blocks `cids` as `source` has them.
fn read_blocks<'a>(source: &impl BlockSource, cids: impl IntoIterator<Item = &'a Cid>) -> XrpcResult<BlockMap> {
    let mut out = BlockMap::new();
    for cid in cids {
        let bytes = source
            .get_block(cid)
            .map_err(|e| XrpcError::internal("repo tree could not be read", e))?
            .ok_or_else(|| XrpcError::internal("repo tree block missing", cid))?;
        out.insert(*cid, bytes.into_owned());
    }
    Ok(out)
}

/// Waits until every commit already sequenced is stored. A write releases its account's lock
/// once its commit is sequenced, before the transaction ends (see [`apply`]), so whoever
/// takes the lock and reads the root from the database must settle first or read a stale one.
async fn settle(w: &RepoWriter) -> Result<(), sqlx::Error> {
    drop(w.firehose.sequencer().await?);
    Ok(())
}

/// Moves the account's root from `old` to `new` at `rev` if it is at `old`: the
/// compare-and-swap behind the account lock. Returns false when it was not there: something
/// outside the write pipeline moved the root, or the commit before this one failed to store.
async fn move_root(conn: &mut sqlx::SqliteConnection, did: &Did, old: Cid, new: Cid, rev: &Tid) -> XrpcResult<bool> {
    Ok(accounts::move_root(conn, did.as_str(), &old.to_string(), &new.to_string(), rev.as_str()).await?)
}

/// Releases, after the fact, those of `candidates` no repo references (a no-op on the
/// embedded store, which does it inside the transaction).
fn release_later(w: &RepoWriter, candidates: Vec<Cid>) {
    if w.blocks.in_metadata_db() {
        return;
    }
    let (store, db) = (w.blocks.clone(), w.db.clone());
    tokio::spawn(async move {
        if let Err(e) = store.release_unreferenced(&db, candidates).await {
            tracing::warn!(error = %e, "could not release blocks no repo references");
        }
    });
}

fn block_cids_of(blocks: &BlockMap) -> Vec<Cid> {
    blocks.iter().map(|(cid, _)| *cid).collect()
}

/// The key an account's commits must be signed with, if the account may write.
async fn writable_key(w: &RepoWriter, did: &Did) -> XrpcResult<PublicKey> {
    let account = accounts::by_did(&w.db, did.as_str())
        .await?
        .ok_or_else(|| XrpcError::named("RepoNotFound", format!("Could not find repo: {did}")))?;
    match account.status() {
        None => {}
        Some("takendown") => return Err(XrpcError::named("RepoTakendown", "This repo has been taken down")),
        Some(_) => return Err(XrpcError::named("RepoDeactivated", "This account is deactivated")),
    }
    let key_did = account.signing_key.as_deref().ok_or_else(|| {
        XrpcError::named(
            "SigningKeyRequired",
            "This account has no signing key yet. Register a passkey on your account page (or run `vow signer`) \
             before writing.",
        )
    })?;
    PublicKey::from_did_key(key_did).map_err(|e| XrpcError::internal("stored signing key is invalid", e))
}

/// The writes of one batch applied to the tree: what changed, ready to be signed.
struct Staged {
    /// New record blocks and the new tree's blocks.
    blocks: BlockMap,
    root: Cid,
    changes: Vec<Change>,
    results: Vec<WriteResult>,
    summaries: Vec<OpSummary>,
}

/// Applies `writes` to the tree at `prev_data`, reading tree blocks through `reader`. Checks
/// every write (existence, swaps, lexicon validation) and touches nothing outside the tree.
fn stage(
    w: &RepoWriter,
    reader: &impl BlockSource,
    did: &Did,
    prev_data: Cid,
    writes: &[Write],
    validate: Option<bool>,
) -> XrpcResult<Staged> {
    let mut tree = Mst::load(reader, prev_data).map_err(mst_error)?;
    let mut blocks = BlockMap::new();
    let mut changes = Vec::new();
    let mut results = Vec::new();
    let mut summaries = Vec::new();
    for write in writes {
        let (collection, rkey) = match &write {
            Write::Create { collection, rkey, .. } => (
                collection.clone(),
                rkey.clone().unwrap_or_else(|| {
                    RecordKey::new(w.tids.next().into_string()).expect("a TID is a valid record key")
                }),
            ),
            Write::Put { collection, rkey, .. }
            | Write::Update { collection, rkey, .. }
            | Write::Delete { collection, rkey, .. } => (collection.clone(), rkey.clone()),
        };
        let path = format!("{collection}/{rkey}");
        let uri = format!("at://{did}/{path}");
        let current = tree.get(reader, &path).map_err(mst_error)?;
        let (action, value, swap) = match write {
            Write::Create { value, .. } => {
                if current.is_some() {
                    return Err(invalid(format!("Record already exists: {uri}")));
                }
                (Action::Create, Some(value), None)
            }
            Write::Put { value, swap, .. } => {
                (if current.is_some() { Action::Update } else { Action::Create }, Some(value), *swap)
            }
            Write::Update { value, .. } => {
                if current.is_none() {
                    return Err(invalid(format!("Record does not exist: {uri}")));
                }
                (Action::Update, Some(value), None)
            }
            Write::Delete { swap, must_exist, .. } => {
                if *must_exist && current.is_none() {
                    return Err(invalid(format!("Could not find record to delete: {uri}")));
                }
                (Action::Delete, None, *swap)
            }
        };
        check_swap(&path, &swap, current)?;
        match value {
            Some(value) => {
                let Prepared { cid, bytes, status, blobs } = prepare_record(w, &collection, value, validate)?;
                results.push(WriteResult { action, uri, cid: Some(cid), validation_status: status });
                if current == Some(cid) {
                    continue; // identical record: nothing to commit
                }
                tree.insert(reader, &path, cid).map_err(mst_error)?;
                blocks.insert(cid, bytes);
                changes.push(Change {
                    action,
                    collection: collection.to_string(),
                    rkey: rkey.to_string(),
                    cid: Some(cid),
                    prev: current,
                    blobs,
                });
            }
            None => {
                results.push(WriteResult { action, uri, cid: None, validation_status: None });
                if current.is_none() {
                    continue; // deleting what is not there changes nothing
                }
                tree.remove(reader, &path).map_err(mst_error)?;
                changes.push(Change {
                    action,
                    collection: collection.to_string(),
                    rkey: rkey.to_string(),
                    cid: None,
                    prev: current,
                    blobs: Vec::new(),
                });
            }
        }
        summaries.push(OpSummary {
            kind: format!("com.atproto.repo.applyWrites#{}", action.name()),
            collection: collection.to_string(),
            rkey: Some(rkey.to_string()),
        });
    }
    let data = if changes.is_empty() { None } else { Some(tree.commit()) };
    let root = data.as_ref().map_or(prev_data, |d| d.root);
    if let Some(data) = data {
        blocks.extend(data.blocks);
    }
    Ok(Staged { blocks, root, changes, results, summaries })
}

/// Why one attempt at a commit did not land.
enum Attempt {
    /// The client's answer.
    Failed(XrpcError),
    /// The root was not where this commit expected it: the commit it was built on (sequenced
    /// before it, while it was being signed) failed to store. Nothing was stored; build again.
    RootMoved,
}

impl From<XrpcError> for Attempt {
    fn from(e: XrpcError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        Attempt::Failed(e.into())
    }
}

impl From<crate::service::signer::SignError> for Attempt {
    fn from(e: crate::service::signer::SignError) -> Self {
        Attempt::Failed(e.into())
    }
}

impl From<crate::store::blocks::StoreError> for Attempt {
    fn from(e: crate::store::blocks::StoreError) -> Self {
        Attempt::Failed(e.into())
    }
}

/// How often a write is rebuilt after the commit it was built on failed to store.
const ROOT_MOVED_RETRIES: usize = 3;

/// Applies `writes` to the repo of `did` and commits them with the user's signature.
pub async fn apply(
    w: &RepoWriter,
    did: &Did,
    writes: Vec<Write>,
    swap_commit: Option<Cid>,
    validate: Option<bool>,
) -> XrpcResult<Committed> {
    if writes.is_empty() {
        return Err(invalid("No writes given"));
    }
    if writes.len() > MAX_WRITES {
        return Err(invalid(format!("Too many writes: {} (at most {MAX_WRITES})", writes.len())));
    }
    for attempt in 1.. {
        match apply_once(w, did, &writes, swap_commit, validate).await {
            Ok(committed) => return Ok(committed),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::RootMoved) if attempt < ROOT_MOVED_RETRIES => {
                tracing::warn!(%did, attempt, "the commit this write was built on did not store; building it again");
            }
            Err(Attempt::RootMoved) => break,
        }
    }
    Err(XrpcError::internal("repo root kept moving during a locked write", did))
}

/// The head of the account's repo: from the cache, or (after settling) from the database.
async fn current_head(w: &RepoWriter, did: &Did, cache: &RepoCache) -> XrpcResult<(Cid, Cid, Tid)> {
    if let Some((head, data, rev)) = &cache.head {
        return Ok((*head, *data, rev.clone()));
    }
    settle(w).await?;
    let root = accounts::repo_root(&w.db, did.as_str()).await?;
    let head: Cid = root
        .as_deref()
        .ok_or_else(|| XrpcError::named("RepoNotFound", "This account has no repo"))?
        .parse()
        .map_err(|e| XrpcError::internal("stored repo root is invalid", e))?;
    let block = w.blocks.get(&head).await?.ok_or_else(|| XrpcError::internal("head commit missing", head))?;
    let commit = SignedCommit::from_block(&block).map_err(|e| XrpcError::internal("head commit does not decode", e))?;
    Ok((head, commit.unsigned.data, commit.unsigned.rev))
}

/// The account's lock, held from reading the head until the commit is sequenced, with what a
/// write builds on: the key commits must verify against and the current head.
struct Locked {
    cache: tokio::sync::OwnedMutexGuard<RepoCache>,
    key: PublicKey,
    head: Cid,
    prev_data: Cid,
    prev_rev: Tid,
}

/// Phase 1: take the account's lock and read the key and head (from the cache when it has them).
async fn lock_head(w: &RepoWriter, did: &Did) -> XrpcResult<Locked> {
    let mut cache = w.locks.get(did.as_str()).lock_owned().await;
    let key = match &cache.key {
        Some(key) => key.clone(),
        None => {
            let key = writable_key(w, did).await?;
            cache.key = Some(key.clone());
            key
        }
    };
    let (head, prev_data, prev_rev) = current_head(w, did, &cache).await?;
    Ok(Locked { cache, key, head, prev_data, prev_rev })
}

/// Phase 3: every blob a new record references must have been uploaded by this account.
async fn check_blobs(conn: &mut sqlx::SqliteConnection, did: &Did, referenced: &[Cid]) -> XrpcResult<()> {
    if referenced.is_empty() {
        return Ok(());
    }
    match refs::missing_blobs(conn, did.as_str(), referenced).await?.first() {
        Some(cid) => Err(blob_not_found(cid)),
        None => Ok(()),
    }
}

/// What the commit changes and what it stops referencing, for the signer, the event and the
/// block release.
struct Proven {
    proof: CommitProof,
    /// The evidence the signer checks.
    evidence: CommitEvidence,
    /// Blocks no longer referenced once the commit lands: replaced tree nodes, the old commit,
    /// and the old versions of changed records (kept if another key still holds the same CID).
    released: Vec<Cid>,
}

/// Phase 4: the proof of the staged changes, read through the new blocks and the account's
/// cache (which goes back to the lock whatever the outcome).
fn prove(w: &RepoWriter, locked: &mut Locked, staged: &Staged) -> XrpcResult<Proven> {
    let reader = SyncReader::with_cache(&w.blocks, std::mem::take(&mut locked.cache.blocks));
    let proven = (|| {
        let source = Overlay(&staged.blocks, &reader);
        let proof = commit_proof(&source, &staged.blocks, staged.root, &staged.changes)?;
        let removed = atproto::mst::diff(&source, Some(locked.prev_data), staged.root).map_err(mst_error)?;
        let replaced = read_blocks(&reader, &removed.removed_nodes)?;
        let prev_commit = reader
            .get_block(&locked.head)
            .map_err(|e| XrpcError::internal("head commit could not be read", e))?
            .ok_or_else(|| XrpcError::internal("head commit missing", locked.head))?;
        let evidence = proof.evidence(&prev_commit, staged.root, &replaced);
        let mut released: Vec<Cid> = removed.removed_nodes.into_iter().collect();
        released.push(locked.head);
        released.extend(staged.changes.iter().filter_map(|c| c.prev));
        Ok(Proven { proof, evidence, released })
    })();
    locked.cache.blocks = reader.into_cache();
    proven
}

/// Phase 5: the user's signature over the commit, from their signer. The hub hands back only
/// signatures it has verified against `key` over these bytes. Returns the signed commit block.
async fn sign(
    w: &RepoWriter,
    did: &Did,
    key: PublicKey,
    unsigned: UnsignedCommit,
    summaries: Vec<OpSummary>,
    evidence: CommitEvidence,
) -> Result<(Cid, Vec<u8>), crate::service::signer::SignError> {
    let bytes = unsigned.bytes_to_sign();
    let sig =
        w.signers.request_with_deadline(did.as_str(), key, bytes, summaries, Some(evidence), w.signer_timeout).await?;
    Ok(unsigned.with_signature(sig).to_block_with_cid())
}

/// Phase 6: the commit's blocks go to the block store (an IPFS node; the embedded store takes
/// them inside the transaction instead). Until the new root is committed, no clean-up
/// elsewhere may release them: the returned guard says so.
async fn put_blocks(
    w: &RepoWriter,
    blocks: &BlockMap,
) -> Result<crate::store::blocks::Protected, crate::store::blocks::StoreError> {
    let protected = w.blocks.protect(block_cids_of(blocks)).await;
    if !w.blocks.in_metadata_db() {
        w.blocks.put_many(blocks).await?;
    }
    Ok(protected)
}

/// A signed commit, ready to store.
struct Landing<'a> {
    did: &'a Did,
    /// The root it replaces.
    head: Cid,
    commit: Cid,
    rev: &'a Tid,
    /// Every block it adds, the commit included.
    blocks: &'a BlockMap,
    changes: &'a [Change],
    released: &'a [Cid],
    /// Blobs its records reference, checked again inside the transaction.
    referenced: &'a [Cid],
}

/// Phase 7: the root moves, the record index, block references and blob references change and
/// the event is appended, in one transaction (and one round trip for the statements). Fails
/// with [`Attempt::RootMoved`] when the root is no longer at `head`.
async fn store(
    w: &RepoWriter,
    c: Landing<'_>,
    events: &mut crate::service::firehose::Sequencer<'_>,
    event: Event<'_>,
) -> Result<(), Attempt> {
    let did = c.did.as_str();
    let mut tx = w.db.begin().await?;
    if !move_root(&mut tx, c.did, c.head, c.commit, c.rev).await? {
        return Err(Attempt::RootMoved);
    }
    // The record index goes before the block references that consult it.
    let mut batch = refs::batch();
    if w.blocks.in_metadata_db() {
        crate::store::blocks::push_insert_blocks(&mut batch, c.blocks);
    }
    for ch in c.changes {
        refs::push_set_record(&mut batch, did, &ch.collection, &ch.rkey, ch.cid, c.rev.as_str(), &db::now());
        if ch.prev.is_some() || !ch.blobs.is_empty() {
            refs::push_set_record_blobs(&mut batch, did, &ch.collection, &ch.rkey, &ch.blobs, ch.prev.is_some());
        }
    }
    refs::push_add_blocks(&mut batch, did, c.rev.as_str(), &block_cids_of(c.blocks));
    refs::push_drop_blocks(&mut batch, did, c.released);
    // The clean-up of unreferenced blobs may have run since the first check.
    check_blobs(&mut tx, c.did, c.referenced).await?;
    events.push(&mut batch, event);
    refs::execute(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(())
}

/// One attempt at a write, phase by phase.
async fn apply_once(
    w: &RepoWriter,
    did: &Did,
    writes: &[Write],
    swap_commit: Option<Cid>,
    validate: Option<bool>,
) -> Result<Committed, Attempt> {
    let mut locked = lock_head(w, did).await?;
    let started = std::time::Instant::now();
    if let Some(swap) = swap_commit
        && swap != locked.head
    {
        let msg = format!("The repo is at commit {}, not {swap}", locked.head);
        return Err(XrpcError::named("InvalidSwap", msg).into());
    }

    // Phase 2. The cache holds blocks of commits sequenced but perhaps not yet stored, which
    // the next write needs: it goes back to the cache whether or not these writes stage.
    let reader = SyncReader::with_cache(&w.blocks, std::mem::take(&mut locked.cache.blocks));
    let staged = stage(w, &reader, did, locked.prev_data, writes, validate);
    locked.cache.blocks = reader.into_cache();
    let staged = staged?;
    if staged.changes.is_empty() {
        let rev = locked.prev_rev.to_string();
        return Ok(Committed { cid: locked.head, rev, new_commit: false, results: staged.results });
    }
    let referenced: Vec<Cid> = staged.changes.iter().flat_map(|c| c.blobs.iter().copied()).collect();
    check_blobs(&mut *w.db.acquire().await?, did, &referenced).await?;
    let Proven { proof, evidence, released } = prove(w, &mut locked, &staged)?;

    let Staged { mut blocks, root, changes, results, summaries } = staged;
    let rev = w.tids.next_after(Some(&locked.prev_rev));
    let unsigned = UnsignedCommit::new(did.clone(), root, rev.clone());
    crate::service::metrics::commit_phase("staging", started.elapsed());
    let signing = std::time::Instant::now();
    let (commit, commit_bytes) = sign(w, did, locked.key.clone(), unsigned, summaries, evidence).await?;
    crate::service::metrics::commit_phase("signing", signing.elapsed());
    let storing = std::time::Instant::now();
    let event_car = proof.event_car(commit, &commit_bytes);
    blocks.insert(commit, commit_bytes);
    let protected = put_blocks(w, &blocks).await?;

    // The sequencer orders every repo transaction, so this commit's place is now fixed: the
    // account's next write may build on it (and be signed) while it is stored. If storing
    // fails, that write's compare-and-swap on the root fails as well, and it is built again.
    // Every earlier commit is stored by now, so the cache may start over here, as long as it
    // keeps this commit's blocks until they are.
    let mut events = w.firehose.sequencer().await?;
    let Locked { mut cache, head, prev_data, prev_rev, .. } = locked;
    if cache.blocks.len() > CACHE_BLOCKS {
        cache.blocks.clear();
    }
    for (cid, bytes) in blocks.iter() {
        cache.blocks.insert(*cid, bytes.to_vec().into());
    }
    cache.head = Some((commit, root, rev.clone()));
    let lock = tokio::sync::OwnedMutexGuard::mutex(&cache).clone();
    drop(cache);

    let landing = Landing {
        did,
        head,
        commit,
        rev: &rev,
        blocks: &blocks,
        changes: &changes,
        released: &released,
        referenced: &referenced,
    };
    let event = Event::Commit {
        did: did.as_str(),
        commit,
        rev: rev.as_str(),
        since: Some(prev_rev.as_str()),
        blocks: event_car,
        ops: proof.ops,
        blobs: proof.blobs,
        prev_data: Some(prev_data),
    };
    if let Err(e) = store(w, landing, &mut events, event).await {
        lock.lock().await.head = None;
        drop(events);
        drop(protected);
        // Blocks stored for a commit that never became the root: unpin those no repo holds.
        release_later(w, block_cids_of(&blocks));
        return Err(e);
    }
    events.publish();
    crate::service::metrics::commit_phase("storing", storing.elapsed());
    metrics::counter!("vow_commits_total").increment(1);
    release_later(w, released);
    Ok(Committed { cid: commit, rev: rev.into_string(), new_commit: true, results })
}

/// Re-signs the head commit with the account's key when that key did not sign it: the genesis
/// commit (signed by the PDS key, which stops being the account's key at the handover) or a
/// commit signed by a key since replaced. The new commit has the same tree and a new rev, and
/// is announced with `#sync`, so a relay can verify the repo with the key the DID document
/// names before the account's next write. Needs the user's signer; returns whether it re-signed.
///
/// It composes the write's phases, holding the lock until the commit is stored: there are no
/// changes to stage or prove, and the event is `#sync` instead of `#commit`.
pub async fn resign_head(w: &RepoWriter, did: &Did) -> XrpcResult<bool> {
    let Some(account) = accounts::by_did(&w.db, did.as_str()).await? else { return Ok(false) };
    // A deactivated repo is announced again when it is activated, re-signed then.
    if !account.active() {
        return Ok(false);
    }
    let Some(key_did) = account.signing_key.as_deref() else { return Ok(false) };
    let key = PublicKey::from_did_key(key_did).map_err(|e| XrpcError::internal("stored signing key is invalid", e))?;
    let mut cache = w.locks.get(did.as_str()).lock_owned().await;
    settle(w).await?;
    let root = accounts::repo_root(&w.db, did.as_str()).await?;
    let Some(head) = root.and_then(|r| r.parse::<Cid>().ok()) else { return Ok(false) };
    let block = w.blocks.get(&head).await?.ok_or_else(|| XrpcError::internal("head commit missing", head))?;
    let current =
        SignedCommit::from_block(&block).map_err(|e| XrpcError::internal("head commit does not decode", e))?;
    if current.verify(&key).is_ok() {
        return Ok(false);
    }
    let rev = w.tids.next_after(Some(&current.unsigned.rev));
    let unsigned = UnsignedCommit::new(did.clone(), current.unsigned.data, rev.clone());
    let summary =
        OpSummary { kind: "com.atproto.sync.subscribeRepos#sync".into(), collection: "repo".into(), rkey: None };
    // The same tree under a new revision: no changes, so no blocks but the previous commit.
    let no_changes = CommitProof { blocks: BlockMap::new(), ops: Vec::new(), blobs: Vec::new() };
    let evidence = no_changes.evidence(&block, current.unsigned.data, &BlockMap::new());
    let (commit, commit_bytes) = sign(w, did, key, unsigned, vec![summary], evidence).await?;
    let mut blocks = BlockMap::new();
    blocks.insert(commit, commit_bytes);
    let _protected = put_blocks(w, &blocks).await?;
    let car = atproto::car::encode(&[commit], blocks.iter());
    let mut events = w.firehose.sequencer().await?;
    let landing =
        Landing { did, head, commit, rev: &rev, blocks: &blocks, changes: &[], released: &[head], referenced: &[] };
    let event = Event::Sync { did: did.as_str(), rev: rev.as_str(), blocks: car };
    cache.head = None;
    match store(w, landing, &mut events, event).await {
        Ok(()) => {}
        Err(Attempt::Failed(e)) => {
            release_later(w, vec![commit]);
            return Err(e);
        }
        Err(Attempt::RootMoved) => {
            release_later(w, vec![commit]);
            return Err(XrpcError::internal("repo root moved during a locked re-sign", did));
        }
    }
    events.publish();
    release_later(w, vec![head]);
    tracing::info!(%did, %rev, "head re-signed with the account's key and announced with #sync");
    Ok(true)
}

/// What a new signer connection triggers: re-signing the account's head if its key did not
/// sign it (see [`resign_head`]), in the background.
pub fn resign_when_ready(w: RepoWriter, did: String) -> impl FnOnce() + Send + 'static {
    move || {
        tokio::spawn(async move {
            let Ok(did) = Did::new(did.as_str()) else { return };
            if let Err(e) = resign_head(&w, &did).await {
                tracing::warn!(%did, error = ?e, "could not re-sign the head with the account's key");
            }
        });
    }
}

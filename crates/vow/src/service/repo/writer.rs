//! The write pipeline: apply record writes to an account's repo and commit them with a
//! signature from the user's signer. One write per account at a time, from reading the root to
//! storing the new one; nothing becomes visible until the signature has been verified and the
//! blocks are stored.

use std::collections::HashMap;
use std::sync::Arc;

use atproto::Cid;
use atproto::blocks::{BlockMap, BlockSource, Overlay};
use atproto::commit::{SignedCommit, UnsignedCommit};
use atproto::crypto::PublicKey;
use atproto::lexicon::ValidationError;
use atproto::mst::Mst;
use atproto::syntax::{Did, Nsid, RecordKey, Tid};
use serde_json::{Value, json};

use crate::error::{XrpcError, XrpcResult};
use crate::service::events::{self, Event, RepoOp};
use crate::service::signer::OpSummary;
use crate::service::signer::protocol::{CommitEvidence, EvidenceOp};
use crate::store::blocks::{BlockCache, BlockStore, SyncReader};
use crate::store::db::accounts;
use crate::store::db::commits::{CommitRows, EventRow, Outcome, RecordRow};
use crate::store::db::refs;

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

use super::queue::{Account, Job};
pub use super::queue::{RepoCache, RepoLocks};

/// Record bytes kept per account between writes; past this the cache starts over.
const CACHE_BYTES: usize = 1024 * 1024;

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
    /// Signed commits waiting to be stored, all accounts together.
    pub stores: Arc<StoreQueue>,
    /// The connection they are stored on.
    pub commits: Arc<crate::store::db::commits::CommitStore>,
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

fn blob_not_found(cid: impl std::fmt::Display) -> XrpcError {
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

/// Moves the account's root from `old` to `new` at `rev` if it is at `old`: the
/// compare-and-swap behind the account lock. Returns false when it was not there: something
/// outside the write pipeline moved the root, or the commit before this one failed to store.
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

/// What a batch's writes did to the tree: the changes, ready to be signed.
struct Staged {
    /// New record blocks and the new tree's blocks.
    blocks: BlockMap,
    root: Cid,
    changes: Vec<Change>,
    summaries: Vec<OpSummary>,
}

/// One write with its path resolved and its record encoded and validated (or why not).
struct Resolved {
    collection: Nsid,
    rkey: RecordKey,
    path: String,
    /// None for a delete.
    prepared: Option<XrpcResult<Prepared>>,
}

/// Most record bytes one batch gathers from several requests (a single request may pass it).
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Encodes and validates every write of `job` (pure: no tree, no database).
fn resolve(w: &RepoWriter, job: &Job) -> Vec<Resolved> {
    let resolve_one = |write: &Write| {
        let (collection, rkey, value) = match write {
            Write::Create { collection, rkey, value } => (
                collection.clone(),
                rkey.clone().unwrap_or_else(|| {
                    RecordKey::new(w.tids.next().into_string()).expect("a TID is a valid record key")
                }),
                Some(value),
            ),
            Write::Put { collection, rkey, value, .. } | Write::Update { collection, rkey, value } => {
                (collection.clone(), rkey.clone(), Some(value))
            }
            Write::Delete { collection, rkey, .. } => (collection.clone(), rkey.clone(), None),
        };
        let prepared = value.map(|v| prepare_record(w, &collection, v, job.validate));
        Resolved { path: format!("{collection}/{rkey}"), collection, rkey, prepared }
    };
    job.writes.iter().map(resolve_one).collect()
}

/// Phase 2a: the jobs of this batch, each with its writes resolved, and those left for the next
/// batch. A job joins only if it touches no record an earlier job of the batch touches (one
/// commit holds one change per record) and the batch's records stay under
/// [`MAX_BATCH_BYTES`]; the first job always joins. The rest keep their places in the queue.
fn gather(w: &RepoWriter, jobs: Vec<Job>) -> (Vec<(Job, Vec<Resolved>)>, Vec<Job>) {
    let mut kept: Vec<(Job, Vec<Resolved>)> = Vec::with_capacity(jobs.len());
    let mut paths = std::collections::HashSet::new();
    let mut bytes = 0;
    let mut jobs = jobs.into_iter();
    for job in jobs.by_ref() {
        let resolved = resolve(w, &job);
        let own_bytes: usize =
            resolved.iter().filter_map(|r| r.prepared.as_ref()?.as_ref().ok()).map(|p| p.bytes.len()).sum();
        let overlaps = resolved.iter().any(|r| paths.contains(&r.path));
        if !kept.is_empty() && (overlaps || bytes + own_bytes > MAX_BATCH_BYTES) {
            let mut rest = vec![job];
            rest.extend(jobs);
            return (kept, rest);
        }
        bytes += own_bytes;
        paths.extend(resolved.iter().map(|r| r.path.clone()));
        kept.push((job, resolved));
    }
    (kept, Vec::new())
}

/// Phase 2b: the blobs the batch's records reference that this account has not uploaded.
async fn missing_blobs(
    w: &RepoWriter,
    did: &Did,
    kept: &[(Job, Vec<Resolved>)],
) -> XrpcResult<std::collections::HashSet<Cid>> {
    let referenced: std::collections::BTreeSet<Cid> = kept
        .iter()
        .flat_map(|(_, resolved)| resolved)
        .filter_map(|r| r.prepared.as_ref()?.as_ref().ok())
        .flat_map(|p| p.blobs.iter().copied())
        .collect();
    if referenced.is_empty() {
        return Ok(Default::default());
    }
    let referenced: Vec<Cid> = referenced.into_iter().collect();
    Ok(refs::missing_blobs(&mut *w.db.acquire().await?, did.as_str(), &referenced).await?.into_iter().collect())
}

/// What one job's writes did: their answers, and whether they changed anything.
type JobOutcome = XrpcResult<(Vec<WriteResult>, bool)>;

/// Phase 2c: applies each job's writes to the tree at `prev_data`, reading tree blocks through
/// `reader`. Each job is checked on its own (existence, swaps, validation, blobs): one that
/// fails leaves the tree as it was and the others go on. The outer error (the tree could not be
/// read) fails the whole batch.
fn stage(
    reader: &impl BlockSource,
    did: &Did,
    head: Cid,
    prev_data: Cid,
    kept: &[(Job, Vec<Resolved>)],
    missing: &std::collections::HashSet<Cid>,
) -> XrpcResult<(Staged, Vec<JobOutcome>)> {
    let mut tree = Mst::load(reader, prev_data).map_err(mst_error)?;
    let mut staged = Staged { blocks: BlockMap::new(), root: prev_data, changes: Vec::new(), summaries: Vec::new() };
    let mut outcomes = Vec::with_capacity(kept.len());
    for (job, resolved) in kept {
        // The commit a swap names must be the one this job builds on.
        if let Some(swap) = job.swap_commit
            && (swap != head || !staged.changes.is_empty())
        {
            let at = if staged.changes.is_empty() { head.to_string() } else { "a newer commit".into() };
            outcomes.push(Err(XrpcError::named("InvalidSwap", format!("The repo is at {at}, not {swap}"))));
            continue;
        }
        outcomes.push(stage_job(reader, did, &mut tree, job, resolved, missing, &mut staged)?);
    }
    if !staged.changes.is_empty() {
        let data = tree.commit();
        staged.root = data.root;
        staged.blocks.extend(data.blocks);
    }
    Ok((staged, outcomes))
}

/// One job of [`stage`]: every write is checked against the tree (and the job's own earlier
/// writes) before any is applied.
fn stage_job(
    reader: &impl BlockSource,
    did: &Did,
    tree: &mut Mst,
    job: &Job,
    resolved: &[Resolved],
    missing: &std::collections::HashSet<Cid>,
    staged: &mut Staged,
) -> XrpcResult<JobOutcome> {
    let mut own: HashMap<&str, Option<Cid>> = HashMap::new();
    let mut results = Vec::with_capacity(resolved.len());
    let mut pending: Vec<(Change, Option<&Prepared>)> = Vec::new();
    for (write, r) in job.writes.iter().zip(resolved) {
        let uri = format!("at://{did}/{}", r.path);
        let current = match own.get(r.path.as_str()) {
            Some(cid) => *cid,
            None => tree.get(reader, &r.path).map_err(mst_error)?,
        };
        let checked = match write {
            Write::Create { .. } if current.is_some() => Err(invalid(format!("Record already exists: {uri}"))),
            Write::Create { .. } => Ok((Action::Create, None)),
            Write::Put { swap, .. } => {
                Ok((if current.is_some() { Action::Update } else { Action::Create }, swap.as_ref()))
            }
            Write::Update { .. } if current.is_none() => Err(invalid(format!("Record does not exist: {uri}"))),
            Write::Update { .. } => Ok((Action::Update, None)),
            Write::Delete { must_exist: true, .. } if current.is_none() => {
                Err(invalid(format!("Could not find record to delete: {uri}")))
            }
            Write::Delete { swap, .. } => Ok((Action::Delete, swap.as_ref())),
        };
        let action = match checked.and_then(|(action, swap)| {
            check_swap(&r.path, &swap.cloned(), current)?;
            Ok(action)
        }) {
            Ok(action) => action,
            Err(e) => return Ok(Err(e)),
        };
        let change = |cid: Option<Cid>, blobs: Vec<Cid>| Change {
            action,
            collection: r.collection.to_string(),
            rkey: r.rkey.to_string(),
            cid,
            prev: current,
            blobs,
        };
        match &r.prepared {
            Some(Err(e)) => return Ok(Err(e.clone())),
            Some(Ok(p)) => {
                results.push(WriteResult { action, uri, cid: Some(p.cid), validation_status: p.status });
                if current == Some(p.cid) {
                    continue; // identical record: nothing to commit
                }
                own.insert(&r.path, Some(p.cid));
                pending.push((change(Some(p.cid), p.blobs.clone()), Some(p)));
            }
            None => {
                results.push(WriteResult { action, uri, cid: None, validation_status: None });
                if current.is_none() {
                    continue; // deleting what is not there changes nothing
                }
                own.insert(&r.path, None);
                pending.push((change(None, Vec::new()), None));
            }
        }
    }
    if let Some(cid) = pending.iter().flat_map(|(c, _)| &c.blobs).find(|cid| missing.contains(cid)) {
        return Ok(Err(blob_not_found(cid)));
    }
    let changed = !pending.is_empty();
    for (change, prepared) in pending {
        let path = format!("{}/{}", change.collection, change.rkey);
        match (change.cid, prepared) {
            (Some(cid), Some(p)) => {
                tree.insert(reader, &path, cid).map_err(mst_error)?;
                staged.blocks.insert(cid, p.bytes.clone());
            }
            _ => {
                tree.remove(reader, &path).map_err(mst_error)?;
            }
        }
        staged.summaries.push(OpSummary {
            kind: format!("com.atproto.repo.applyWrites#{}", change.action.name()),
            collection: change.collection.clone(),
            rkey: Some(change.rkey.clone()),
        });
        staged.changes.push(change);
    }
    Ok(Ok((results, changed)))
}

/// Why one attempt at a commit did not land.
enum Attempt {
    /// The client's answer.
    Failed(XrpcError),
    /// The root was not where this commit expected it: the commit it was built on (signed
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

impl From<crate::store::blocks::StoreError> for Attempt {
    fn from(e: crate::store::blocks::StoreError) -> Self {
        Attempt::Failed(e.into())
    }
}

/// How often a write is rebuilt after the commit it was built on failed to store.
const ROOT_MOVED_RETRIES: usize = 3;

/// Applies `writes` to the repo of `did` and commits them with the user's signature. The writes
/// join the account's queue; writes that queue while a commit is being signed are committed
/// together (see [`drive`]), each request still answered with its own results.
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
    let account = w.locks.account(did.as_str());
    let (reply, answer) = tokio::sync::oneshot::channel();
    if account.enqueue(writes, swap_commit, validate, reply) {
        spawn_driver(w.clone(), did.clone(), account);
    }
    // The driver owns the writes now: the request going away does not stop them.
    answer.await.unwrap_or_else(|_| Err(XrpcError::internal("the write pipeline stopped", did)))
}

/// Starts the account's driver (see [`drive`]).
fn spawn_driver(w: RepoWriter, did: Did, account: Arc<Account>) {
    tokio::spawn(drive(w, did, account));
}

/// Fails the queue's remaining jobs if the driver panics, so none waits for ever.
struct Driving(Arc<Account>);

impl Drop for Driving {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abandon();
        }
    }
}

/// The account's driver: while its queue has jobs, takes as many as one commit may hold and
/// commits them. At most [`IN_FLIGHT`] of its commits are being stored at once; while it waits
/// for one of them, more jobs queue for the next batch.
async fn drive(w: RepoWriter, did: Did, account: Arc<Account>) {
    let _driving = Driving(account.clone());
    loop {
        let permit = account.storing_permit().await;
        let mut cache = account.lock().await;
        let Some(jobs) = account.take(MAX_WRITES) else {
            // Going idle: past the bound for all accounts together, an idle one keeps nothing
            // (once its commits in flight, which may need its blocks, are stored).
            if w.locks.over_budget() {
                cache.settle().await;
                cache.set_blocks(BlockCache::new());
            }
            return;
        };
        if account.take_stale() {
            cache.head = None;
        }
        commit_batch(&w, &did, &account, cache, jobs, permit).await;
    }
}

/// Answers every job the same way.
fn fail_all(jobs: impl IntoIterator<Item = Job>, e: &XrpcError) {
    for job in jobs {
        let _ = job.reply.send(Err(e.clone()));
    }
}

/// A job whose writes passed their checks, with its answers.
struct Member {
    job: Job,
    results: Vec<WriteResult>,
    changed: bool,
}

fn answer(members: Vec<Member>, commit: Result<(Cid, &str), &XrpcError>) {
    for m in members {
        let reply = commit.map_err(Clone::clone).map(|(cid, rev)| Committed {
            cid,
            rev: rev.to_owned(),
            new_commit: m.changed,
            results: m.results,
        });
        let _ = m.job.reply.send(reply);
    }
}

/// The head of the account's repo: from the cache, or (once the account's commits in flight
/// are stored) from the database.
async fn current_head(w: &RepoWriter, did: &Did, cache: &mut RepoCache) -> XrpcResult<(Cid, Cid, Tid)> {
    if let Some((head, data, rev)) = &cache.head {
        return Ok((*head, *data, rev.clone()));
    }
    cache.settle().await;
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

/// The account's lock, held from reading the head until the commit is signed, with what a
/// batch builds on: the key commits must verify against and the current head.
struct Locked {
    cache: tokio::sync::OwnedMutexGuard<RepoCache>,
    key: PublicKey,
    head: Cid,
    prev_data: Cid,
    prev_rev: Tid,
}

/// Phase 1: under the account's lock, the key and head (from the cache when it has them).
async fn read_head(
    w: &RepoWriter,
    did: &Did,
    mut cache: tokio::sync::OwnedMutexGuard<RepoCache>,
) -> XrpcResult<Locked> {
    let key = match &cache.key {
        Some(key) => key.clone(),
        None => {
            let key = writable_key(w, did).await?;
            cache.key = Some(key.clone());
            key
        }
    };
    let (head, prev_data, prev_rev) = current_head(w, did, &mut cache).await?;
    Ok(Locked { cache, key, head, prev_data, prev_rev })
}

/// Blobs a set of changes references, checked again inside the transaction.
fn referenced_blobs(changes: &[Change]) -> Vec<Cid> {
    let set: std::collections::BTreeSet<Cid> = changes.iter().flat_map(|c| c.blobs.iter().copied()).collect();
    set.into_iter().collect()
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

/// Phase 3: the proof of the staged changes, read through the new blocks and the account's
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
    locked.cache.set_blocks(reader.into_cache());
    proven
}

/// Phase 4: the user's signature over the commit, from their signer. The hub hands back only
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

/// One batch, from the queue to a signed commit (phases 1 to 4, under the account's lock),
/// then handed to [`land`] to be stored while the driver goes on to the next batch.
async fn commit_batch(
    w: &RepoWriter,
    did: &Did,
    account: &Arc<Account>,
    cache: tokio::sync::OwnedMutexGuard<RepoCache>,
    jobs: Vec<Job>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut locked = match read_head(w, did, cache).await {
        Ok(locked) => locked,
        Err(e) => return fail_all(jobs, &e),
    };
    let started = std::time::Instant::now();
    let (kept, deferred) = gather(w, jobs);
    if !deferred.is_empty() {
        account.requeue(deferred); // this driver takes them next
    }
    let missing = match missing_blobs(w, did, &kept).await {
        Ok(missing) => missing,
        Err(e) => return fail_all(kept.into_iter().map(|(job, _)| job), &e),
    };
    // The cache holds blocks of commits signed but perhaps not yet stored, which the next
    // batch needs: it goes back to the lock whether or not these writes stage.
    let reader = SyncReader::with_cache(&w.blocks, std::mem::take(&mut locked.cache.blocks));
    let staged = stage(&reader, did, locked.head, locked.prev_data, &kept, &missing);
    locked.cache.set_blocks(reader.into_cache());
    let (staged, outcomes) = match staged {
        Ok(staged) => staged,
        Err(e) => return fail_all(kept.into_iter().map(|(job, _)| job), &e),
    };
    let mut members = Vec::with_capacity(kept.len());
    for ((job, _), outcome) in kept.into_iter().zip(outcomes) {
        match outcome {
            Ok((results, changed)) => members.push(Member { job, results, changed }),
            Err(e) => drop(job.reply.send(Err(e))),
        }
    }
    if staged.changes.is_empty() {
        return answer(members, Ok((locked.head, locked.prev_rev.as_str())));
    }
    let Proven { proof, evidence, released } = match prove(w, &mut locked, &staged) {
        Ok(proven) => proven,
        Err(e) => return answer(members, Err(&e)),
    };
    let Staged { mut blocks, root, changes, summaries } = staged;
    let rev = w.tids.next_after(Some(&locked.prev_rev));
    let unsigned = UnsignedCommit::new(did.clone(), root, rev.clone());
    crate::service::metrics::commit_phase("staging", started.elapsed());
    let signing = std::time::Instant::now();
    let (commit, commit_bytes) = match sign(w, did, locked.key.clone(), unsigned, summaries, evidence).await {
        Ok(signed) => signed,
        // A signer may refuse (or not answer for) what one request asks: each request of the
        // batch goes again on its own, so the others are not refused with it.
        Err(e) if members.len() > 1 && !matches!(e, crate::service::signer::SignError::NotConnected) => {
            tracing::info!(%did, requests = members.len(), error = %e, "a shared commit was not signed; committing its requests one by one");
            account.requeue(members.into_iter().map(|m| Job { alone: true, ..m.job }).collect());
            return;
        }
        Err(e) => return answer(members, Err(&e.into())),
    };
    crate::service::metrics::commit_phase("signing", signing.elapsed());
    metrics::histogram!("vow_commit_batch_requests").record(members.len() as f64);
    metrics::histogram!("vow_commit_batch_ops").record(changes.len() as f64);

    let event_car = proof.event_car(commit, &commit_bytes);
    blocks.insert(commit, commit_bytes);
    // This commit's place is fixed now: the next batch builds on it (and is signed) while it is
    // stored. If storing fails, the next one's compare-and-swap on the root fails too, and its
    // writes are queued again. The cache keeps the blocks of every commit still in flight: it
    // starts over only once they are stored.
    let Locked { mut cache, head, prev_data, prev_rev, .. } = locked;
    let adding: usize = blocks.iter().map(|(_, b)| b.len()).sum();
    if cache.block_bytes() + adding > CACHE_BYTES {
        cache.settle().await;
        cache.set_blocks(BlockCache::new());
    }
    let (stored, in_flight) = tokio::sync::watch::channel(());
    let before = cache.in_flight.replace(in_flight);
    cache.remember(blocks.iter());
    cache.head = Some((commit, root, rev.clone()));
    drop(cache);

    let referenced = referenced_blobs(&changes);
    let signed = Signed {
        members,
        head,
        commit,
        rev,
        prev_rev,
        prev_data,
        blocks,
        changes,
        released,
        referenced,
        event_car,
        proof,
    };
    tokio::spawn(land(w.clone(), did.clone(), account.clone(), signed, before, stored, permit));
}

/// A signed batch on its way to storage.
struct Signed {
    members: Vec<Member>,
    head: Cid,
    commit: Cid,
    rev: Tid,
    prev_rev: Tid,
    prev_data: Cid,
    /// Every block it adds, the commit included.
    blocks: BlockMap,
    changes: Vec<Change>,
    released: Vec<Cid>,
    referenced: Vec<Cid>,
    event_car: Vec<u8>,
    proof: CommitProof,
}

/// Phase 5: the commit's blocks go to the block store (an IPFS node; the embedded store takes
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

/// Phases 5 and 6 of a batch, off the account's lock: its blocks are put (while the next batch
/// is signed), then, once the account's previous commit is stored (`before`), it is stored and
/// published and every request in it is answered. `stored` is dropped when it is done either
/// way; `_permit` lets the driver sign another batch.
async fn land(
    w: RepoWriter,
    did: Did,
    account: Arc<Account>,
    s: Signed,
    before: Option<tokio::sync::watch::Receiver<()>>,
    stored: tokio::sync::watch::Sender<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let storing = std::time::Instant::now();
    let put = put_blocks(&w, &s.blocks).await;
    if let Some(mut before) = before {
        let _ = before.changed().await; // closed once it is stored or failed
    }
    let (s, outcome) = match put {
        Err(e) => (s, Err(Attempt::from(e))),
        Ok(protected) => {
            let (back, stored) = store_grouped(&w, &did, s).await;
            drop(protected);
            match back {
                Some(s) => (s, stored),
                // The store task went away with the commit: its requests learn so from their
                // dropped answers.
                None => {
                    account.mark_stale();
                    return;
                }
            }
        }
    };
    if outcome.is_err() {
        // The head the cache holds never landed: the next batch reads it again.
        account.mark_stale();
    }
    drop(stored);
    let Signed { members, commit, rev, released, blocks, .. } = s;
    match outcome {
        Ok(()) => {
            crate::service::metrics::commit_phase("storing", storing.elapsed());
            metrics::counter!("vow_commits_total").increment(1);
            release_later(&w, released);
            answer(members, Ok((commit, rev.as_str())));
        }
        Err(e) => {
            // Blocks stored for a commit that never became the root: unpin those no repo holds.
            release_later(&w, block_cids_of(&blocks));
            match e {
                Attempt::Failed(e) => answer(members, Err(&e)),
                Attempt::RootMoved => {
                    let (again, spent): (Vec<Member>, Vec<Member>) =
                        members.into_iter().partition(|m| m.job.retries + 1 < ROOT_MOVED_RETRIES);
                    let e = XrpcError::internal("repo root kept moving during a locked write", &did);
                    answer(spent, Err(&e));
                    tracing::warn!(%did, "the commit these writes were built on did not store; building them again");
                    let again: Vec<Job> =
                        again.into_iter().map(|m| Job { retries: m.job.retries + 1, ..m.job }).collect();
                    if !again.is_empty() && account.requeue(again) {
                        spawn_driver(w.clone(), did, account.clone());
                    }
                }
            }
        }
    }
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

/// The rows `c` stores: the root moves, the record index, block and blob references change
/// and the event (`event` encodes it once its number is known) is appended, on the commit
/// connection (see [`crate::store::db::commits`]).
fn commit_rows(w: &RepoWriter, c: Landing<'_>, event: Box<dyn FnOnce(i64) -> EventRow + Send>) -> CommitRows {
    let strings = |cids: &[Cid]| cids.iter().map(Cid::to_string).collect();
    let blocks = if w.blocks.in_metadata_db() {
        c.blocks.iter().map(|(cid, bytes)| (cid.to_string(), bytes.to_vec())).collect()
    } else {
        Vec::new()
    };
    let records = c
        .changes
        .iter()
        .map(|ch| RecordRow {
            collection: ch.collection.clone(),
            rkey: ch.rkey.clone(),
            cid: ch.cid.map(|cid| cid.to_string()),
            existed: ch.prev.is_some(),
            blobs: strings(&ch.blobs),
        })
        .collect();
    CommitRows {
        did: c.did.as_str().to_owned(),
        old_root: c.head.to_string(),
        new_root: c.commit.to_string(),
        rev: c.rev.as_str().to_owned(),
        blocks,
        records,
        add_blocks: strings(&block_cids_of(c.blocks)),
        drop_blocks: strings(c.released),
        referenced: strings(c.referenced),
        event,
    }
}

/// Phase 6 for commits ready to store: sequenced and stored in one transaction on the commit
/// connection, then published. A commit that fails is rolled back alone; the group fails
/// together only if the transaction itself does.
async fn store_rows(w: &RepoWriter, rows: Vec<CommitRows>) -> Vec<Result<(), Attempt>> {
    let n = rows.len();
    let all_failed = |e: XrpcError| (0..n).map(|_| Err(Attempt::Failed(e.clone()))).collect();
    let database = |e: crate::store::db::commits::Error| XrpcError::internal("database error", e);
    let mut events = match w.firehose.sequencer().await {
        Ok(events) => events,
        Err(e) => return all_failed(e.into()),
    };
    let outcomes = match w.commits.store(rows, events.next_seq()).await {
        Ok(outcomes) => outcomes,
        Err(e) => return all_failed(database(e)),
    };
    let results = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Stored { seq, frame } => {
                events.stored(seq, frame);
                Ok(())
            }
            Outcome::RootMoved => Err(Attempt::RootMoved),
            // The clean-up of unreferenced blobs may have run since the first check.
            Outcome::BlobMissing(cid) => Err(Attempt::Failed(blob_not_found(cid))),
            Outcome::Failed(e) => Err(Attempt::Failed(database(e))),
        })
        .collect();
    events.publish();
    results
}

/// Signed commits, of any accounts, waiting to be stored. One task at a time stores all that
/// have gathered in one transaction (each commit in a savepoint of its own), so the cost of a
/// transaction is paid once per group, not once per commit. An account's commits never share
/// a group: each waits until the one before it is stored.
#[derive(Default)]
pub struct StoreQueue(std::sync::Mutex<StoreWaiting>);

#[derive(Default)]
struct StoreWaiting {
    pending: Vec<Pending>,
    /// Whether a task is storing.
    storing: bool,
}

/// A commit waiting in the [`StoreQueue`], handed back with the outcome.
struct Pending {
    did: Did,
    signed: Signed,
    reply: tokio::sync::oneshot::Sender<(Signed, Result<(), Attempt>)>,
}

/// Most commits stored in one transaction.
const MAX_GROUP: usize = 64;

/// Stores `signed` with whatever other commits are waiting (see [`StoreQueue`]).
async fn store_grouped(w: &RepoWriter, did: &Did, signed: Signed) -> (Option<Signed>, Result<(), Attempt>) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let start = {
        let mut q = w.stores.0.lock().unwrap_or_else(|e| e.into_inner());
        q.pending.push(Pending { did: did.clone(), signed, reply });
        !std::mem::replace(&mut q.storing, true)
    };
    if start {
        tokio::spawn(store_groups(w.clone()));
    }
    match answer.await {
        Ok((signed, outcome)) => (Some(signed), outcome),
        Err(_) => (None, Err(XrpcError::internal("the store task stopped", did).into())),
    }
}

/// The store task: takes what is waiting, stores it as one transaction, answers, and goes on
/// until nothing waits.
async fn store_groups(w: RepoWriter) {
    loop {
        let mut group: Vec<Pending> = {
            let mut q = w.stores.0.lock().unwrap_or_else(|e| e.into_inner());
            if q.pending.is_empty() {
                q.storing = false;
                return;
            }
            let n = q.pending.len().min(MAX_GROUP);
            q.pending.drain(..n).collect()
        };
        metrics::histogram!("vow_store_group_commits").record(group.len() as f64);
        let outcomes = store_group(&w, &mut group).await;
        for (p, outcome) in group.into_iter().zip(outcomes) {
            let _ = p.reply.send((p.signed, outcome));
        }
    }
}

/// Phase 6 for a group of signed commits (see [`store_rows`]).
async fn store_group(w: &RepoWriter, group: &mut [Pending]) -> Vec<Result<(), Attempt>> {
    let rows = group
        .iter_mut()
        .map(|p| {
            // The event's parts go to the event: nothing after the store needs them.
            let blocks = std::mem::take(&mut p.signed.event_car);
            let (ops, blobs) = (std::mem::take(&mut p.signed.proof.ops), std::mem::take(&mut p.signed.proof.blobs));
            let s = &p.signed;
            let (did, rev, since) = (p.did.to_string(), s.rev.to_string(), s.prev_rev.to_string());
            let (commit, prev_data) = (s.commit, s.prev_data);
            let event = move |seq| {
                let since = Some(since.as_str());
                let prev_data = Some(prev_data);
                events::row(seq, &Event::Commit { did: &did, commit, rev: &rev, since, blocks, ops, blobs, prev_data })
            };
            let landing = Landing {
                did: &p.did,
                head: s.head,
                commit: s.commit,
                rev: &s.rev,
                blocks: &s.blocks,
                changes: &s.changes,
                released: &s.released,
                referenced: &s.referenced,
            };
            commit_rows(w, landing, Box::new(event))
        })
        .collect();
    store_rows(w, rows).await
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
    let mut cache = w.locks.lock(did.as_str()).await;
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
    let landing =
        Landing { did, head, commit, rev: &rev, blocks: &blocks, changes: &[], released: &[head], referenced: &[] };
    let (did_owned, rev_owned) = (did.to_string(), rev.to_string());
    let event = move |seq| events::row(seq, &Event::Sync { did: &did_owned, rev: &rev_owned, blocks: car });
    let rows = commit_rows(w, landing, Box::new(event));
    cache.head = None;
    let stored = store_rows(w, vec![rows]).await.pop().unwrap_or(Err(Attempt::RootMoved));
    match stored {
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

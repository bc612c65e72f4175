//! Where repo blocks live. The [`BlockStore`] trait is deliberately narrow so that an IPFS node
//! can implement it: content-addressed put and get only, no listing, no transactions, reads that
//! may be slow or fail, and a size limit per block. Metadata (roots, record index, refcounts)
//! stays in SQLite; a write stores its blocks first and then moves the root in one SQLite
//! transaction, so a crash in between leaves unreferenced blocks, never a root without blocks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atproto::Cid;
use atproto::blocks::{BlockMap, BlockSource, BlockSourceError};
use sqlx::SqlitePool;

use crate::store::ipfs::{IpfsError, Kubo};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block store unavailable: {0}")]
    Unavailable(String),
    #[error("block {0} is larger than the store accepts")]
    TooLarge(Cid),
}

/// Content-addressed block storage.
pub trait BlockStore: Send + Sync + 'static {
    /// One block, or `None` when the store does not hold it.
    fn get(&self, cid: &Cid) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Several blocks at once, in the order asked (`None` where missing). Stores that can
    /// batch reads override this.
    fn get_many(&self, cids: &[Cid]) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send {
        async move {
            let mut out = Vec::with_capacity(cids.len());
            for cid in cids {
                out.push(self.get(cid).await?);
            }
            Ok(out)
        }
    }

    /// Stores every block (idempotent: blocks already present are fine). On error, some of
    /// them may have been stored; callers must not reference any until this returns `Ok`.
    fn put_many(&self, blocks: &BlockMap) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The largest block this store takes.
    fn max_block_size(&self) -> usize;
    /// True when the blocks live in the metadata database itself, so a write can store them in
    /// the same transaction as the new root (see [`insert_blocks`]) instead of before it.
    fn in_metadata_db(&self) -> bool {
        false
    }
    /// Keeps `cids` from being released by [`BlockStore::release_unreferenced`] until the
    /// returned guard is dropped. A writer takes this before storing its blocks and drops it
    /// once the root referencing them is committed, so a concurrent clean-up of another account
    /// cannot unpin a block this write is about to reference.
    fn protect(&self, _cids: Vec<Cid>) -> impl Future<Output = Protected> + Send {
        async { Protected(None) }
    }
    /// Releases those of `candidates` that no repo references any more (per `repo_blocks`).
    /// The embedded store does this inside the write transaction instead.
    fn release_unreferenced(
        &self,
        _db: &SqlitePool,
        _candidates: Vec<Cid>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        async { Ok(0) }
    }
}

/// See [`BlockStore::protect`].
pub struct Protected(Option<(Arc<Pending>, Vec<Cid>)>);

/// Blocks that writes in progress are about to reference, with how many writes.
type Pending = Mutex<HashMap<Cid, u32>>;

impl Drop for Protected {
    fn drop(&mut self) {
        if let Some((pending, cids)) = self.0.take() {
            let mut pending = pending.lock().expect("pending lock");
            for cid in cids {
                if let Some(n) = pending.get_mut(&cid) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(&cid);
                    }
                }
            }
        }
    }
}

/// Inserts blocks into the embedded store's table, as part of a statement batch.
pub fn push_insert_blocks(q: &mut crate::store::db::refs::Batch, blocks: &BlockMap) {
    let all: Vec<_> = blocks.iter().collect();
    for chunk in all.chunks(100) {
        q.push("INSERT OR IGNORE INTO blocks (cid, bytes) ");
        q.push_values(chunk, |mut row, (cid, bytes)| {
            row.push_bind(cid.to_string()).push_bind(bytes.to_vec());
        });
        q.push("; ");
    }
}

/// Inserts blocks into the embedded store's table on an open connection or transaction.
pub async fn insert_blocks(conn: &mut sqlx::SqliteConnection, blocks: &BlockMap) -> Result<(), sqlx::Error> {
    let mut q = crate::store::db::refs::batch();
    push_insert_blocks(&mut q, blocks);
    crate::store::db::refs::execute(conn, q).await
}

/// The default store: a table in the server's SQLite database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: SqlitePool,
}

impl EmbeddedStore {
    pub fn new(db: SqlitePool) -> Self {
        Self { db }
    }
}

impl BlockStore for EmbeddedStore {
    async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT bytes FROM blocks WHERE cid = ?")
            .bind(cid.to_string())
            .fetch_optional(&self.db)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(row.map(|r| r.0))
    }

    async fn get_many(&self, cids: &[Cid]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut found: HashMap<String, Vec<u8>> = HashMap::with_capacity(cids.len());
        for chunk in cids.chunks(500) {
            let mut query = sqlx::QueryBuilder::new("SELECT cid, bytes FROM blocks WHERE cid IN (");
            let mut list = query.separated(", ");
            for cid in chunk {
                list.push_bind(cid.to_string());
            }
            query.push(")");
            let rows: Vec<(String, Vec<u8>)> =
                query.build_query_as().fetch_all(&self.db).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            found.extend(rows);
        }
        Ok(cids.iter().map(|cid| found.remove(&cid.to_string())).collect())
    }

    async fn put_many(&self, blocks: &BlockMap) -> Result<(), StoreError> {
        let fail = |e: sqlx::Error| StoreError::Unavailable(e.to_string());
        let mut tx = self.db.begin().await.map_err(fail)?;
        insert_blocks(&mut tx, blocks).await.map_err(fail)?;
        tx.commit().await.map_err(fail)
    }

    fn max_block_size(&self) -> usize {
        // Records are capped well below this; the figure only bounds what one row may hold.
        4 * 1024 * 1024
    }

    fn in_metadata_db(&self) -> bool {
        true
    }

    /// Writes release inside their transaction (the trigger on `repo_blocks`); this is for
    /// blocks stored outside one that never became referenced (an import that failed).
    async fn release_unreferenced(&self, _db: &SqlitePool, candidates: Vec<Cid>) -> Result<usize, StoreError> {
        let mut released = 0;
        for chunk in candidates.chunks(500) {
            let mut query = sqlx::QueryBuilder::new("DELETE FROM blocks WHERE cid IN (");
            let mut list = query.separated(", ");
            for cid in chunk {
                list.push_bind(cid.to_string());
            }
            query.push(") AND NOT EXISTS (SELECT 1 FROM repo_blocks r WHERE r.cid = blocks.cid)");
            let done = query.build().execute(&self.db).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            released += done.rows_affected() as usize;
        }
        Ok(released)
    }
}

impl From<IpfsError> for StoreError {
    fn from(e: IpfsError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Repo blocks on an IPFS node (Kubo RPC): each block put with its codec and checked, pinned
/// directly (not recursively), read through a bounded cache and verified against its CID.
#[derive(Clone)]
pub struct IpfsStore {
    kubo: Kubo,
    cache: moka::sync::Cache<Cid, Arc<[u8]>>,
    pending: Arc<Pending>,
    /// Held by clean-up for its whole run, and briefly by writers protecting their blocks.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// js-ipfs refuses RPC bodies over 1 MiB, multipart framing included; Kubo refuses blocks over
/// 1 or 2 MiB depending on the version.
const IPFS_MAX_BLOCK: usize = 1024 * 1024 - 4096;

impl IpfsStore {
    pub fn new(kubo: Kubo, cache_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_: &Cid, v: &Arc<[u8]>| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
            .build();
        Self { kubo, cache, pending: Arc::default(), gate: Arc::default() }
    }

    pub fn kubo(&self) -> &Kubo {
        &self.kubo
    }
}

impl BlockStore for IpfsStore {
    async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(hit) = self.cache.get(cid) {
            return Ok(Some(hit.to_vec()));
        }
        let bytes = match self.kubo.block_get(cid).await {
            Ok(bytes) => bytes,
            Err(IpfsError::Node(m)) if m.contains("not found") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !atproto::cid::matches(cid, &bytes) {
            return Err(StoreError::Unavailable(format!("IPFS node returned wrong bytes for {cid}")));
        }
        self.cache.insert(*cid, bytes.clone().into());
        Ok(Some(bytes))
    }

    async fn get_many(&self, cids: &[Cid]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        use futures_util::StreamExt;
        // Futures built up front: a closure inside the stream trips the Send check of the trait.
        let reads: Vec<_> = cids.iter().map(|cid| self.get(cid)).collect();
        futures_util::stream::iter(reads).buffered(16).collect::<Vec<_>>().await.into_iter().collect()
    }

    async fn put_many(&self, blocks: &BlockMap) -> Result<(), StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let mut size = 0;
        for (cid, bytes) in blocks.iter() {
            if bytes.len() > IPFS_MAX_BLOCK {
                return Err(StoreError::TooLarge(*cid));
            }
            size += bytes.len() + 64;
        }
        let Some((first, _)) = blocks.iter().next() else { return Ok(()) };
        if size <= IPFS_MAX_BLOCK {
            // A commit's blocks usually fit one CAR under the node's body limit: one call.
            self.kubo.dag_import(atproto::car::encode(&[*first], blocks.iter())).await?;
        } else {
            let mut puts = Vec::new();
            for (cid, bytes) in blocks.iter() {
                let (cid, bytes) = (*cid, bytes.to_vec());
                puts.push(async move { self.kubo.block_put(&cid, bytes).await.map_err(StoreError::from) });
            }
            futures_util::stream::iter(puts).buffer_unordered(8).try_collect::<()>().await?;
        }
        // The direct pin also proves the node holds every block (it fails, after the timeout,
        // on a missing one).
        let cids: Vec<Cid> = blocks.iter().map(|(cid, _)| *cid).collect();
        self.kubo.pin_direct(&cids).await?;
        for (cid, bytes) in blocks.iter() {
            self.cache.insert(*cid, bytes.to_vec().into());
        }
        Ok(())
    }

    fn max_block_size(&self) -> usize {
        IPFS_MAX_BLOCK
    }

    async fn protect(&self, cids: Vec<Cid>) -> Protected {
        let _gate = self.gate.lock().await;
        let mut pending = self.pending.lock().expect("pending lock");
        for cid in &cids {
            *pending.entry(*cid).or_default() += 1;
        }
        Protected(Some((self.pending.clone(), cids)))
    }

    async fn release_unreferenced(&self, db: &SqlitePool, candidates: Vec<Cid>) -> Result<usize, StoreError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        let _gate = self.gate.lock().await;
        let candidates: Vec<Cid> = {
            let pending = self.pending.lock().expect("pending lock");
            candidates.into_iter().filter(|c| !pending.contains_key(c)).collect()
        };
        let referenced =
            referenced_blocks(db, &candidates).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let unreferenced: Vec<Cid> = candidates.into_iter().filter(|c| !referenced.contains(&c.to_string())).collect();
        // One call per chunk: the gate is held meanwhile, and writers wait on it.
        for chunk in unreferenced.chunks(100) {
            self.kubo.unpin_many(chunk).await?;
            for cid in chunk {
                self.cache.invalidate(cid);
            }
        }
        Ok(unreferenced.len())
    }
}

/// Those of `cids` that some repo still references.
async fn referenced_blocks(db: &SqlitePool, cids: &[Cid]) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for chunk in cids.chunks(500) {
        let mut query = sqlx::QueryBuilder::new("SELECT DISTINCT cid FROM repo_blocks WHERE cid IN (");
        let mut list = query.separated(", ");
        for cid in chunk {
            list.push_bind(cid.to_string());
        }
        query.push(")");
        let rows: Vec<(String,)> = query.build_query_as().fetch_all(db).await?;
        found.extend(rows.into_iter().map(|r| r.0));
    }
    Ok(found)
}

/// The configured block store.
#[derive(Clone)]
pub enum Blocks {
    Embedded(EmbeddedStore),
    Ipfs(IpfsStore),
}

impl BlockStore for Blocks {
    async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Blocks::Embedded(s) => s.get(cid).await,
            Blocks::Ipfs(s) => s.get(cid).await,
        }
    }
    async fn get_many(&self, cids: &[Cid]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match self {
            Blocks::Embedded(s) => s.get_many(cids).await,
            Blocks::Ipfs(s) => s.get_many(cids).await,
        }
    }
    async fn put_many(&self, blocks: &BlockMap) -> Result<(), StoreError> {
        match self {
            Blocks::Embedded(s) => s.put_many(blocks).await,
            Blocks::Ipfs(s) => s.put_many(blocks).await,
        }
    }
    fn max_block_size(&self) -> usize {
        match self {
            Blocks::Embedded(s) => s.max_block_size(),
            Blocks::Ipfs(s) => s.max_block_size(),
        }
    }
    fn in_metadata_db(&self) -> bool {
        match self {
            Blocks::Embedded(s) => s.in_metadata_db(),
            Blocks::Ipfs(s) => s.in_metadata_db(),
        }
    }
    async fn protect(&self, cids: Vec<Cid>) -> Protected {
        match self {
            Blocks::Embedded(s) => s.protect(cids).await,
            Blocks::Ipfs(s) => s.protect(cids).await,
        }
    }
    async fn release_unreferenced(&self, db: &SqlitePool, candidates: Vec<Cid>) -> Result<usize, StoreError> {
        match self {
            Blocks::Embedded(s) => s.release_unreferenced(db, candidates).await,
            Blocks::Ipfs(s) => s.release_unreferenced(db, candidates).await,
        }
    }
}

/// Adapts an async [`BlockStore`] to the synchronous [`BlockSource`] the MST code reads
/// through, remembering what it fetched. Must be used from a multi-threaded Tokio runtime,
/// off the async executor's hot path (it blocks the current worker while a read is pending).
pub struct SyncReader<'a, S: BlockStore> {
    store: &'a S,
    handle: tokio::runtime::Handle,
    cache: Mutex<BlockCache>,
    remember: bool,
}

/// Blocks by CID. Content addressing means a cached block can never be stale.
pub type BlockCache = HashMap<Cid, std::sync::Arc<[u8]>>;

impl<'a, S: BlockStore> SyncReader<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Self::with_cache(store, BlockCache::new())
    }

    /// Starts from blocks already known (e.g. kept from the account's previous write).
    pub fn with_cache(store: &'a S, cache: BlockCache) -> Self {
        Self { store, handle: tokio::runtime::Handle::current(), cache: Mutex::new(cache), remember: true }
    }

    /// A reader that keeps nothing, for walks over a whole repo.
    pub fn uncached(store: &'a S) -> Self {
        Self { remember: false, ..Self::new(store) }
    }

    /// The blocks read or seeded so far.
    pub fn into_cache(self) -> BlockCache {
        self.cache.into_inner().expect("cache lock")
    }
}

impl<S: BlockStore> BlockSource for SyncReader<'_, S> {
    fn get_block(&self, cid: &Cid) -> Result<Option<Cow<'_, [u8]>>, BlockSourceError> {
        if let Some(hit) = self.cache.lock().expect("cache lock").get(cid) {
            return Ok(Some(Cow::Owned(hit.to_vec())));
        }
        let fetched = tokio::task::block_in_place(|| self.handle.block_on(self.store.get(cid)))
            .map_err(|e| BlockSourceError(e.to_string()))?;
        Ok(fetched.map(|bytes| {
            if self.remember {
                self.cache.lock().expect("cache lock").insert(*cid, bytes.clone().into());
            }
            Cow::Owned(bytes)
        }))
    }
}

/// A block store failure, as clients see it: nothing changed, try again.
impl From<StoreError> for crate::error::XrpcError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "block store failure");
        Self::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "StorageUnavailable",
            format!("The PDS could not reach its storage, so nothing was changed; try again later. ({err})"),
        )
    }
}

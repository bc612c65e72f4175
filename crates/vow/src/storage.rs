//! Where repo blocks live. The [`BlockStore`] trait is deliberately narrow so that an IPFS node
//! can implement it: content-addressed put and get only, no listing, no transactions, reads that
//! may be slow or fail, and a size limit per block. Metadata (roots, record index, refcounts)
//! stays in SQLite; a write stores its blocks first and then moves the root in one SQLite
//! transaction, so a crash in between leaves unreferenced blocks, never a root without blocks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use atproto::Cid;
use atproto::blocks::{BlockMap, BlockSource, BlockSourceError};
use sqlx::SqlitePool;

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
}

/// Inserts blocks into the embedded store's table on an open connection or transaction.
/// Multi-row statements: one per 100 blocks rather than one per block.
pub async fn insert_blocks(conn: &mut sqlx::SqliteConnection, blocks: &BlockMap) -> Result<(), sqlx::Error> {
    let all: Vec<_> = blocks.iter().collect();
    for chunk in all.chunks(100) {
        let mut query = sqlx::QueryBuilder::new("INSERT OR IGNORE INTO blocks (cid, bytes) ");
        query.push_values(chunk, |mut row, (cid, bytes)| {
            row.push_bind(cid.to_string()).push_bind(bytes.to_vec());
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
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

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
    /// Stores every block (idempotent: blocks already present are fine). On error, some of
    /// them may have been stored; callers must not reference any until this returns `Ok`.
    fn put_many(&self, blocks: &BlockMap) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The largest block this store takes.
    fn max_block_size(&self) -> usize;
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

    async fn put_many(&self, blocks: &BlockMap) -> Result<(), StoreError> {
        let fail = |e: sqlx::Error| StoreError::Unavailable(e.to_string());
        let mut tx = self.db.begin().await.map_err(fail)?;
        for (cid, bytes) in blocks.iter() {
            sqlx::query("INSERT OR IGNORE INTO blocks (cid, bytes) VALUES (?, ?)")
                .bind(cid.to_string())
                .bind(bytes)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }

    fn max_block_size(&self) -> usize {
        // Records are capped well below this; the figure only bounds what one row may hold.
        4 * 1024 * 1024
    }
}

/// Adapts an async [`BlockStore`] to the synchronous [`BlockSource`] the MST code reads
/// through, remembering what it fetched. Must be used from a multi-threaded Tokio runtime,
/// off the async executor's hot path (it blocks the current worker while a read is pending).
pub struct SyncReader<'a, S: BlockStore> {
    store: &'a S,
    handle: tokio::runtime::Handle,
    cache: Mutex<HashMap<Cid, std::sync::Arc<[u8]>>>,
}

impl<'a, S: BlockStore> SyncReader<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Self { store, handle: tokio::runtime::Handle::current(), cache: Mutex::new(HashMap::new()) }
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
            self.cache.lock().expect("cache lock").insert(*cid, bytes.clone().into());
            Cow::Owned(bytes)
        }))
    }
}

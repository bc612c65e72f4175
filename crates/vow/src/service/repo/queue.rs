//! Each account's write lock and write queue. Requests put their writes in the account's queue
//! and wait for their answer; one driver task per busy account takes what has queued, commits it
//! as one batch (see `writer`), and goes on until the queue is empty. The lock guards the
//! account's [`RepoCache`]; the services that change an account's key or status take it too.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use atproto::Cid;
use atproto::crypto::PublicKey;
use atproto::syntax::Tid;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::writer::{Committed, Write};
use crate::error::XrpcResult;
use crate::store::blocks::BlockCache;

/// What an account's lock keeps between writes: the head it last saw and the tree blocks it
/// read or wrote, so the next write does not fetch them again. Blocks are content-addressed and
/// so never stale; the head is checked against the database on every write.
/// The account's signing key is kept too: anything that changes an account's key or status
/// must hold the lock and call [`RepoCache::forget_account`].
pub struct RepoCache {
    pub(super) head: Option<(Cid, Cid, Tid)>, // commit, data root, rev
    pub(super) key: Option<PublicKey>,
    pub(super) blocks: BlockCache,
    /// The bytes in `blocks`.
    pub(super) block_bytes: usize,
    /// Open while the account's last signed commit is still being stored: its sender is dropped
    /// once that commit (and so every commit before it) is stored or has failed.
    pub(super) in_flight: Option<watch::Receiver<()>>,
    /// The bytes every account's cache holds, together.
    total: Arc<AtomicUsize>,
}

impl Drop for RepoCache {
    fn drop(&mut self) {
        self.total.fetch_sub(self.block_bytes, Ordering::Relaxed);
    }
}

impl RepoCache {
    /// Makes the next write read the account (key, status) and head from the database again.
    pub fn forget_account(&mut self) {
        self.key = None;
        self.head = None;
    }

    /// Waits until every commit of this account that was signed is stored (or failed), so the
    /// root in the database is the last one.
    pub async fn settle(&mut self) {
        if let Some(mut stored) = self.in_flight.take() {
            // Nothing is ever sent: the only news is the sender going away.
            let _ = stored.changed().await;
        }
    }

    fn new(total: Arc<AtomicUsize>) -> Self {
        Self { head: None, key: None, blocks: BlockCache::new(), block_bytes: 0, in_flight: None, total }
    }

    fn set_bytes(&mut self, bytes: usize) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
        self.total.fetch_sub(self.block_bytes, Ordering::Relaxed);
        self.block_bytes = bytes;
    }

    /// Keeps `blocks` for the next write.
    pub(super) fn remember<'a>(&mut self, blocks: impl Iterator<Item = (&'a Cid, &'a [u8])>) {
        let mut bytes = self.block_bytes;
        for (cid, block) in blocks {
            bytes += block.len();
            if let Some(old) = self.blocks.insert(*cid, block.to_vec().into()) {
                bytes -= old.len();
            }
        }
        self.set_bytes(bytes);
    }

    /// Replaces the cached blocks (with what a reader fetched on top of them).
    pub(super) fn set_blocks(&mut self, blocks: BlockCache) {
        self.set_bytes(blocks.values().map(|b| b.len()).sum());
        self.blocks = blocks;
    }

    pub(super) fn block_bytes(&self) -> usize {
        self.block_bytes
    }
}

/// The gauge of requests waiting in write queues, all accounts together.
const QUEUED: &str = "vow_write_queue_requests";

/// One request's writes, waiting in its account's queue.
pub(super) struct Job {
    pub writes: Vec<Write>,
    pub swap_commit: Option<Cid>,
    pub validate: Option<bool>,
    /// Its place in the queue, kept when it is queued again.
    pub ticket: u64,
    /// How often the commit it was in was built on one that then failed to store.
    pub retries: usize,
    /// Committed on its own: a signer refused a commit it shared, and only alone can it tell
    /// whose writes it refuses.
    pub alone: bool,
    pub reply: oneshot::Sender<XrpcResult<Committed>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Whether a driver task is working through `jobs`.
    driving: bool,
    next_ticket: u64,
}

/// Commits of one account being stored at once. One is stored while the next is signed; a
/// third waits, and the writes queued meanwhile join it.
pub(super) const IN_FLIGHT: usize = 2;

/// One account's lock and queue.
pub struct Account {
    cache: Arc<tokio::sync::Mutex<RepoCache>>,
    queue: Mutex<Queue>,
    /// Set when one of its commits failed to store: the head the cache holds may never land.
    stale: AtomicBool,
    /// One permit per commit being stored.
    storing: Arc<Semaphore>,
}

impl Account {
    fn new(total: Arc<AtomicUsize>) -> Self {
        Self {
            cache: Arc::new(tokio::sync::Mutex::new(RepoCache::new(total))),
            queue: Default::default(),
            stale: AtomicBool::new(false),
            storing: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }
}

impl Account {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request's writes. Returns true when the caller must start a driver.
    pub(super) fn enqueue(
        &self,
        writes: Vec<Write>,
        swap_commit: Option<Cid>,
        validate: Option<bool>,
        reply: oneshot::Sender<XrpcResult<Committed>>,
    ) -> bool {
        let mut q = self.queue();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.jobs.push_back(Job { writes, swap_commit, validate, ticket, retries: 0, alone: false, reply });
        metrics::gauge!(QUEUED).increment(1.0);
        metrics::counter!("vow_write_requests_total").increment(1);
        !std::mem::replace(&mut q.driving, true)
    }

    /// Puts jobs back in their places (by ticket). Returns true when the caller must start a
    /// driver.
    pub(super) fn requeue(&self, jobs: Vec<Job>) -> bool {
        let mut q = self.queue();
        metrics::gauge!(QUEUED).increment(jobs.len() as f64);
        q.jobs.extend(jobs);
        q.jobs.make_contiguous().sort_by_key(|j| j.ticket);
        !std::mem::replace(&mut q.driving, true)
    }

    /// The jobs at the front of the queue, as many as fit in `max_writes` (always at least
    /// one; a job to commit alone is taken alone). None, and the driver stops, when the queue
    /// is empty.
    pub(super) fn take(&self, max_writes: usize) -> Option<Vec<Job>> {
        let mut q = self.queue();
        let mut taken = Vec::new();
        let mut writes = 0;
        while let Some(job) = q.jobs.front() {
            if !taken.is_empty() && (job.alone || writes + job.writes.len() > max_writes) {
                break;
            }
            writes += job.writes.len();
            let alone = job.alone;
            taken.extend(q.jobs.pop_front());
            if alone {
                break;
            }
        }
        metrics::gauge!(QUEUED).decrement(taken.len() as f64);
        if taken.is_empty() {
            q.driving = false;
            return None;
        }
        Some(taken)
    }

    /// The driver went away without finishing (it panicked): fail what is queued and let the
    /// next request start a new one.
    pub(super) fn abandon(&self) {
        let mut q = self.queue();
        metrics::gauge!(QUEUED).decrement(q.jobs.len() as f64);
        for job in q.jobs.drain(..) {
            let _ = job.reply.send(Err(crate::error::XrpcError::internal("the write pipeline failed", "driver")));
        }
        q.driving = false;
    }

    /// The account's lock, as the driver takes it (without waiting for stores in flight).
    pub(super) async fn lock(&self) -> OwnedMutexGuard<RepoCache> {
        self.cache.clone().lock_owned().await
    }

    /// Waits until fewer than [`IN_FLIGHT`] of the account's commits are being stored.
    pub(super) async fn storing_permit(&self) -> OwnedSemaphorePermit {
        self.storing.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    pub(super) fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Whether a commit failed to store since the last call.
    pub(super) fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::SeqCst)
    }
}

/// Every account's lock and queue.
pub struct RepoLocks {
    accounts: Mutex<Accounts>,
    /// The bytes the accounts' block caches hold together, and the most they should.
    cached: Arc<AtomicUsize>,
    bound: usize,
}

struct Accounts {
    by_did: HashMap<String, Arc<Account>>,
    /// How many there were after the last sweep.
    swept_at: usize,
}

impl RepoLocks {
    /// `cache_bytes` bounds the blocks the accounts keep between writes, together.
    pub fn new(cache_bytes: u64) -> Self {
        Self {
            accounts: Mutex::new(Accounts { by_did: HashMap::new(), swept_at: 0 }),
            cached: Arc::new(AtomicUsize::new(0)),
            bound: usize::try_from(cache_bytes).unwrap_or(usize::MAX),
        }
    }

    pub(super) fn account(&self, did: &str) -> Arc<Account> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        // Accounts nobody holds (no queued write, no store in flight, no lock taken) are
        // forgotten now and then, so the map stays as large as the accounts in use.
        if accounts.by_did.len() >= 1024 && accounts.by_did.len() > 2 * accounts.swept_at {
            accounts.by_did.retain(|_, a| Arc::strong_count(a) > 1 || Arc::strong_count(&a.cache) > 1);
            accounts.swept_at = accounts.by_did.len();
        }
        let total = &self.cached;
        accounts.by_did.entry(did.to_owned()).or_insert_with(|| Arc::new(Account::new(total.clone()))).clone()
    }

    /// Whether the accounts' block caches hold more than their bound together.
    pub(super) fn over_budget(&self) -> bool {
        self.cached.load(Ordering::Relaxed) > self.bound
    }

    /// How many accounts it knows now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner()).by_did.len()
    }

    /// Takes the account's lock once the commits it has in flight are stored, so the database
    /// holds its last root and nothing is written to it until the guard is dropped.
    pub async fn lock(&self, did: &str) -> OwnedMutexGuard<RepoCache> {
        let mut guard = self.account(did).lock().await;
        guard.settle().await;
        guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_nobody_holds_are_forgotten_and_their_bytes_with_them() {
        let locks = RepoLocks::new(1 << 20);
        let held = locks.lock("did:plc:held").await;
        let queued = locks.account("did:plc:queued");
        for i in 0..3000 {
            let mut cache = locks.lock(&format!("did:plc:{i}")).await;
            let cid = atproto::cid::raw_cid(format!("{i}").as_bytes());
            cache.remember([(&cid, &[0u8; 100][..])].into_iter());
        }
        // The map was swept on the way: what is left is at most about twice what was kept.
        assert!(locks.len() < 2100, "{}", locks.len());
        assert!(locks.cached.load(Ordering::Relaxed) <= locks.len() * 100);
        // What someone holds is never forgotten: the same lock and queue come back.
        assert!(Arc::ptr_eq(&queued, &locks.account("did:plc:queued")));
        drop(held);
        assert!(locks.account("did:plc:held").cache.try_lock().is_ok());
    }

    #[tokio::test]
    async fn the_accounts_block_bytes_are_counted_together() {
        let locks = RepoLocks::new(150);
        let cid = |n: &str| atproto::cid::raw_cid(n.as_bytes());
        let (a, b) = (cid("a"), cid("b"));
        locks.lock("did:plc:a").await.remember([(&a, &[0u8; 100][..])].into_iter());
        assert!(!locks.over_budget());
        let mut other = locks.lock("did:plc:b").await;
        other.remember([(&b, &[0u8; 100][..])].into_iter());
        assert!(locks.over_budget());
        other.set_blocks(BlockCache::new());
        assert_eq!(locks.cached.load(Ordering::Relaxed), 100);
    }
}

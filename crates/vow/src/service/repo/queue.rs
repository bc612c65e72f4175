//! Each account's write lock and write queue. Requests put their writes in the account's queue
//! and wait for their answer; one driver task per busy account takes what has queued, commits it
//! as one batch (see `writer`), and goes on until the queue is empty. The lock guards the
//! account's [`RepoCache`]; the services that change an account's key or status take it too.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
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
#[derive(Default)]
pub struct RepoCache {
    pub(super) head: Option<(Cid, Cid, Tid)>, // commit, data root, rev
    pub(super) key: Option<PublicKey>,
    pub(super) blocks: BlockCache,
    /// The bytes in `blocks`.
    pub(super) block_bytes: usize,
    /// Open while the account's last signed commit is still being stored: its sender is dropped
    /// once that commit (and so every commit before it) is stored or has failed.
    pub(super) in_flight: Option<watch::Receiver<()>>,
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

    /// Keeps `blocks` for the next write.
    pub(super) fn remember<'a>(&mut self, blocks: impl Iterator<Item = (&'a Cid, &'a [u8])>) {
        for (cid, bytes) in blocks {
            self.block_bytes += bytes.len();
            if let Some(old) = self.blocks.insert(*cid, bytes.to_vec().into()) {
                self.block_bytes -= old.len();
            }
        }
    }

    /// Replaces the cached blocks (with what a reader fetched on top of them).
    pub(super) fn set_blocks(&mut self, blocks: BlockCache) {
        self.block_bytes = blocks.values().map(|b| b.len()).sum();
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

impl Default for Account {
    fn default() -> Self {
        Self {
            cache: Default::default(),
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
#[derive(Default)]
pub struct RepoLocks(Mutex<HashMap<String, Arc<Account>>>);

impl RepoLocks {
    pub(super) fn account(&self, did: &str) -> Arc<Account> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(did.to_owned()).or_default().clone()
    }

    /// Takes the account's lock once the commits it has in flight are stored, so the database
    /// holds its last root and nothing is written to it until the guard is dropped.
    pub async fn lock(&self, did: &str) -> OwnedMutexGuard<RepoCache> {
        let mut guard = self.account(did).lock().await;
        guard.settle().await;
        guard
    }
}

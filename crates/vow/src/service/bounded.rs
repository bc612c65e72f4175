//! The byte bounds of the in-memory caches. Each cache gets a fixed share of one budget
//! (`VOW_MEMORY_CACHE_BYTES`), is weighed by the bytes its entries hold (key and value, plus a
//! fixed overhead per entry for the cache's own bookkeeping), and reports its bound in
//! `/metrics` as `vow_cache_bound_bytes{cache}`. SQLite's page caches (`VOW_DB_CACHE_BYTES`),
//! the IPFS block cache (`VOW_IPFS_CACHE_MB`) and the OAuth requests have bounds of their own.

use std::sync::atomic::{AtomicU64, Ordering};

/// Each cache's share of the budget, in 32nds.
const SHARES: &[(&str, u64)] = &[
    ("verified_tokens", 3),
    ("live_sessions", 1),
    ("service_tokens", 4),
    ("signer_keys", 1),
    ("did_documents", 4),
    ("oauth_clients", 3),
    ("passkey_challenges", 1),
    ("dpop_replays", 4),
    ("client_assertions", 2),
    ("repo_blocks", 6),
    ("firehose_pages", 3),
];

/// What an entry costs beyond its bytes (hash table slot, expiry and frequency bookkeeping).
pub const ENTRY_OVERHEAD: usize = 128;

/// The weight of an entry holding `bytes`.
pub fn weigh(bytes: usize) -> u32 {
    u32::try_from(bytes + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// The budget, split into each cache's bound.
#[derive(Debug, Clone, Copy)]
pub struct Budget(u64);

impl Budget {
    pub fn new(total_bytes: u64) -> Self {
        Self(total_bytes)
    }

    /// The bound of `cache` (one of the names in [`Budget::all`]), at least 64 KiB.
    pub fn of(&self, cache: &str) -> u64 {
        let share = SHARES.iter().find(|(name, _)| *name == cache).map_or(0, |(_, s)| *s);
        (self.0 / 32 * share).max(64 * 1024)
    }

    /// Every cache with its bound.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        SHARES.iter().map(|(name, _)| (*name, self.of(name)))
    }
}

/// Sets up the two allocators for a long-running server; called once, before any other thread
/// starts.
///
/// Rust's allocations go to mimalloc (see the crate root). Where the kernel offers transparent
/// huge pages on request, mimalloc asks for them, and one live object then keeps 2 MiB
/// resident: after the write benchmark RSS was 80 MB with them and 61 MB without (measured
/// with mimalloc's v3). They are
/// turned off for the process.
///
/// SQLite allocates through glibc's malloc. glibc raises its mmap threshold each time a large
/// block is freed, after which blocks of that size come from per-thread arenas that keep the
/// memory; a fixed threshold keeps them mapped on their own and returned at free. Two arenas
/// instead of eight per core keep what one thread freed reusable by the others.
pub fn tune_allocators() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) only changes how the kernel backs this process's pages.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands the allocators' free memory back to the system. Both keep what a burst of small
/// allocations freed (the frames of a firehose replay, thousands of a few KiB each), so RSS
/// would stay at the burst's peak; this returns the free pages: the calling thread's pending
/// mimalloc purges (which it otherwise does a second after the free, and only when that thread
/// allocates again) and glibc's free heap pages (SQLite's), at once, and each runtime worker's
/// when it next goes idle ([`on_worker_park`]). glibc's trim walks every arena, so this is for
/// the end of a burst, not for each request.
pub fn release_free_memory() {
    RELEASES.fetch_add(1, Ordering::Relaxed);
    release_thread_memory();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free pages back to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
    metrics::counter!("vow_memory_trims_total").increment(1);
}

/// How many times [`release_free_memory`] has run, for the runtime's workers to follow.
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The value of [`RELEASES`] this thread last acted on.
    static RELEASED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// For a runtime worker about to park. mimalloc keeps each thread's freed pages in that
/// thread's heap, and an idle worker never gets to hand them back; so a worker that parks
/// after [`release_free_memory`] ran hands its own back too, once (true when it did).
/// Otherwise it costs one atomic load.
pub fn on_worker_park() -> bool {
    let now = RELEASES.load(Ordering::Relaxed);
    RELEASED.with(|seen| {
        let due = seen.get() != now;
        if due {
            seen.set(now);
            release_thread_memory();
        }
        due
    })
}

/// Returns what this thread freed to the system now rather than later: for a thread that
/// frees a large block and then sleeps (a password hash's 16 MiB), mimalloc's delayed purge
/// would otherwise wait for the thread's next allocation.
pub fn release_thread_memory() {
    // SAFETY: mi_collect only frees and purges pages of the calling thread's heap (and pending
    // arena purges); any thread may call it at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parking_worker_gives_memory_back_once_per_release() {
        std::thread::spawn(|| {
            release_free_memory();
            assert!(on_worker_park(), "the first park after a release gives this thread's memory back");
            let releases = RELEASES.load(Ordering::Relaxed);
            let again = on_worker_park();
            // Another test may release in between; only then may it run again.
            assert!(!again || RELEASES.load(Ordering::Relaxed) != releases);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_shares_add_up_to_the_budget() {
        assert_eq!(SHARES.iter().map(|(_, s)| s).sum::<u64>(), 32);
        let budget = Budget::new(32 << 20);
        assert_eq!(budget.all().map(|(_, b)| b).sum::<u64>(), 32 << 20);
        assert_eq!(budget.of("verified_tokens"), 3 << 20);
        // A tiny budget still leaves every cache room for a few entries.
        assert_eq!(Budget::new(1).of("signer_keys"), 64 * 1024);
    }
}

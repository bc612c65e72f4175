//! The byte bounds of the in-memory caches. Each cache gets a fixed share of one budget
//! (`VOW_MEMORY_CACHE_BYTES`), is weighed by the bytes its entries hold (key and value, plus a
//! fixed overhead per entry for the cache's own bookkeeping), and reports its bound in
//! `/metrics` as `vow_cache_bound_bytes{cache}`. SQLite's page caches (`VOW_DB_CACHE_BYTES`),
//! the IPFS block cache (`VOW_IPFS_CACHE_MB`) and the OAuth requests have bounds of their own.

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

/// Hands the allocator's free memory back to the system. glibc keeps what a burst of small
/// allocations freed (the frames of a firehose replay, thousands of a few KiB each) in its
/// heaps, so RSS would stay at the burst's peak; this returns the free pages. It walks every
/// heap, so it is for the end of a burst, not for each request. A no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free pages back to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
    metrics::counter!("vow_memory_trims_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! SQLite: one file, WAL, busy timeout, versioned migrations embedded in the binary.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub mod accounts;
pub mod app_passwords;
pub mod backup;
pub mod batch;
pub mod blobs;
pub mod challenges;
pub mod commits;
pub mod events;
pub mod invites;
pub mod meta;
pub mod oauth;
pub mod preferences;
pub mod refs;
pub mod service_tokens;
pub mod sessions;

/// Connections to the database: the pool's, and the commit path's own ([`commits`]).
pub const MAX_CONNECTIONS: u32 = 8;
/// The page caches' budget, all connections together, unless `VOW_DB_CACHE_BYTES` says
/// otherwise. SQLite's own default is 2 MiB per connection; Vow used to ask 16 MiB each.
pub const DEFAULT_CACHE_BYTES: u64 = crate::config::DEFAULT_DB_CACHE_BYTES;

/// The page caches' bound in effect for a budget of `cache_bytes`: an equal share per
/// connection, in whole KiB, and at least 256 KiB each.
pub fn page_cache_bound(cache_bytes: u64) -> u64 {
    (cache_bytes / u64::from(MAX_CONNECTIONS) / 1024).max(256) * 1024 * u64::from(MAX_CONNECTIONS)
}

/// Opens (creating if needed) the database with the default cache budget and applies pending
/// migrations.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    open_with(path, DEFAULT_CACHE_BYTES).await
}

/// Each connection's share of a page cache budget of `cache_bytes`, in KiB.
pub fn cache_kib_per_connection(cache_bytes: u64) -> u64 {
    page_cache_bound(cache_bytes) / u64::from(MAX_CONNECTIONS) / 1024
}

/// [`open`] with `cache_bytes` for the page caches of all connections together (each gets an
/// equal share, at least 256 KiB). The pool leaves one connection for [`commits`].
pub async fn open_with(path: &Path, cache_bytes: u64) -> Result<SqlitePool, sqlx::Error> {
    let per_connection_kib = cache_kib_per_connection(cache_bytes);
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Negative: a size in KiB rather than in pages.
        .pragma("cache_size", format!("-{per_connection_kib}"));
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS - 1)
        // Each acquire's wait becomes a trace event, which the metrics read (`PoolWaits`).
        .acquire_time_level(log::LevelFilter::Trace)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Current time as an RFC 3339 string with millisecond precision, in UTC.
pub fn now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format_timestamp(now.as_millis() as i64)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_timestamp(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Whether the database answers at all.
pub async fn ping(db: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::format_timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::format_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[tokio::test]
    async fn every_connection_gets_its_share_of_the_cache_budget() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::open_with(&dir.path().join("t.db"), 4 << 20).await.unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&pool).await.unwrap();
        assert_eq!(size, -512, "4 MiB over 8 connections: 512 KiB each");
        assert_eq!(super::page_cache_bound(4 << 20), 4 << 20);
        assert_eq!(super::page_cache_bound(0), 2 << 20, "at least 256 KiB each");
        let pool = super::open(&dir.path().join("u.db")).await.unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&pool).await.unwrap();
        assert_eq!(size, -1024, "the default: 8 MiB over 8 connections");
    }
}

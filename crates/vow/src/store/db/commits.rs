//! The commit path's own connection. Every signed commit is stored here: the root moves, the
//! record index, block and blob references change and the event is appended, in one call on a
//! thread that owns its connection and keeps each statement prepared. Through the pool, a
//! commit cost several hand-offs between the async workers and a connection's thread, and
//! each commit's batch of statements was compiled anew; here a group of commits costs one.
//!
//! The other writers (accounts, sessions, imports) stay on the pool; SQLite's write lock and
//! the busy timeout order them with this connection.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the commit store's thread has stopped")]
    Stopped,
}

/// One signed commit's rows.
pub struct CommitRows {
    pub did: String,
    /// The root it replaces; the commit is refused if the account's root is no longer this.
    pub old_root: String,
    pub new_root: String,
    pub rev: String,
    /// Blocks for the embedded store's table (none when the blocks live elsewhere).
    pub blocks: Vec<(String, Vec<u8>)>,
    pub records: Vec<RecordRow>,
    /// Blocks the repo references as of `rev`.
    pub add_blocks: Vec<String>,
    /// Blocks the repo may no longer reference (dropped unless a record still points at one).
    pub drop_blocks: Vec<String>,
    /// Blobs the new records reference: each must have been uploaded by the account.
    pub referenced: Vec<String>,
    /// Encodes the event once its sequence number is known.
    pub event: Box<dyn FnOnce(i64) -> EventRow + Send>,
}

/// A change to the record index.
pub struct RecordRow {
    pub collection: String,
    pub rkey: String,
    /// `None`: the record is deleted.
    pub cid: Option<String>,
    /// Whether the key held a record before (its blob references are replaced).
    pub existed: bool,
    pub blobs: Vec<String>,
}

/// A firehose row.
pub struct EventRow {
    pub did: String,
    pub kind: &'static str,
    pub frame: Vec<u8>,
    pub created_at: i64,
}

/// What became of one commit of a group.
#[derive(Debug)]
pub enum Outcome {
    /// Stored as event `seq`, whose frame is handed back for the live subscribers.
    Stored {
        seq: i64,
        frame: Vec<u8>,
    },
    /// The account's root was no longer the one the commit replaces.
    RootMoved,
    /// A referenced blob was not uploaded (or was removed since it was checked).
    BlobMissing(String),
    Failed(Error),
}

type Job = (Vec<CommitRows>, i64, tokio::sync::oneshot::Sender<Result<Vec<Outcome>, Error>>);

/// The thread that owns the connection; commits are sent to it in groups.
pub struct CommitStore {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// Statements kept prepared on the connection (there are 13).
const STATEMENTS: usize = 24;

impl CommitStore {
    /// Opens a connection to the database at `path` (already migrated) with a page cache of
    /// `cache_kib`, and starts its thread.
    pub fn open(path: &Path, cache_kib: u64) -> Result<Self, String> {
        Self::connect(path, cache_kib).map_err(|e| format!("the commit connection to {}: {e}", path.display()))
    }

    fn connect(path: &Path, cache_kib: u64) -> Result<Self, std::io::Error> {
        let sqlite = |e: rusqlite::Error| std::io::Error::other(e);
        Self::start(Self::configure(Connection::open(path).map_err(sqlite)?, cache_kib).map_err(sqlite)?)
    }

    fn configure(conn: Connection, cache_kib: u64) -> Result<Connection, rusqlite::Error> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Each commit of a group runs in a savepoint, whose sub-journal keeps the first image
        // of every page the commit touches. Past 64 KiB SQLite moved it to a temporary file,
        // a write syscall per page; in memory it holds one commit's pages at a time (emptied
        // when the savepoint is released). 5% more writes/s at c=16.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Negative: a size in KiB rather than in pages.
        conn.pragma_update(None, "cache_size", -(cache_kib as i64))?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(conn)
    }

    fn start(conn: Connection) -> Result<Self, std::io::Error> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("vow-commits".into()).spawn(move || {
            let mut conn = conn;
            // Ends when the store is dropped and the queue closes.
            while let Ok((group, first_seq, reply)) = queue.recv() {
                let _ = reply.send(store_group(&mut conn, group, first_seq));
            }
        })?;
        Ok(Self { jobs })
    }

    /// Stores `group` in one transaction, each commit in a savepoint of its own, so one that
    /// fails is rolled back alone. Stored commits take consecutive sequence numbers from
    /// `first_seq`, in order. `Err`: the transaction itself failed, and nothing was stored.
    pub async fn store(&self, group: Vec<CommitRows>, first_seq: i64) -> Result<Vec<Outcome>, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.jobs.send((group, first_seq, reply)).is_err() {
            return Err(Error::Stopped);
        }
        answer.await.unwrap_or(Err(Error::Stopped))
    }
}

fn store_group(conn: &mut Connection, group: Vec<CommitRows>, first_seq: i64) -> Result<Vec<Outcome>, Error> {
    let stored = in_transaction(conn, group, first_seq);
    if stored.is_err() {
        // Whatever step failed, the connection must not stay inside the transaction.
        rollback(conn);
    }
    Ok(stored?)
}

fn in_transaction(
    conn: &mut Connection,
    group: Vec<CommitRows>,
    first_seq: i64,
) -> Result<Vec<Outcome>, rusqlite::Error> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let mut next = first_seq;
    let mut outcomes = Vec::with_capacity(group.len());
    for rows in group {
        let outcome = match store_one(conn, rows, next) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e.into()),
        };
        let settled = match outcome {
            Outcome::Stored { .. } => conn.prepare_cached("RELEASE one")?.execute([]),
            _ => conn
                .prepare_cached("ROLLBACK TO one")?
                .execute([])
                .and_then(|_| conn.prepare_cached("RELEASE one")?.execute([])),
        };
        settled?;
        if matches!(outcome, Outcome::Stored { .. }) {
            next += 1;
        }
        outcomes.push(outcome);
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(outcomes)
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// One commit, in a savepoint named `one` that the caller releases or rolls back.
fn store_one(conn: &Connection, c: CommitRows, seq: i64) -> Result<Outcome, rusqlite::Error> {
    conn.prepare_cached("SAVEPOINT one")?.execute([])?;
    let moved = conn
        .prepare_cached("UPDATE accounts SET repo_root = ?1, repo_rev = ?2 WHERE did = ?3 AND repo_root = ?4")?
        .execute(params![c.new_root, c.rev, c.did, c.old_root])?;
    if moved != 1 {
        return Ok(Outcome::RootMoved);
    }
    let mut uploaded = conn.prepare_cached("SELECT 1 FROM blobs WHERE did = ?1 AND cid = ?2")?;
    for cid in &c.referenced {
        if uploaded.query_row(params![c.did, cid], |_| Ok(())).optional()?.is_none() {
            return Ok(Outcome::BlobMissing(cid.clone()));
        }
    }
    let mut block = conn.prepare_cached("INSERT OR IGNORE INTO blocks (cid, bytes) VALUES (?1, ?2)")?;
    for (cid, bytes) in &c.blocks {
        block.execute(params![cid, bytes])?;
    }
    // The record index goes before the block references that consult it.
    let now = super::now();
    for r in &c.records {
        match &r.cid {
            Some(cid) => conn
                .prepare_cached(
                    "INSERT INTO records (did, collection, rkey, cid, rev, indexed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (did, collection, rkey) DO UPDATE SET \
                     cid = excluded.cid, rev = excluded.rev, indexed_at = excluded.indexed_at",
                )?
                .execute(params![c.did, r.collection, r.rkey, cid, c.rev, now])?,
            None => conn
                .prepare_cached("DELETE FROM records WHERE did = ?1 AND collection = ?2 AND rkey = ?3")?
                .execute(params![c.did, r.collection, r.rkey])?,
        };
        if r.existed {
            conn.prepare_cached("DELETE FROM record_blobs WHERE did = ?1 AND collection = ?2 AND rkey = ?3")?
                .execute(params![c.did, r.collection, r.rkey])?;
        }
        let mut blob = conn.prepare_cached(
            "INSERT OR IGNORE INTO record_blobs (did, collection, rkey, cid) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for cid in &r.blobs {
            blob.execute(params![c.did, r.collection, r.rkey, cid])?;
        }
    }
    let mut add = conn.prepare_cached("INSERT OR REPLACE INTO repo_blocks (cid, did, rev) VALUES (?1, ?2, ?3)")?;
    for cid in &c.add_blocks {
        add.execute(params![cid, c.did, c.rev])?;
    }
    // On the embedded store a trigger deletes the blocks no repo references any more.
    let mut drop = conn.prepare_cached(
        "DELETE FROM repo_blocks WHERE did = ?1 AND cid = ?2 \
         AND NOT EXISTS (SELECT 1 FROM records r WHERE r.did = repo_blocks.did AND r.cid = repo_blocks.cid)",
    )?;
    for cid in &c.drop_blocks {
        drop.execute(params![c.did, cid])?;
    }
    let event = (c.event)(seq);
    conn.prepare_cached("INSERT INTO firehose (seq, did, kind, frame, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![seq, event.did, event.kind, event.frame, event.created_at])?;
    Ok(Outcome::Stored { seq, frame: event.frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(did: &str, old: &str, new: &str, blob: Option<&str>) -> CommitRows {
        let did_owned = did.to_owned();
        CommitRows {
            did: did.into(),
            old_root: old.into(),
            new_root: new.into(),
            rev: "rev2".into(),
            blocks: Vec::new(),
            records: vec![RecordRow {
                collection: "app.bsky.feed.post".into(),
                rkey: new.into(),
                cid: Some(new.into()),
                existed: false,
                blobs: Vec::new(),
            }],
            add_blocks: vec![new.into()],
            drop_blocks: Vec::new(),
            referenced: blob.into_iter().map(str::to_owned).collect(),
            event: Box::new(move |seq| EventRow {
                did: did_owned,
                kind: "commit",
                frame: seq.to_be_bytes().to_vec(),
                created_at: 0,
            }),
        }
    }

    /// One commit of a group that fails (its root moved, or its blob is missing) is rolled
    /// back alone; the others land with consecutive numbers.
    #[tokio::test]
    async fn a_failing_commit_leaves_the_rest_of_its_group_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pool = super::super::open(&path).await.unwrap();
        for did in ["did:a", "did:b", "did:c"] {
            sqlx::query(
                "INSERT INTO accounts (did, handle, password_hash, created_at, repo_root) VALUES (?, ?, 'x', 'now', 'root1')",
            )
            .bind(did)
            .bind(did.replace(':', "."))
            .execute(&pool)
            .await
            .unwrap();
        }
        let store = CommitStore::open(&path, 256).unwrap();
        let group = vec![
            commit("did:a", "root1", "a2", None),
            commit("did:b", "elsewhere", "b2", None),
            commit("did:c", "root1", "c2", Some("bafymissing")),
            commit("did:c", "root1", "c3", None),
        ];
        let outcomes = store.store(group, 10).await.unwrap();
        assert!(matches!(outcomes[0], Outcome::Stored { seq: 10, .. }), "{:?}", outcomes[0]);
        assert!(matches!(outcomes[1], Outcome::RootMoved), "{:?}", outcomes[1]);
        assert!(matches!(&outcomes[2], Outcome::BlobMissing(cid) if cid == "bafymissing"), "{:?}", outcomes[2]);
        assert!(matches!(outcomes[3], Outcome::Stored { seq: 11, .. }), "{:?}", outcomes[3]);
        let roots: Vec<(String, String)> =
            sqlx::query_as("SELECT did, repo_root FROM accounts ORDER BY did").fetch_all(&pool).await.unwrap();
        let roots: Vec<(&str, &str)> = roots.iter().map(|(d, r)| (d.as_str(), r.as_str())).collect();
        assert_eq!(roots, [("did:a", "a2"), ("did:b", "root1"), ("did:c", "c3")]);
        let records: Vec<(String,)> =
            sqlx::query_as("SELECT rkey FROM records ORDER BY rkey").fetch_all(&pool).await.unwrap();
        assert_eq!(records, [("a2".to_string(),), ("c3".to_string(),)], "nothing of the failed ones stays");
        let seqs: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM firehose ORDER BY seq").fetch_all(&pool).await.unwrap();
        assert_eq!(seqs, [(10,), (11,)]);
    }
}

//! Blob bytes. On the embedded store: one file per blob under the blob directory, named by its
//! CID. On IPFS: a UnixFS file (chunked, so any size fits under the node's block limit) whose
//! root CID is kept next to the ATProto CID. Either way an upload streams to a temporary file
//! while being hashed, so a blob is never held in memory whole, and is only stored once complete.

use std::path::{Path, PathBuf};

use atproto::Cid;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::store::ipfs::{IpfsError, Kubo};

/// Read size when streaming a blob file out (the default 4 KiB caps a download near 150 MB/s).
const CHUNK: usize = 256 * 1024;

/// How much of an over-limit upload is still read (and thrown away) so the client gets the
/// `BlobTooLarge` answer rather than a connection reset; beyond this the connection is dropped.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("upload interrupted: {0}")]
    Body(String),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Ipfs(#[from] IpfsError),
}

/// A stored blob.
pub struct Stored {
    pub cid: Cid,
    pub size: u64,
    /// The media type the bytes announce, if they are a format [`crate::service::mime::sniff`] knows.
    pub sniffed_mime: Option<&'static str>,
    /// The UnixFS root on IPFS.
    pub ipfs_cid: Option<Cid>,
}

/// How to answer a blob download.
pub enum BlobBody {
    Stream(axum::body::Body),
    /// The configured IPFS gateway serves it.
    Redirect(String),
}

/// Where blob bytes go.
#[derive(Clone)]
pub enum BlobStore {
    Files(BlobFiles),
    Ipfs {
        kubo: Kubo,
        /// Uploads are staged here while hashed, then added to the node and removed.
        staging: BlobFiles,
        gateway: Option<String>,
    },
}

impl BlobStore {
    /// Streams `body` into the store, refusing more than `limit` bytes.
    pub async fn put(&self, body: axum::body::Body, limit: u64) -> Result<Stored, BlobError> {
        match self {
            BlobStore::Files(files) => files.put(body, limit).await,
            BlobStore::Ipfs { kubo, staging, .. } => {
                let staged = staging.stage(body, limit).await?;
                let added = async {
                    let file = tokio::fs::File::open(&staged.path).await?;
                    Ok::<_, BlobError>(kubo.add_file(file, staged.size).await?)
                }
                .await;
                let _ = tokio::fs::remove_file(&staged.path).await;
                Ok(Stored {
                    cid: staged.cid,
                    size: staged.size,
                    sniffed_mime: staged.sniffed_mime,
                    ipfs_cid: Some(added?),
                })
            }
        }
    }

    /// The blob's bytes (or where to get them), if present.
    pub async fn open(&self, cid: &Cid, ipfs_cid: Option<&str>) -> Result<Option<BlobBody>, BlobError> {
        match self {
            BlobStore::Files(files) => Ok(files
                .open(cid)
                .await?
                .map(|f| BlobBody::Stream(axum::body::Body::from_stream(ReaderStream::with_capacity(f, CHUNK))))),
            BlobStore::Ipfs { kubo, gateway, .. } => {
                let Some(ipfs_cid) = ipfs_cid.and_then(|c| Cid::try_from(c).ok()) else { return Ok(None) };
                if let Some(gateway) = gateway {
                    return Ok(Some(BlobBody::Redirect(format!("{gateway}/ipfs/{ipfs_cid}"))));
                }
                Ok(Some(BlobBody::Stream(axum::body::Body::from_stream(kubo.cat(&ipfs_cid).await?))))
            }
        }
    }

    /// Removes a blob's bytes (no other account may still hold the same blob).
    pub async fn remove(&self, cid: &Cid, ipfs_cid: Option<&str>) -> Result<(), BlobError> {
        match self {
            BlobStore::Files(files) => match tokio::fs::remove_file(files.path(cid)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            BlobStore::Ipfs { kubo, .. } => match ipfs_cid.and_then(|c| Cid::try_from(c).ok()) {
                Some(root) => Ok(kubo.unpin(&root, true).await?),
                None => Ok(()),
            },
        }
    }
}

/// An upload written to a temporary file and hashed.
pub struct Staged {
    pub path: PathBuf,
    pub cid: Cid,
    pub size: u64,
    pub sniffed_mime: Option<&'static str>,
}

#[derive(Clone)]
pub struct BlobFiles {
    dir: PathBuf,
}

impl BlobFiles {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, cid: &Cid) -> PathBuf {
        self.dir.join(cid.to_string())
    }

    /// Streams `body` to a temporary file, hashing it, refusing more than `limit` bytes.
    pub async fn stage(&self, body: axum::body::Body, limit: u64) -> Result<Staged, BlobError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let tmp = self.dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
        match write_hashed(&tmp, body, limit).await {
            Ok((digest, size, head)) => Ok(Staged {
                path: tmp,
                cid: atproto::cid::raw_cid_from_digest(digest),
                size,
                sniffed_mime: crate::service::mime::sniff(&head),
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Streams `body` into the store, refusing more than `limit` bytes.
    pub async fn put(&self, body: axum::body::Body, limit: u64) -> Result<Stored, BlobError> {
        let staged = self.stage(body, limit).await?;
        tokio::fs::rename(&staged.path, self.path(&staged.cid)).await?;
        Ok(Stored { cid: staged.cid, size: staged.size, sniffed_mime: staged.sniffed_mime, ipfs_cid: None })
    }

    /// Opens a blob for streaming, if present.
    pub async fn open(&self, cid: &Cid) -> Result<Option<tokio::fs::File>, BlobError> {
        match tokio::fs::File::open(self.path(cid)).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads and discards up to `budget` more bytes of the body.
async fn drain(mut stream: axum::body::BodyDataStream, mut budget: u64) {
    while let Some(Ok(chunk)) = stream.next().await {
        let n = chunk.len() as u64;
        if n > budget {
            return;
        }
        budget -= n;
    }
}

/// Writes the body to `path`; returns its SHA-256, its size and its first bytes.
async fn write_hashed(path: &Path, body: axum::body::Body, limit: u64) -> Result<([u8; 32], u64, Vec<u8>), BlobError> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = Vec::with_capacity(crate::service::mime::SNIFF_BYTES);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            drain(stream, limit + DRAIN_LIMIT - size.min(limit + DRAIN_LIMIT)).await;
            return Err(BlobError::TooLarge(limit));
        }
        hasher.update(&chunk);
        let wanted = crate::service::mime::SNIFF_BYTES - head.len();
        head.extend_from_slice(&chunk[..wanted.min(chunk.len())]);
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((hasher.finalize().into(), size, head))
}

/// The clean-up of blobs no record references: once their grace period is over, their rows
/// go, then their bytes when no other account holds the same blob. Uploads hold it off (see
/// [`BlobSweep::hold_off`]) between storing bytes and recording their row.
#[derive(Clone)]
pub struct BlobSweep {
    db: sqlx::SqlitePool,
    store: BlobStore,
    grace: std::time::Duration,
    gate: std::sync::Arc<tokio::sync::RwLock<()>>,
}

impl BlobSweep {
    pub fn new(db: sqlx::SqlitePool, store: BlobStore, grace: std::time::Duration) -> Self {
        Self { db, store, grace, gate: Default::default() }
    }

    /// While the returned guard lives, no sweep runs.
    pub async fn hold_off(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// One sweep; returns how many rows went.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        let _exclusive = self.gate.write().await;
        let since_epoch =
            (std::time::SystemTime::now() - self.grace).duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let cutoff = crate::store::db::format_timestamp(since_epoch.as_millis() as i64);
        let gone = crate::store::db::blobs::delete_unreferenced(&self.db, &cutoff).await?;
        for (cid, ipfs_cid) in &gone {
            if crate::store::db::blobs::held_by_anyone(&self.db, cid).await? {
                continue;
            }
            let Ok(parsed) = cid.parse::<Cid>() else { continue };
            if let Err(e) = self.store.remove(&parsed, ipfs_cid.as_deref()).await {
                tracing::warn!(%cid, error = %e, "could not remove an unreferenced blob's bytes");
            }
        }
        Ok(gone.len())
    }

    /// Removes the bytes of those `blobs` (cid, IPFS root) no account holds any more, with
    /// uploads held off (an account deleted: its rows are already gone).
    pub async fn remove_unheld(&self, blobs: &[(String, Option<String>)]) -> Result<usize, sqlx::Error> {
        let _exclusive = self.gate.write().await;
        let mut removed = 0;
        for (cid, ipfs_cid) in blobs {
            if crate::store::db::blobs::held_by_anyone(&self.db, cid).await? {
                continue;
            }
            let Ok(parsed) = cid.parse::<Cid>() else { continue };
            match self.store.remove(&parsed, ipfs_cid.as_deref()).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(%cid, error = %e, "could not remove a deleted account's blob"),
            }
        }
        Ok(removed)
    }

    /// Sweeps every `every`, in the background.
    pub fn start(self, every: std::time::Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.run_once().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(removed = n, "removed unreferenced blobs");
                        metrics::counter!("vow_swept_total", "what" => "blobs").increment(n as u64);
                    }
                    Err(e) => tracing::warn!(error = %e, "blob clean-up failed"),
                }
            }
        });
    }
}

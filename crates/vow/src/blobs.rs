//! Blob bytes on the embedded store: one file per blob under the blob directory, named by its
//! CID. Uploads stream to a temporary file while being hashed, so a blob is never held in memory
//! whole, and appear under their final name only when complete.

use std::path::{Path, PathBuf};

use atproto::Cid;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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
}

/// A stored blob.
pub struct Stored {
    pub cid: Cid,
    pub size: u64,
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

    /// Streams `body` into the store, refusing more than `limit` bytes.
    pub async fn put(&self, body: axum::body::Body, limit: u64) -> Result<Stored, BlobError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let tmp = self.dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
        let result = write_hashed(&tmp, body, limit).await;
        let (digest, size) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let cid = atproto::cid::raw_cid_from_digest(digest);
        tokio::fs::rename(&tmp, self.path(&cid)).await?;
        Ok(Stored { cid, size })
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

async fn write_hashed(path: &Path, body: axum::body::Body, limit: u64) -> Result<([u8; 32], u64), BlobError> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            drain(stream, limit + DRAIN_LIMIT - size.min(limit + DRAIN_LIMIT)).await;
            return Err(BlobError::TooLarge(limit));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((hasher.finalize().into(), size))
}

//! `vow backup DIR` and `vow restore DIR`. A backup is taken while the server runs: the
//! database through SQLite's `VACUUM INTO` (one consistent snapshot: every write acknowledged
//! before it started is in it), then the blob files that snapshot names, the key files, and on
//! IPFS the list of CIDs the node must keep pinned (the node's own data is backed up with the
//! node). A restore, with the server stopped, puts the files back and pins the list again.

use std::path::{Path, PathBuf};

/// Where the server keeps what a backup holds (the same settings `vow run` reads).
#[derive(Debug, clap::Args)]
pub struct Paths {
    #[arg(long, env = "VOW_DB_NAME", default_value = "vow.db")]
    db_name: PathBuf,
    /// The embedded blob store (default: `blobs` next to the database).
    #[arg(long, env = "VOW_BLOB_DIR")]
    blob_dir: Option<PathBuf>,
    #[arg(long, env = "VOW_ROTATION_KEY_PATH")]
    rotation_key_path: PathBuf,
    #[arg(long, env = "VOW_JWK_PATH")]
    jwk_path: PathBuf,
    /// With an IPFS node, `restore` pins the backup's CIDs there again.
    #[arg(long, env = "VOW_IPFS_NODE_URL")]
    ipfs_node_url: Option<String>,
}

impl Paths {
    fn blob_dir(&self) -> PathBuf {
        self.blob_dir.clone().unwrap_or_else(|| self.db_name.parent().unwrap_or(Path::new(".")).join("blobs"))
    }
    fn ipfs(&self) -> Option<&str> {
        self.ipfs_node_url.as_deref().filter(|u| !u.is_empty())
    }
}

const DB: &str = "vow.db";
const BLOBS: &str = "blobs";
const KEYS: &str = "keys";
const PINS: &str = "ipfs-pins.txt";
const MANIFEST: &str = "manifest.json";

fn io(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

pub async fn backup(dir: &Path, paths: &Paths) -> Result<(), String> {
    if !paths.db_name.is_file() {
        return Err(format!("no database at {} (VOW_DB_NAME)", paths.db_name.display()));
    }
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(format!("{} is not empty: give a new directory for each backup", dir.display()));
    }
    std::fs::create_dir_all(dir.join(KEYS)).map_err(io(dir))?;
    std::fs::create_dir_all(dir.join(BLOBS)).map_err(io(dir))?;
    let started = crate::store::db::now();

    let live = crate::store::db::open(&paths.db_name).await.map_err(|e| format!("database: {e}"))?;
    let copy = std::path::absolute(dir.join(DB)).map_err(io(dir))?;
    crate::store::db::backup::snapshot(&live, &copy).await.map_err(|e| format!("snapshot: {e}"))?;
    live.close().await;

    let snap = crate::store::db::open(&copy).await.map_err(|e| format!("the snapshot: {e}"))?;
    let (blobs, pins) = crate::store::db::backup::contents(&snap).await.map_err(|e| format!("the snapshot: {e}"))?;
    let heads = crate::store::db::backup::heads(&snap).await.map_err(|e| format!("the snapshot: {e}"))?;
    snap.close().await;

    // Blob files are written before the rows that name them, so each one the snapshot names
    // is there, unless it was swept since as no longer referenced.
    let mut copied = 0;
    let mut missing = Vec::new();
    if paths.ipfs().is_none() {
        let from = paths.blob_dir();
        for cid in &blobs {
            match std::fs::copy(from.join(cid), dir.join(BLOBS).join(cid)) {
                Ok(_) => copied += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(cid.clone()),
                Err(e) => return Err(format!("blob {cid}: {e}")),
            }
        }
    }
    for key in [&paths.rotation_key_path, &paths.jwk_path] {
        let name = key.file_name().ok_or_else(|| format!("{} is not a file", key.display()))?;
        std::fs::copy(key, dir.join(KEYS).join(name)).map_err(io(key))?;
    }
    std::fs::write(dir.join(PINS), pins.join("\n") + "\n").map_err(io(dir))?;
    let manifest = serde_json::json!({
        "vow": env!("CARGO_PKG_VERSION"),
        "started_at": started,
        "finished_at": crate::store::db::now(),
        "store": if paths.ipfs().is_some() { "ipfs" } else { "embedded" },
        "accounts": heads.iter().map(|(did, root, rev)| serde_json::json!({ "did": did, "root": root, "rev": rev })).collect::<Vec<_>>(),
        "blob_files": copied,
        "blobs_swept_meanwhile": missing,
        "ipfs_pins": pins.len(),
        "keys": [
            paths.rotation_key_path.file_name().map(|n| n.to_string_lossy().into_owned()),
            paths.jwk_path.file_name().map(|n| n.to_string_lossy().into_owned()),
        ],
    });
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&manifest).unwrap_or_default()).map_err(io(dir))?;
    println!(
        "backup in {}: {} account(s), {copied} blob file(s), {} CID(s) to pin on IPFS{}",
        dir.display(),
        heads.len(),
        pins.len(),
        if missing.is_empty() { String::new() } else { format!(", {} blob(s) swept meanwhile", missing.len()) }
    );
    Ok(())
}

pub async fn restore(dir: &Path, paths: &Paths, force: bool) -> Result<(), String> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).map_err(io(dir))?)
        .map_err(|e| format!("{}: {e}", dir.join(MANIFEST).display()))?;
    if paths.db_name.exists() && !force {
        return Err(format!(
            "{} exists: stop Vow and move it away (or pass --force to replace it)",
            paths.db_name.display()
        ));
    }
    if let Some(parent) = paths.db_name.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // A stale write-ahead log beside the old file would be replayed onto the restored one.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", paths.db_name.display()));
        if side.exists() {
            std::fs::remove_file(&side).map_err(io(&side))?;
        }
    }
    std::fs::copy(dir.join(DB), &paths.db_name).map_err(io(&paths.db_name))?;
    let blob_dir = paths.blob_dir();
    std::fs::create_dir_all(&blob_dir).map_err(io(&blob_dir))?;
    let mut blobs = 0;
    for entry in std::fs::read_dir(dir.join(BLOBS)).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        std::fs::copy(entry.path(), blob_dir.join(entry.file_name())).map_err(io(&entry.path()))?;
        blobs += 1;
    }
    for key in [&paths.rotation_key_path, &paths.jwk_path] {
        let name = key.file_name().ok_or_else(|| format!("{} is not a file", key.display()))?;
        let saved = dir.join(KEYS).join(name);
        let saved_bytes = std::fs::read(&saved).map_err(io(&saved))?;
        if let Ok(existing) = std::fs::read(key)
            && existing != saved_bytes
            && !force
        {
            return Err(format!("{} holds another key than the backup's: move it away or pass --force", key.display()));
        }
        if let Some(parent) = key.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(key, saved_bytes).map_err(io(key))?;
    }
    let mut pinned = 0;
    if let Some(node) = paths.ipfs() {
        let kubo = crate::store::ipfs::Kubo::new(node, std::time::Duration::from_secs(60));
        let list = std::fs::read_to_string(dir.join(PINS)).map_err(io(dir))?;
        let cids: Vec<atproto::Cid> = list.lines().filter_map(|l| atproto::Cid::try_from(l.trim()).ok()).collect();
        for chunk in cids.chunks(256) {
            kubo.pin_direct(chunk).await.map_err(|e| format!("pinning on {node}: {e}"))?;
            pinned += chunk.len();
        }
    }
    println!(
        "restored {} account(s) from the backup started at {}: database, {blobs} blob file(s), keys{}",
        manifest["accounts"].as_array().map_or(0, Vec::len),
        manifest["started_at"].as_str().unwrap_or("?"),
        if pinned > 0 { format!(", {pinned} CID(s) pinned") } else { String::new() }
    );
    Ok(())
}

//! An account's status over its life, as one service: deactivation by its user, takedown by
//! the operator, deletion. Every change is one transaction with its `#account` event, taken
//! under the account's repo lock so no write lands in between.

use std::sync::Arc;

use atproto::Cid;

use crate::error::{XrpcError, XrpcResult};
use crate::service::events::Event;
use crate::store::blocks::{BlockStore, Blocks};
use crate::store::db::{self, accounts};

#[derive(Clone)]
pub struct Lifecycle {
    pub db: sqlx::SqlitePool,
    pub blocks: Blocks,
    pub blob_sweep: crate::service::blobs::BlobSweep,
    pub firehose: Arc<crate::service::firehose::Firehose>,
    pub locks: Arc<crate::service::repo::writer::RepoLocks>,
}

fn not_found() -> XrpcError {
    XrpcError::named("AccountNotFound", "No such account")
}

impl Lifecycle {
    /// The user's deactivation: the repo stops being served and written, relays hear
    /// `#account`, stored service tokens go. A no-op when already deactivated.
    pub async fn deactivate(&self, did: &str) -> XrpcResult<()> {
        let mut guard = self.locks.lock(did).await;
        let account = accounts::by_did(&self.db, did).await?.ok_or_else(not_found)?;
        if account.deactivated_at.is_some() {
            return Ok(());
        }
        let mut events = self.firehose.sequencer().await?;
        let mut tx = self.db.begin().await?;
        accounts::deactivate(&mut tx, did).await?;
        db::service_tokens::discard(&mut *tx, did).await?;
        let status = if account.takedown_ref.is_some() { "takendown" } else { "deactivated" };
        events.append(&mut tx, Event::Account { did, active: false, status: Some(status) }).await?;
        tx.commit().await?;
        events.publish();
        guard.forget_account();
        tracing::info!(%did, "account deactivated");
        Ok(())
    }

    /// The operator's takedown (`reference` names it) or its lifting (None). A takedown ends
    /// every session; relays hear `#account` either way.
    pub async fn set_takedown(&self, did: &str, reference: Option<&str>) -> XrpcResult<()> {
        let mut guard = self.locks.lock(did).await;
        let account = accounts::by_did(&self.db, did).await?.ok_or_else(not_found)?;
        let mut events = self.firehose.sequencer().await?;
        let mut tx = self.db.begin().await?;
        accounts::set_takedown(&mut tx, did, reference).await?;
        if reference.is_some() {
            accounts::end_sessions(&mut tx, did).await?;
        }
        let status = accounts::status_of(reference.is_some(), account.deactivated_at.is_some());
        events.append(&mut tx, Event::Account { did, active: status.is_none(), status }).await?;
        db::sessions::commit_ending(tx, reference.is_some()).await?;
        events.publish();
        guard.forget_account();
        tracing::warn!(%did, takedown = ?reference, "account takedown changed");
        Ok(())
    }

    /// Deletes the account and everything this server holds for it (see
    /// [`accounts::delete_everything`]); relays hear `#account` with status `deleted`. Blocks
    /// and blobs another account also holds stay.
    pub async fn delete(&self, did: &str) -> XrpcResult<()> {
        let mut guard = self.locks.lock(did).await;
        accounts::by_did(&self.db, did).await?.ok_or_else(not_found)?;
        let mut events = self.firehose.sequencer().await?;
        let mut tx = self.db.begin().await?;
        let removed = accounts::delete_everything(&mut tx, did).await?;
        events.append(&mut tx, Event::Account { did, active: false, status: Some("deleted") }).await?;
        db::sessions::commit_ending(tx, true).await?;
        events.publish();
        guard.forget_account();
        drop(guard);
        // Outside the metadata database (IPFS) blocks are unpinned now, if no repo holds them.
        let cids: Vec<Cid> = removed.blocks.iter().filter_map(|c| c.parse().ok()).collect();
        if let Err(e) = self.blocks.release_unreferenced(&self.db, cids).await {
            tracing::warn!(%did, error = %e, "could not release a deleted account's blocks");
        }
        if let Err(e) = self.blob_sweep.remove_unheld(&removed.blobs).await {
            tracing::warn!(%did, error = %e, "could not remove a deleted account's blobs; the sweep will retry");
        }
        tracing::warn!(%did, blocks = removed.blocks.len(), blobs = removed.blobs.len(), "account deleted");
        Ok(())
    }
}

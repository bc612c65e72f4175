//! `com.atproto.sync.subscribeRepos`. Events are rows of the `firehose` table (see
//! [`crate::events`]); one publisher task reads newly committed rows in seq order and
//! broadcasts them, so every subscriber sees the same order with no gaps. A subscriber with a
//! cursor is replayed from the table and then follows the broadcast. One that falls too far
//! behind the broadcast is cut off with `ConsumerTooSlow` instead of being buffered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use sqlx::SqlitePool;
use tokio::sync::{Notify, broadcast};

use crate::events::{error_frame, info_frame};

/// Frames a subscriber may fall behind the newest before it is cut off.
const BACKLOG: usize = 16_384;
/// Rows read per query when replaying or publishing.
const PAGE: i64 = 500;

pub type Frame = Arc<(i64, Vec<u8>)>;

pub struct Firehose {
    live: broadcast::Sender<Frame>,
    wake: Notify,
    db: SqlitePool,
}

impl Firehose {
    /// Starts the publisher and the retention sweeper.
    pub fn start(db: SqlitePool, retention: Duration) -> Arc<Self> {
        let (live, _) = broadcast::channel(BACKLOG);
        let firehose = Arc::new(Self { live, wake: Notify::new(), db });
        let publisher = firehose.clone();
        tokio::spawn(async move { publisher.publish().await });
        let sweeper = firehose.clone();
        tokio::spawn(async move { sweeper.sweep(retention).await });
        firehose
    }

    /// Tells the publisher that new rows were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn head(&self) -> Result<i64, sqlx::Error> {
        let (head,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM firehose").fetch_one(&self.db).await?;
        Ok(head)
    }

    async fn page_after(&self, seq: i64) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        sqlx::query_as("SELECT seq, frame FROM firehose WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(seq)
            .bind(PAGE)
            .fetch_all(&self.db)
            .await
    }

    async fn publish(&self) {
        let mut last = loop {
            match self.head().await {
                Ok(head) => break head,
                Err(e) => {
                    tracing::error!(error = %e, "firehose: cannot read the head; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        loop {
            // A notification, or a slow poll in case a writer could not notify.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
            loop {
                let rows = match self.page_after(last).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!(error = %e, "firehose: cannot read new events");
                        break;
                    }
                };
                let full = rows.len() as i64 == PAGE;
                for (seq, frame) in rows {
                    last = seq;
                    let _ = self.live.send(Arc::new((seq, frame))); // no subscribers is fine
                }
                if !full {
                    break;
                }
            }
        }
    }

    async fn sweep(&self, retention: Duration) {
        loop {
            let cutoff = crate::db::unix_now() * 1000 - retention.as_millis() as i64;
            // Keep the newest row whatever its age, so MAX(seq)+1 never goes backwards.
            let swept = sqlx::query(
                "DELETE FROM firehose WHERE created_at < ? AND seq < (SELECT COALESCE(MAX(seq), 0) FROM firehose)",
            )
            .bind(cutoff)
            .execute(&self.db)
            .await;
            match swept {
                Ok(r) if r.rows_affected() > 0 => {
                    tracing::info!(rows = r.rows_affected(), "firehose: old events removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "firehose: retention sweep failed"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    /// Serves one subscriber until it leaves or falls behind.
    pub async fn serve(&self, mut socket: WebSocket, cursor: Option<i64>) {
        // Subscribe before replaying so nothing published meanwhile is missed; replayed
        // sequence numbers are skipped when they come round again.
        let mut live = self.live.subscribe();
        let mut last = match cursor {
            None => match self.head().await {
                Ok(head) => head,
                Err(_) => return,
            },
            Some(cursor) => match self.replay(&mut socket, cursor).await {
                Some(last) => last,
                None => return,
            },
        };
        loop {
            tokio::select! {
                frame = live.recv() => match frame {
                    Ok(frame) => {
                        if frame.0 <= last {
                            continue;
                        }
                        last = frame.0;
                        if socket.send(Message::Binary(frame.1.clone().into())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let bye = error_frame("ConsumerTooSlow", "Stream consumer too slow; reconnect with a cursor");
                        let _ = socket.send(Message::Binary(bye.into())).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
            }
        }
    }

    /// Replays from `cursor`; returns the last seq sent, or `None` if the stream ended.
    async fn replay(&self, socket: &mut WebSocket, cursor: i64) -> Option<i64> {
        let head = self.head().await.ok()?;
        if cursor > head {
            let bye = error_frame("FutureCursor", "Cursor in the future");
            let _ = socket.send(Message::Binary(bye.into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return None;
        }
        let (oldest,): (Option<i64>,) =
            sqlx::query_as("SELECT MIN(seq) FROM firehose").fetch_one(&self.db).await.ok()?;
        if let Some(oldest) = oldest
            && cursor > 0
            && cursor < oldest - 1
        {
            let info = info_frame("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events");
            socket.send(Message::Binary(info.into())).await.ok()?;
        }
        let mut last = cursor;
        loop {
            let rows = self.page_after(last).await.ok()?;
            let done = (rows.len() as i64) < PAGE;
            for (seq, frame) in rows {
                socket.send(Message::Binary(frame.into())).await.ok()?;
                last = seq;
            }
            if done {
                return Some(last);
            }
        }
    }
}

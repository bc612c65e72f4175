//! `com.atproto.sync.subscribeRepos`. Events are rows of the `firehose` table (see
//! [`crate::service::events`]). Writers take the [`Sequencer`] around the transaction that stores their
//! events: it hands out the next numbers and, once the transaction has committed, broadcasts the
//! frames before letting the next writer in, so every subscriber sees seq order with no gaps.
//! A subscriber with a cursor is replayed from the table and then follows the broadcast. One
//! that falls too far behind the broadcast is cut off with `ConsumerTooSlow` instead of being
//! buffered.
//!
//! Replay reads the table in pages of [`PAGE`] sequence numbers aligned on multiples of it, so
//! subscribers replaying the same stretch share one read and one copy of it: a page wholly
//! committed is read once (concurrent readers wait for the first) and kept in a byte-bounded
//! cache. Frames are reference-counted from the moment they are stored, and a subscriber is
//! sent a page (or whatever the broadcast has queued) with one flush, not one per frame.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use sqlx::SqlitePool;
use tokio::sync::{Mutex, MutexGuard, OnceCell, broadcast};

use crate::service::events::{Event, error_frame, info_frame};

/// How long one frame may take to reach a subscriber before it counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Sequence numbers per replay page; page `k` holds `k * PAGE + 1 ..= (k + 1) * PAGE`.
const PAGE: i64 = 128;
/// Live frames sent with one flush, at most.
const LIVE_BATCH: usize = 64;

pub type Frame = (i64, Bytes);
type Page = Arc<[Frame]>;

pub struct Firehose {
    /// Behind an `Arc` so a slot of the channel is a pointer: the channel's slots are allocated
    /// up front, 16,384 of them by default (0.6 MB instead of 1.2 MB of an idle server).
    live: broadcast::Sender<Arc<Frame>>,
    pages: Pages,
    /// The last seq committed; `None` until read from the table (and after a failed insert).
    last_seq: Mutex<Option<i64>>,
    db: SqlitePool,
    /// Every connected subscriber, replaying or live, with the last seq it was sent.
    watching: std::sync::Mutex<BTreeMap<u64, Watch>>,
    next_id: AtomicU64,
    /// Subscribers being replayed from the table; when the last one is done, the memory the
    /// replay's frames took is given back (see [`crate::service::bounded::release_free_memory`]).
    replaying: AtomicUsize,
    /// When that was last done: at most once per [`TRIM_EVERY`], however often clients replay.
    last_trim: std::sync::Mutex<Option<Instant>>,
}

/// The least time between two hand-backs of free memory after replays (each walks the heaps).
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Whether memory may be given back at `now`, having last been at `last`; records it if so.
fn trim_due(last: &mut Option<Instant>, now: Instant) -> bool {
    let due = last.is_none_or(|t| now.duration_since(t) >= TRIM_EVERY);
    if due {
        *last = Some(now);
    }
    due
}

/// Counts a replay in progress; the last one to end gives the freed memory back.
struct Replaying<'a>(&'a Firehose);

impl<'a> Replaying<'a> {
    fn start(firehose: &'a Firehose) -> Self {
        firehose.replaying.fetch_add(1, Ordering::AcqRel);
        Self(firehose)
    }
}

impl Drop for Replaying<'_> {
    fn drop(&mut self) {
        if self.0.replaying.fetch_sub(1, Ordering::AcqRel) == 1
            && trim_due(&mut self.0.last_trim.lock().unwrap_or_else(|e| e.into_inner()), Instant::now())
        {
            tokio::task::spawn_blocking(crate::service::bounded::release_free_memory);
        }
    }
}

struct Watch {
    address: String,
    sent: Arc<AtomicI64>,
}

/// One subscriber's place in the stream, as `/metrics` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberLag {
    pub id: u64,
    /// The client's address (the forwarded one behind a trusted proxy).
    pub address: String,
    /// Events committed that it has not been sent yet.
    pub lag: i64,
}

/// Removes a subscriber from the registry when its connection ends, however it ends.
struct Watching<'a> {
    firehose: &'a Firehose,
    id: u64,
    sent: Arc<AtomicI64>,
}

impl Watching<'_> {
    fn sent(&self, seq: i64) {
        self.sent.store(seq, Ordering::Relaxed);
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.firehose.watching.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Exclusive right to append events: taken just before a transaction that stores events and
/// finished with [`Sequencer::publish`] right after it commits. Dropping it unpublished (the
/// transaction failed) hands out the same numbers again.
pub struct Sequencer<'a> {
    firehose: &'a Firehose,
    last: MutexGuard<'a, Option<i64>>,
    next: i64,
    frames: Vec<(i64, Vec<u8>)>,
}

impl Sequencer<'_> {
    /// Stores `event` in the caller's transaction under the next sequence number.
    pub async fn append(&mut self, conn: &mut sqlx::SqliteConnection, event: Event<'_>) -> Result<i64, sqlx::Error> {
        let mut q = crate::store::db::refs::batch();
        let seq = self.push(&mut q, event);
        crate::store::db::refs::execute(conn, q).await?;
        Ok(seq)
    }

    /// Adds the statement storing `event` under the next sequence number to the caller's batch,
    /// which must run in the transaction this sequencer is held around.
    fn push(&mut self, q: &mut crate::store::db::refs::Batch, event: Event<'_>) -> i64 {
        let seq = self.next;
        self.frames.push((seq, crate::service::events::push_insert(q, seq, &event)));
        self.next += 1;
        seq
    }

    /// The number the next event stored takes.
    pub fn next_seq(&self) -> i64 {
        self.next
    }

    /// Records an event stored, by the caller's transaction, as number `seq` (the next one).
    pub fn stored(&mut self, seq: i64, frame: Vec<u8>) {
        debug_assert_eq!(seq, self.next, "events are stored in order");
        self.frames.push((seq, frame));
        self.next = seq + 1;
    }

    /// Call once the transaction has committed: sends the frames to live subscribers.
    pub fn publish(mut self) {
        if self.frames.is_empty() {
            return;
        }
        *self.last = Some(self.next - 1);
        for (seq, frame) in self.frames.drain(..) {
            let _ = self.firehose.live.send(Arc::new((seq, Bytes::from(frame)))); // no subscribers is fine
        }
    }
}

impl Drop for Sequencer<'_> {
    /// Events appended but never published: their transaction failed, perhaps because the
    /// table holds more than this process numbered. Count again from the table next time.
    fn drop(&mut self) {
        if !self.frames.is_empty() {
            *self.last = None;
        }
    }
}

impl Firehose {
    /// Starts the retention sweeper.
    /// `backlog`: frames a subscriber may fall behind the newest before it is cut off.
    /// `page_cache_bytes`: the bound of the replay page cache.
    pub fn start(db: SqlitePool, retention: Duration, backlog: usize, page_cache_bytes: u64) -> Arc<Self> {
        let (live, _) = broadcast::channel(backlog.max(1));
        let firehose = Arc::new(Self {
            live,
            pages: Pages::new(page_cache_bytes),
            last_seq: Mutex::new(None),
            db,
            watching: std::sync::Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            replaying: AtomicUsize::new(0),
            last_trim: std::sync::Mutex::new(None),
        });
        let sweeper = firehose.clone();
        tokio::spawn(async move { sweeper.sweep(retention).await });
        firehose
    }

    /// The newest sequence number, and each connected subscriber (replaying or live) with how
    /// many committed events it has not been sent yet.
    pub async fn stats(&self) -> Result<(i64, Vec<SubscriberLag>), sqlx::Error> {
        let head = self.head().await?;
        let watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        let lags = watching
            .iter()
            .map(|(id, w)| SubscriberLag {
                id: *id,
                address: w.address.clone(),
                lag: (head - w.sent.load(Ordering::Relaxed)).max(0),
            })
            .collect();
        Ok((head, lags))
    }

    fn watch(&self, address: String, from: i64) -> Watching<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sent = Arc::new(AtomicI64::new(from));
        let watch = Watch { address, sent: sent.clone() };
        self.watching.lock().unwrap_or_else(|e| e.into_inner()).insert(id, watch);
        Watching { firehose: self, id, sent }
    }

    /// Takes the right to append events (see [`Sequencer`]).
    pub async fn sequencer(&self) -> Result<Sequencer<'_>, sqlx::Error> {
        let mut last = self.last_seq.lock().await;
        let current = match *last {
            Some(seq) => seq,
            None => {
                let head = self.head().await?;
                *last = Some(head);
                head
            }
        };
        Ok(Sequencer { firehose: self, last, next: current + 1, frames: Vec::new() })
    }

    async fn head(&self) -> Result<i64, sqlx::Error> {
        Ok(crate::store::db::events::newest_seq(&self.db).await?.unwrap_or(0))
    }

    async fn sweep(&self, retention: Duration) {
        loop {
            let cutoff = crate::store::db::unix_now() * 1000 - retention.as_millis() as i64;
            // Keep the newest row whatever its age, so MAX(seq)+1 never goes backwards.
            match crate::store::db::events::delete_older_than(&self.db, cutoff).await {
                Ok(rows) if rows > 0 => {
                    tracing::info!(rows, "firehose: old events removed");
                    metrics::counter!("vow_swept_total", "what" => "firehose_events").increment(rows);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "firehose: retention sweep failed"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    /// Serves one subscriber (`address` names it in the metrics) until it leaves or falls behind.
    pub async fn serve(&self, mut socket: WebSocket, cursor: Option<i64>, address: String) {
        // Subscribe before reading the head: everything after it comes through the broadcast,
        // everything up to it is replayed, and replayed numbers are skipped when they come round.
        let mut live = self.live.subscribe();
        let head = match self.head().await {
            Ok(head) => head,
            Err(_) => return,
        };
        let watching = self.watch(address, cursor.unwrap_or(head).min(head));
        let mut last = match cursor {
            None => head,
            Some(cursor) => match self.replay(&mut socket, cursor, head, &watching).await {
                Some(last) => last,
                None => return,
            },
        };
        let mut batch = Vec::with_capacity(LIVE_BATCH);
        loop {
            tokio::select! {
                frame = live.recv() => {
                    let mut next = frame;
                    loop {
                        match next {
                            Ok(frame) if frame.0 > last => {
                                last = frame.0;
                                batch.push(frame.1.clone());
                            }
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => return too_slow(socket).await,
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                        if batch.len() == LIVE_BATCH {
                            break;
                        }
                        next = match live.try_recv() {
                            Ok(frame) => Ok(frame),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                            Err(broadcast::error::TryRecvError::Closed) => Err(broadcast::error::RecvError::Closed),
                            Err(broadcast::error::TryRecvError::Empty) => break,
                        };
                    }
                    if !send_all(&mut socket, batch.drain(..)).await {
                        return;
                    }
                    watching.sent(last);
                }
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
            }
        }
    }

    /// Replays what follows `cursor` up to `head`; returns the last seq sent, or `None` if the
    /// stream ended.
    async fn replay(&self, socket: &mut WebSocket, cursor: i64, head: i64, watching: &Watching<'_>) -> Option<i64> {
        let _replaying = Replaying::start(self);
        if cursor > head {
            let bye = error_frame("FutureCursor", "Cursor in the future");
            let _ = socket.send(Message::Binary(bye.into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return None;
        }
        let oldest = crate::store::db::events::oldest_seq(&self.db).await.ok()?;
        let mut last = cursor;
        if let Some(oldest) = oldest {
            if cursor > 0 && cursor < oldest - 1 {
                let info = info_frame("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events");
                socket.send(Message::Binary(info.into())).await.ok()?;
            }
            // Nothing is kept before `oldest`: start there rather than page through the void.
            last = last.max(oldest - 1);
        }
        while last < head {
            let k = last.div_euclid(PAGE);
            let end = ((k + 1) * PAGE).min(head);
            let rows = if end == (k + 1) * PAGE {
                self.pages.get(&self.db, k).await.ok()?
            } else {
                // The newest, incomplete page: read for this subscriber alone.
                read_frames(&self.db, last, end).await.ok()?
            };
            let fresh = rows.iter().filter(|(seq, _)| *seq > last);
            if !send_all(socket, fresh.map(|(_, frame)| frame.clone())).await {
                return None;
            }
            // Numbers missing from the page were swept; move past them too.
            last = end;
            watching.sent(last);
        }
        Some(last)
    }
}

/// The stored frames numbered after `after` and up to `upto`, ready to share.
async fn read_frames(db: &SqlitePool, after: i64, upto: i64) -> Result<Page, sqlx::Error> {
    let rows = crate::store::db::events::frames_between(db, after, upto).await?;
    Ok(rows.into_iter().map(|(seq, frame)| (seq, Bytes::from(frame))).collect())
}

/// Sends `frames` with one flush at the end; false when the subscriber is gone or too slow.
async fn send_all(socket: &mut WebSocket, frames: impl Iterator<Item = Bytes>) -> bool {
    let sent = tokio::time::timeout(SEND_TIMEOUT, async {
        for frame in frames {
            socket.feed(Message::Binary(frame)).await?;
        }
        socket.flush().await
    });
    matches!(sent.await, Ok(Ok(())))
}

/// Tells a subscriber that fell behind the broadcast to come back with a cursor, and ends it.
async fn too_slow(mut socket: WebSocket) {
    let bye = error_frame("ConsumerTooSlow", "Stream consumer too slow; reconnect with a cursor");
    // A consumer this far behind may not be reading at all: do not wait long.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        socket.send(Message::Binary(bye.into())).await?;
        socket.send(Message::Close(None)).await
    })
    .await;
}

/// The replay pages wholly committed, shared by every subscriber: each is read from the table
/// once however many subscribers want it at the same time, and kept while the byte bound allows.
struct Pages {
    cache: moka::sync::Cache<i64, Page>,
    /// Pages being read, for the readers that arrive meanwhile to wait on.
    loading: std::sync::Mutex<HashMap<i64, Arc<OnceCell<Page>>>>,
}

impl Pages {
    fn new(bound_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(bound_bytes)
            .weigher(|_: &i64, page: &Page| {
                crate::service::bounded::weigh(page.iter().map(|(_, f)| f.len() + 16).sum::<usize>())
            })
            .build();
        Self { cache, loading: Default::default() }
    }

    /// Page `k`, which must be wholly committed.
    async fn get(&self, db: &SqlitePool, k: i64) -> Result<Page, sqlx::Error> {
        if let Some(page) = self.cache.get(&k) {
            return Ok(page);
        }
        let cell = self.loading.lock().unwrap_or_else(|e| e.into_inner()).entry(k).or_default().clone();
        let page = cell
            .get_or_try_init(|| async {
                let page = read_frames(db, k * PAGE, (k + 1) * PAGE).await?;
                self.cache.insert(k, page.clone());
                Ok::<_, sqlx::Error>(page)
            })
            .await
            .cloned();
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if loading.get(&k).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(&k);
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_at_most_once_per_interval() {
        let start = Instant::now();
        let mut last = None;
        assert!(trim_due(&mut last, start), "the first replay to end trims");
        assert!(!trim_due(&mut last, start + TRIM_EVERY / 2), "not again so soon");
        assert!(trim_due(&mut last, start + TRIM_EVERY), "once the interval has passed");
        assert!(!trim_due(&mut last, start + TRIM_EVERY + Duration::from_millis(1)));
    }
}

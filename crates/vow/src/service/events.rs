//! Firehose events: built and stored as complete `subscribeRepos` frames inside the
//! transaction that makes the change, so an event exists exactly when its change does.
//! Sequence numbers come from [`crate::service::firehose::Sequencer`].

use atproto::Cid;
use serde::Serialize;

/// One change of a commit, as `#commit` lists it (sync 1.1: `prev` on updates and deletes).
#[derive(Debug, Clone, Serialize)]
pub struct RepoOp {
    pub action: &'static str,
    pub path: String,
    pub cid: Option<Cid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<Cid>,
}

/// What happened. (One short-lived value per change, so the size spread of the variants costs
/// nothing worth boxing for.)
#[allow(clippy::large_enum_variant)]
pub enum Event<'a> {
    Commit {
        did: &'a str,
        commit: Cid,
        rev: &'a str,
        since: Option<&'a str>,
        /// CAR: the signed commit, the new blocks, and the covering proof blocks.
        blocks: Vec<u8>,
        ops: Vec<RepoOp>,
        blobs: Vec<Cid>,
        prev_data: Option<Cid>,
    },
    /// The repo's current state, for consumers to resynchronise (CAR with the commit block).
    Sync {
        did: &'a str,
        rev: &'a str,
        blocks: Vec<u8>,
    },
    Identity {
        did: &'a str,
        handle: Option<&'a str>,
    },
    Account {
        did: &'a str,
        active: bool,
        status: Option<&'a str>,
    },
}

impl Event<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Event::Commit { .. } => "commit",
            Event::Sync { .. } => "sync",
            Event::Identity { .. } => "identity",
            Event::Account { .. } => "account",
        }
    }

    fn did(&self) -> &str {
        match self {
            Event::Commit { did, .. }
            | Event::Sync { did, .. }
            | Event::Identity { did, .. }
            | Event::Account { did, .. } => did,
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    op: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CommitBody<'a> {
    seq: i64,
    rebase: bool,
    too_big: bool,
    repo: &'a str,
    commit: Cid,
    rev: &'a str,
    since: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
    ops: &'a [RepoOp],
    blobs: &'a [Cid],
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_data: Option<Cid>,
    time: &'a str,
}

#[derive(Serialize)]
struct SyncBody<'a> {
    seq: i64,
    did: &'a str,
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
    rev: &'a str,
    time: &'a str,
}

#[derive(Serialize)]
struct IdentityBody<'a> {
    seq: i64,
    did: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
}

#[derive(Serialize)]
struct AccountBody<'a> {
    seq: i64,
    did: &'a str,
    time: &'a str,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

fn frame(t: &str, body: &impl Serialize) -> Vec<u8> {
    let mut out = atproto::data::encode_as(&Header { op: 1, t: Some(t) }).expect("headers encode");
    out.extend(atproto::data::encode_as(body).expect("event bodies encode"));
    out
}

/// An error frame (`op: -1`), after which the server closes the stream.
pub fn error_frame(error: &str, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        message: &'a str,
    }
    let mut out = atproto::data::encode_as(&Header { op: -1, t: None }).expect("headers encode");
    out.extend(atproto::data::encode_as(&Body { error, message }).expect("errors encode"));
    out
}

/// An `#info` frame.
pub fn info_frame(name: &str, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        name: &'a str,
        message: &'a str,
    }
    frame("#info", &Body { name, message })
}

/// Encodes the frame for `event` with sequence number `seq`.
pub fn encode(seq: i64, event: &Event<'_>, time: &str) -> Vec<u8> {
    match event {
        Event::Commit { did, commit, rev, since, blocks, ops, blobs, prev_data } => frame(
            "#commit",
            &CommitBody {
                seq,
                rebase: false,
                too_big: false,
                repo: did,
                commit: *commit,
                rev,
                since: *since,
                blocks,
                ops,
                blobs,
                prev_data: *prev_data,
                time,
            },
        ),
        Event::Sync { did, rev, blocks } => frame("#sync", &SyncBody { seq, did, blocks, rev, time }),
        Event::Identity { did, handle } => frame("#identity", &IdentityBody { seq, did, time, handle: *handle }),
        Event::Account { did, active, status } => {
            frame("#account", &AccountBody { seq, did, time, active: *active, status: *status })
        }
    }
}

/// Adds the statement storing `event` as number `seq` to a batch; returns its frame.
pub(crate) fn push_insert(q: &mut crate::store::db::refs::Batch, seq: i64, event: &Event<'_>) -> Vec<u8> {
    let row = row(seq, event);
    crate::store::db::events::push_insert(q, seq, &row);
    row.frame
}

/// The firehose row for `event` as number `seq`, its frame encoded now.
pub(crate) fn row(seq: i64, event: &Event<'_>) -> crate::store::db::commits::EventRow {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let time = crate::store::db::format_timestamp(now_ms);
    let frame = encode(seq, event, &time);
    crate::store::db::commits::EventRow { did: event.did().to_owned(), kind: event.kind(), frame, created_at: now_ms }
}

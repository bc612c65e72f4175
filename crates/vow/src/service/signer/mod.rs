//! The signer hub: the bridge between a write waiting for a signature and the user's signer
//! (the account page in a browser, or `vow signer`), connected over a WebSocket.
//!
//! One connection per account; a new one replaces the old. Requests for an account queue in
//! FIFO order and go out one at a time. A caller waits at most [`SIGN_DEADLINE`] from the moment
//! it enqueued, so time spent queued counts.

pub mod client;
pub mod derive;
pub mod protocol;
pub mod verify;
pub mod ws;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atproto::crypto::PublicKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{mpsc, oneshot};

use crate::error::XrpcError;

/// What the signer is asked to sign, for the person approving it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OpSummary {
    #[serde(rename = "type")]
    pub kind: String,
    pub collection: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rkey: Option<String>,
}

/// Why a signature did not arrive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no signer connected")]
    NotConnected,
    #[error("the signer rejected the request")]
    Rejected,
    #[error("the signer did not answer in time")]
    Timeout,
    #[error("the signer answered with an invalid signature: {0}")]
    BadSignature(String),
}

impl SignError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SignError::NotConnected => "not_connected",
            SignError::Rejected => "rejected",
            SignError::Timeout => "timeout",
            SignError::BadSignature(_) => "bad_signature",
        }
    }
}

/// The account page's URL, named in the errors that send a person there (set once at start).
static ACCOUNT_PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records where the account page is (`<public URL>/account`).
pub fn set_account_page(url: String) {
    let _ = ACCOUNT_PAGE.set(url);
}

impl From<SignError> for XrpcError {
    fn from(e: SignError) -> Self {
        let page = ACCOUNT_PAGE.get().map_or("your account page on this PDS", String::as_str);
        match e {
            SignError::NotConnected => XrpcError::named(
                "SignerUnavailable",
                format!(
                    "No signer is connected for this account. Open {page}, unlock the signer with your passkey (or \
                     run `vow signer`) and keep it open, then try again."
                ),
            ),
            SignError::Rejected => XrpcError::named(
                "SigningRejected",
                "The signing request was declined in your signer. Nothing was written.",
            ),
            SignError::Timeout => XrpcError::named(
                "SigningTimeout",
                "Your signer did not answer in time. Check that the account page is open and unlocked, \
                 then try again. Nothing was written.",
            ),
            SignError::BadSignature(why) => XrpcError::named(
                "InvalidSignature",
                format!(
                    "Your signer answered with a signature that does not match this account's key ({why}). \
                     Nothing was written; re-open the signer with the passkey registered for this account."
                ),
            ),
        }
    }
}

/// One request travelling to a connection.
pub struct Job {
    pub request_id: String,
    /// The `sign_request` message, encoded once by the caller: the connection sends it as is.
    pub message: axum::extract::ws::Utf8Bytes,
    pub payload: Vec<u8>,
    pub expires_at: std::time::SystemTime,
    /// The key the answer must verify against.
    pub key: PublicKey,
    pub reply: oneshot::Sender<Result<Vec<u8>, SignError>>,
}

struct Registration {
    id: u64,
    jobs: mpsc::UnboundedSender<Job>,
}

#[derive(Default)]
pub struct SignerHub {
    connections: Mutex<HashMap<String, Registration>>,
    next_id: AtomicU64,
}

/// Held by a connection; ends its registration when dropped (unless a newer one replaced it).
pub struct Registered<'a> {
    hub: &'a SignerHub,
    did: String,
    id: u64,
    pub jobs: mpsc::UnboundedReceiver<Job>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut map = self.hub.connections.lock().expect("hub lock");
        if map.get(&self.did).is_some_and(|r| r.id == self.id) {
            map.remove(&self.did);
        }
    }
}

impl SignerHub {
    /// Registers a connection for `did`, replacing (and so disconnecting) any earlier one.
    pub fn register(&self, did: &str) -> Registered<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Dropping the old sender ends the old connection's job stream; it closes itself.
        self.connections.lock().expect("hub lock").insert(did.to_owned(), Registration { id, jobs: tx });
        Registered { hub: self, did: did.to_owned(), id, jobs: rx }
    }

    /// How many accounts have a signer connected.
    pub fn connected(&self) -> usize {
        self.connections.lock().expect("hub lock").values().filter(|r| !r.jobs.is_closed()).count()
    }

    pub fn is_connected(&self, did: &str) -> bool {
        self.connections.lock().expect("hub lock").get(did).is_some_and(|r| !r.jobs.is_closed())
    }

    /// Asks the account's signer to sign `payload`, waiting at most `deadline` (from now,
    /// queueing included); the signature returned has been verified against `key` over
    /// `payload`.
    pub async fn request_with_deadline(
        &self,
        did: &str,
        key: PublicKey,
        payload: Vec<u8>,
        ops: Vec<OpSummary>,
        evidence: Option<protocol::CommitEvidence>,
        deadline: Duration,
    ) -> Result<Vec<u8>, SignError> {
        let (reply, answer) = oneshot::channel();
        let request_id = uuid::Uuid::new_v4().to_string();
        let expires_at = std::time::SystemTime::now() + deadline;
        let message = protocol::ServerMessage::SignRequest {
            request_id: request_id.clone(),
            did: did.to_owned(),
            payload: URL_SAFE_NO_PAD.encode(&payload),
            ops,
            commit: evidence,
            expires_at: crate::store::db::format_timestamp(
                expires_at.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64,
            ),
        };
        let message = serde_json::to_string(&message).expect("messages serialise").into();
        let job = Job { request_id, message, payload, expires_at, key, reply };
        {
            let map = self.connections.lock().expect("hub lock");
            let registration = map.get(did).ok_or(SignError::NotConnected)?;
            registration.jobs.send(job).map_err(|_| SignError::NotConnected)?;
        }
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            // The connection went away with the job still queued or in flight.
            Ok(Err(_)) => Err(SignError::NotConnected),
            Err(_) => Err(SignError::Timeout),
        };
        match &outcome {
            Ok(_) => metrics::histogram!("vow_signing_seconds").record(started.elapsed().as_secs_f64()),
            Err(e) => metrics::counter!("vow_signing_failures_total", "reason" => e.reason()).increment(1),
        }
        outcome
    }
}

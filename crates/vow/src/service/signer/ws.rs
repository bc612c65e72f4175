//! One signer connection: moves queued jobs to the socket one at a time, checks answers and
//! keeps the connection alive.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::protocol::{ClientMessage, ServerMessage};
use super::{Job, SignError, SignerHub};
use crate::service::webauthn::{self, RelyingParty};

const PING_EVERY: Duration = Duration::from_secs(20);
const PONG_GRACE: Duration = Duration::from_secs(50);

/// Close codes the signer may act on.
pub const CLOSE_REPLACED: u16 = 4000;
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// What the connection knows about the account and how it authenticated.
pub struct ConnectionInfo {
    pub did: String,
    /// The passkey's P-256 public key (SEC1), for checking optional per-request assertions.
    pub passkey: Option<Vec<u8>>,
    pub rp: RelyingParty,
    /// When the credential that opened the socket expires (Bearer connections).
    pub expires_at: Option<SystemTime>,
}

struct InFlight {
    job: Job,
}

/// Serves one signer connection. `on_ready` runs once the connection is registered, when sign
/// requests for the account start reaching it.
pub async fn serve(mut socket: WebSocket, hub: &SignerHub, info: ConnectionInfo, on_ready: impl FnOnce()) {
    let mut registered = hub.register(&info.did);
    tracing::info!(did = %info.did, "signer connected");
    on_ready();
    // A first ping tells the signer it is registered: from now on writes reach it.
    if socket.send(Message::Ping(b"ready".to_vec().into())).await.is_err() {
        return;
    }
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut in_flight: Option<InFlight> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut last_pong = Instant::now();
    let close_reason = loop {
        // Send the next request when nothing is in flight.
        while in_flight.is_none() {
            let Some(job) = queue.pop_front() else { break };
            if job.reply.is_closed() {
                continue; // its caller already gave up
            }
            if job.expires_at <= SystemTime::now() {
                let _ = job.reply.send(Err(SignError::Timeout));
                continue;
            }
            if socket.send(Message::Text(job.message.clone())).await.is_err() {
                let _ = job.reply.send(Err(SignError::NotConnected));
                return;
            }
            in_flight = Some(InFlight { job });
        }
        let in_flight_deadline = in_flight.as_ref().map(|f| f.job.expires_at);
        let token_deadline = info.expires_at;
        tokio::select! {
            job = registered.jobs.recv() => match job {
                Some(job) => queue.push_back(job),
                None => break Some((CLOSE_REPLACED, "replaced by a newer signer connection")),
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => handle_text(&mut socket, &info, &mut in_flight, text.as_str()).await,
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Ping(_) | Message::Binary(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > PONG_GRACE {
                    tracing::info!(did = %info.did, "signer stopped answering pings");
                    break None;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            _ = sleep_until(in_flight_deadline) => {
                // Too late: a late answer is of no use any more.
                if let Some(f) = in_flight.take() {
                    let _ = f.job.reply.send(Err(SignError::Timeout));
                }
            }
            _ = sleep_until(token_deadline) => break Some((CLOSE_TOKEN_EXPIRED, "token expired")),
        }
    };
    if let Some((code, reason)) = close_reason {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    tracing::info!(did = %info.did, "signer disconnected");
    // Dropping the queue and the in-flight job fails their callers with NotConnected.
}

async fn sleep_until(at: Option<SystemTime>) {
    match at {
        Some(at) => tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await,
        None => std::future::pending().await,
    }
}

async fn send_json(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).expect("messages serialise");
    socket.send(Message::Text(text.into())).await
}

async fn handle_text(socket: &mut WebSocket, info: &ConnectionInfo, in_flight: &mut Option<InFlight>, text: &str) {
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(did = %info.did, "ignoring signer message: {e}");
            return;
        }
    };
    let request_id = match &msg {
        ClientMessage::SignResponse { request_id, .. } | ClientMessage::SignReject { request_id, .. } => request_id,
    };
    if in_flight.as_ref().is_none_or(|f| &f.job.request_id != request_id) {
        tracing::debug!(did = %info.did, request_id, "answer to a request that is not in flight");
        return;
    }
    let job = in_flight.take().expect("checked above").job;
    let outcome = match msg {
        ClientMessage::SignReject { reason, .. } => {
            tracing::info!(did = %info.did, reason = reason.as_deref().unwrap_or("none given"), "signer declined");
            Err(SignError::Rejected)
        }
        ClientMessage::SignResponse { commit_signature, authenticator_data, client_data_json, signature, .. } => {
            check_response(info, &job, &commit_signature, authenticator_data, client_data_json, signature)
        }
    };
    if let Err(SignError::BadSignature(why)) = &outcome {
        let _ =
            send_json(socket, &ServerMessage::SignError { request_id: job.request_id.clone(), message: why.clone() })
                .await;
    }
    let _ = job.reply.send(outcome);
}

fn check_response(
    info: &ConnectionInfo,
    job: &Job,
    commit_signature: &str,
    authenticator_data: Option<String>,
    client_data_json: Option<String>,
    assertion_signature: Option<String>,
) -> Result<Vec<u8>, SignError> {
    let bad = |why: &str| SignError::BadSignature(why.to_owned());
    let sig = URL_SAFE_NO_PAD
        .decode(commit_signature.trim_end_matches('='))
        .map_err(|_| bad("commitSignature is not base64url"))?;
    if sig.len() != 64 {
        return Err(bad("commitSignature is not 64 bytes"));
    }
    job.key.verify(&job.payload, &sig).map_err(|_| bad("commitSignature does not verify"))?;
    // A passkey assertion is optional; one that is sent must be valid.
    if let (Some(auth_data), Some(client_data), Some(assertion)) =
        (authenticator_data, client_data_json, assertion_signature)
        && !(auth_data.is_empty() && client_data.is_empty() && assertion.is_empty())
    {
        let passkey = info.passkey.as_deref().ok_or_else(|| bad("no passkey is registered for this account"))?;
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| bad("bad base64url"));
        webauthn::verify_assertion(
            &info.rp,
            passkey,
            &job.payload,
            &decode(&auth_data)?,
            &decode(&client_data)?,
            &decode(&assertion)?,
        )
        .map_err(|e| SignError::BadSignature(format!("passkey assertion: {e}")))?;
    }
    Ok(sig)
}

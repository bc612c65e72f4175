//! `vow signer`: a programmatic signer for bots and tests. It holds the user's secp256k1 key in
//! a file, registers it for an account that has none, keeps the signer WebSocket open and signs
//! every commit for its own DID until stopped.

use std::path::Path;
use std::time::Duration;

use atproto::crypto::Keypair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::ws::{CLOSE_REPLACED, CLOSE_TOKEN_EXPIRED};

pub struct Options<'a> {
    pub pds: &'a str,
    pub identifier: &'a str,
    pub password: &'a str,
    pub key_file: &'a Path,
    pub recovery_key: Option<&'a str>,
}

struct Session {
    did: String,
    access: String,
    refresh: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn xrpc(
        &self,
        method: reqwest::Method,
        nsid: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}/xrpc/{nsid}", self.base));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.map_err(|e| format!("{nsid}: {e}"))?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{nsid} failed ({status}): {} {}", value["error"], value["message"]))
        }
    }

    async fn login(&self, identifier: &str, password: &str) -> Result<Session, String> {
        let s = self
            .xrpc(
                reqwest::Method::POST,
                "com.atproto.server.createSession",
                "",
                Some(json!({ "identifier": identifier, "password": password })),
            )
            .await?;
        session_from(&s)
    }

    async fn refresh(&self, session: &Session) -> Result<Session, String> {
        let s = self.xrpc(reqwest::Method::POST, "com.atproto.server.refreshSession", &session.refresh, None).await?;
        session_from(&s)
    }
}

fn session_from(v: &Value) -> Result<Session, String> {
    let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| format!("session lacks {k}"));
    Ok(Session { did: field("did")?, access: field("accessJwt")?, refresh: field("refreshJwt")? })
}

/// Runs until interrupted, or until another signer replaces this one.
pub async fn run(opts: Options<'_>) -> Result<(), String> {
    let key = crate::keys::load_or_create_k256(opts.key_file, "signing key").map_err(|e| e.to_string())?;
    let our_key = key.public_key().to_did_key();
    let client = Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?,
        base: opts.pds.trim_end_matches('/').to_owned(),
    };
    let mut session = client.login(opts.identifier, opts.password).await?;
    let status = client.xrpc(reqwest::Method::GET, "app.vow.signer.getStatus", &session.access, None).await?;
    match status["signingKey"].as_str() {
        None => {
            let challenge =
                client.xrpc(reqwest::Method::GET, "app.vow.signer.getKeyChallenge", &session.access, None).await?;
            let challenge = challenge["challenge"].as_str().ok_or("no challenge returned")?.to_owned();
            let bytes = URL_SAFE_NO_PAD.decode(&challenge).map_err(|e| format!("challenge: {e}"))?;
            let signature = URL_SAFE_NO_PAD.encode(key.sign(&bytes));
            client
                .xrpc(
                    reqwest::Method::POST,
                    "app.vow.signer.registerKey",
                    &session.access,
                    Some(json!({
                        "publicKey": our_key, "challenge": challenge, "signature": signature,
                        "password": opts.password, "recoveryKey": opts.recovery_key,
                    })),
                )
                .await?;
            eprintln!("registered {our_key} as the signing key of {}", session.did);
        }
        Some(k) if k == our_key => {}
        Some(k) => {
            return Err(format!(
                "{} is signed for by {k}, but {} holds {our_key}",
                session.did,
                opts.key_file.display()
            ));
        }
    }

    let ws_url = format!("{}/xrpc/com.atproto.server.signerConnect", client.base.replacen("http", "ws", 1));
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect_and_sign(&ws_url, &session, &key).await {
            Ok(Ended::TokenExpired) => {
                session = match client.refresh(&session).await {
                    Ok(s) => s,
                    Err(_) => client.login(opts.identifier, opts.password).await?,
                };
                backoff = Duration::from_secs(1);
                continue;
            }
            Ok(Ended::Replaced) => return Err("another signer connected for this account; stopping".into()),
            Ok(Ended::Closed) => eprintln!("signer connection closed; reconnecting"),
            Err(e) => eprintln!("signer connection failed: {e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
        // A long outage may have outlived the access token.
        if let Ok(s) = client.refresh(&session).await {
            session = s;
        }
    }
}

enum Ended {
    TokenExpired,
    Replaced,
    Closed,
}

async fn connect_and_sign(url: &str, session: &Session, key: &Keypair) -> Result<Ended, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", session.access).parse().map_err(|_| "bad token")?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
    // The server pings once it has registered this connection; only then do writes reach us.
    let mut announced = false;
    while let Some(msg) = socket.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        if !announced && !matches!(msg, Message::Close(_)) {
            announced = true;
            println!("signer connected for {}", session.did);
        }
        match msg {
            Message::Text(text) => {
                let Some(reply) = answer(&text, &session.did, key) else { continue };
                socket.send(Message::Text(reply.to_string().into())).await.map_err(|e| e.to_string())?;
            }
            Message::Close(frame) => {
                return Ok(match frame.map(|f| f.code) {
                    Some(CloseCode::Library(CLOSE_TOKEN_EXPIRED)) => Ended::TokenExpired,
                    Some(CloseCode::Library(CLOSE_REPLACED)) => Ended::Replaced,
                    _ => Ended::Closed,
                });
            }
            _ => {} // tungstenite answers pings itself
        }
    }
    Ok(Ended::Closed)
}

/// The reply to one server message, if it needs one. Signs commits for our own DID and PLC
/// operations; refuses anything else.
fn answer(text: &str, did: &str, key: &Keypair) -> Option<Value> {
    let msg: Value = serde_json::from_str(text).ok()?;
    if msg["type"] != "sign_request" {
        if msg["type"] == "sign_error" {
            eprintln!("server refused a signature: {}", msg["message"]);
        }
        return None;
    }
    let request_id = msg["requestId"].as_str()?;
    let reject = || Some(json!({ "type": "sign_reject", "requestId": request_id }));
    let Some(payload) = msg["payload"].as_str().and_then(|p| URL_SAFE_NO_PAD.decode(p).ok()) else {
        return reject();
    };
    let Ok(decoded) = atproto::data::decode(&payload) else { return reject() };
    let as_json = atproto::data::to_json(&decoded);
    let ours = as_json["did"] == did || as_json["type"] == "plc_operation";
    if !ours {
        eprintln!("refusing to sign a payload that is not a commit for {did}");
        return reject();
    }
    let sig = key.sign(&payload);
    let ops: Vec<String> = msg["ops"]
        .as_array()
        .map(|ops| {
            ops.iter()
                .map(|o| {
                    let kind = o["type"].as_str().unwrap_or("?").rsplit('#').next().unwrap_or("?");
                    let collection = o["collection"].as_str().unwrap_or("?");
                    match o["rkey"].as_str() {
                        Some(rkey) => format!("{kind} {collection}/{rkey}"),
                        None => format!("{kind} {collection}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    eprintln!("signed {}", ops.join(", "));
    Some(json!({ "type": "sign_response", "requestId": request_id, "commitSignature": URL_SAFE_NO_PAD.encode(sig) }))
}

//! `vow signer`: a programmatic signer for bots and tests. It holds the user's secp256k1 key in
//! a file, registers it for an account that has none, and keeps the signer WebSocket open until
//! stopped. It trusts nothing the server says about a request: it signs a payload only after
//! [`super::verify`] has recognised and checked it (commits against their evidence, PLC
//! operations against the PLC directory's own record of the DID), and it signs changes of
//! who controls the DID only when told to (`--approve-identity`, and `--approve-key-removal`
//! for an operation that removes its own key).

use std::path::Path;
use std::time::Duration;

use atproto::commit::UnsignedCommit;
use atproto::crypto::{Keypair, PublicKey};
use atproto::syntax::Tid;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::protocol::{CommitEvidence, ServerMessage};
use super::verify::{self, Payload, Refusal};
use super::ws::{CLOSE_REPLACED, CLOSE_TOKEN_EXPIRED};

pub struct Options<'a> {
    pub pds: &'a str,
    pub identifier: &'a str,
    pub password: &'a str,
    pub key_file: &'a Path,
    pub recovery_key: Option<&'a str>,
    /// The PLC directory, asked directly for the DID's state before any PLC operation is signed.
    pub plc: &'a str,
    /// Sign operations that change the DID's signing key or rotation keys, or tombstone it.
    pub approve_identity: bool,
    /// With `approve_identity`: also those that remove this signer's own key.
    pub approve_key_removal: bool,
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
    let key = crate::service::keys::load_or_create_k256(opts.key_file, "signing key").map_err(|e| e.to_string())?;
    let our_key = key.public_key().to_did_key();
    let client = Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?,
        base: opts.pds.trim_end_matches('/').to_owned(),
    };
    let mut session = client.login(opts.identifier, opts.password).await?;
    let status = client.xrpc(reqwest::Method::GET, "app.vow.signer.getStatus", &session.access, None).await?;
    let registered = status["signingKey"].as_str();
    if registered != Some(our_key.as_str()) {
        // Another key is registered: ours replaces it only if the DID's document already names
        // ours (a recovery key installed it after the old one was lost).
        if let Some(k) = registered
            && !plc_names_key(&client.http, opts.plc, &session.did, &our_key).await
        {
            return Err(format!(
                "{} is signed for by {k}, but {} holds {our_key}",
                session.did,
                opts.key_file.display()
            ));
        }
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

    let ws_url = format!("{}/xrpc/com.atproto.server.signerConnect", client.base.replacen("http", "ws", 1));
    let mut policy = Policy {
        did: session.did.clone(),
        own_key: key.public_key(),
        key,
        plc: opts.plc.trim_end_matches('/').to_owned(),
        http: client.http.clone(),
        approve_identity: opts.approve_identity,
        approve_key_removal: opts.approve_key_removal,
        last_rev: None,
        signed: verify::SignedHere::default(),
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect_and_sign(&ws_url, &session, &mut policy).await {
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

async fn connect_and_sign(url: &str, session: &Session, policy: &mut Policy) -> Result<Ended, String> {
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
                let Some(reply) = policy.answer(&text).await else { continue };
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

/// What this signer will sign, and what it remembers between requests.
struct Policy {
    did: String,
    key: Keypair,
    own_key: PublicKey,
    plc: String,
    http: reqwest::Client,
    approve_identity: bool,
    approve_key_removal: bool,
    /// The newest commit revision signed: an older one is never signed again.
    last_rev: Option<Tid>,
    /// The commits signed lately, whose signatures need no check when the next builds on one.
    signed: verify::SignedHere,
}

impl Policy {
    /// The reply to one server message, if it needs one.
    async fn answer(&mut self, text: &str) -> Option<Value> {
        // Read straight into the typed message: the evidence (a CAR, the bulk of a request)
        // is decoded once, not first into a JSON tree and then copied out of it.
        let (request_id, payload, evidence) = match serde_json::from_str::<ServerMessage>(text) {
            Ok(ServerMessage::SignRequest { request_id, payload, commit, .. }) => {
                (request_id, URL_SAFE_NO_PAD.decode(payload).ok(), commit)
            }
            Ok(ServerMessage::SignError { message, .. }) => {
                eprintln!("server refused a signature: {message}");
                return None;
            }
            Err(e) => {
                // A sign request this signer cannot read is declined, not left to time out.
                #[derive(serde::Deserialize)]
                struct Unread {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(rename = "requestId")]
                    request_id: String,
                }
                let unread: Unread = serde_json::from_str(text).ok().filter(|u: &Unread| u.kind == "sign_request")?;
                let why = format!("a request it cannot read ({e})");
                eprintln!("refused to sign {why}");
                return Some(json!({ "type": "sign_reject", "requestId": unread.request_id, "reason": why }));
            }
        };
        let decided = match payload {
            None => Err(Refusal("a payload that is not base64url".into())),
            Some(payload) => self.decide(&payload, evidence.as_ref()).await.map(|what| (payload, what)),
        };
        match decided {
            Ok((payload, (what, commit))) => {
                eprintln!("signed {what}");
                let sig = self.key.sign(&payload);
                let encoded = URL_SAFE_NO_PAD.encode(sig);
                if let Some(commit) = commit {
                    self.signed.remember(commit, sig.to_vec());
                }
                Some(json!({ "type": "sign_response", "requestId": request_id, "commitSignature": encoded }))
            }
            Err(why) => {
                eprintln!("refused to sign {why}");
                Some(json!({ "type": "sign_reject", "requestId": request_id, "reason": why.0 }))
            }
        }
    }

    /// Whether to sign `payload`: what it is, from its bytes, and what signing it does; with
    /// the commit, when it is one.
    async fn decide(
        &mut self,
        payload: &[u8],
        evidence: Option<&CommitEvidence>,
    ) -> Result<(String, Option<UnsignedCommit>), Refusal> {
        let described = |what: String| Ok((what, None));
        match verify::classify(&self.did, payload)? {
            Payload::Commit(commit) => {
                // Earlier keys matter only for a previous commit this key did not sign and that
                // is not a new account's empty tree: only then is the PLC directory asked.
                let vouched_here = evidence.map(verify::previous_commit).transpose()?.is_none_or(|(prev, cid)| {
                    verify::own_key_vouches(&prev, &cid, &self.own_key, &self.signed)
                        || prev.unsigned.data == verify::empty_tree_root()
                });
                let earlier = if vouched_here { Vec::new() } else { self.earlier_keys().await? };
                let ctx = verify::CommitContext {
                    own_key: &self.own_key,
                    earlier_keys: &earlier,
                    last_rev: self.last_rev.as_ref(),
                    signed: &self.signed,
                };
                let (changes, _) = verify::check_commit(&commit, evidence, &ctx)?;
                self.last_rev = Some(commit.rev.clone());
                let what = if changes.is_empty() {
                    format!("commit {} (the same records at a new revision)", commit.rev)
                } else {
                    changes.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ")
                };
                Ok((what, Some(commit)))
            }
            Payload::Plc(op) => {
                let (current, cid, _) = verify::plc_history(&self.plc_audit().await?)?;
                let change = verify::plc_change(&current, &cid, &op, &self.own_key.to_did_key())?;
                let what = change.lines.join("; ");
                let asked = |q: String| ask_on_terminal(format!("{q}\n  {what}\nSign it? [y/N] "));
                if change.removes_own_key
                    && !(self.approve_identity && self.approve_key_removal)
                    && !asked("This PLC operation REMOVES this signer's key: afterwards it can undo nothing.".into())
                        .await
                {
                    return Err(Refusal(format!(
                        "a PLC operation that removes this signer's key ({what}); sign it only with \
                         --approve-identity --approve-key-removal"
                    )));
                }
                if change.identity
                    && !self.approve_identity
                    && !asked("This PLC operation changes who controls the DID or where it lives:".into()).await
                {
                    return Err(Refusal(format!(
                        "a PLC operation that changes who controls the DID ({what}); sign it only with \
                         --approve-identity"
                    )));
                }
                described(format!("PLC operation: {what}"))
            }
            Payload::ServiceAuth(auth) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                verify::check_token(&auth, now.as_secs() as i64)?;
                let method = auth.lxm.clone().unwrap_or_else(|| "any method".into());
                if verify::token_moves_account(&auth)
                    && !self.approve_identity
                    && !ask_on_terminal(format!(
                        "A service token for {method} at {}: it can move the account.\nSign it? [y/N] ",
                        auth.aud
                    ))
                    .await
                {
                    return Err(Refusal(format!(
                        "a service token for {method} at {}, which can move the account; sign it only with \
                         --approve-identity",
                        auth.aud
                    )));
                }
                described(format!("service token for {method} at {}", auth.aud))
            }
        }
    }

    /// The DID's audit log, from the PLC directory itself.
    async fn plc_audit(&self) -> Result<Value, Refusal> {
        let url = format!("{}/{}/log/audit", self.plc, self.did);
        let res = self.http.get(&url).send().await.map_err(|e| Refusal(format!("the PLC directory: {e}")))?;
        if !res.status().is_success() {
            return Err(Refusal(format!("the PLC directory answered {} for {url}", res.status())));
        }
        res.json().await.map_err(|e| Refusal(format!("the PLC directory's answer: {e}")))
    }

    /// Keys the DID has had as its `#atproto` key, by the PLC directory's record.
    async fn earlier_keys(&self) -> Result<Vec<PublicKey>, Refusal> {
        let (_, _, keys) = verify::plc_history(&self.plc_audit().await?)?;
        Ok(keys.iter().filter_map(|k| PublicKey::from_did_key(k).ok()).collect())
    }
}

/// Asks the person at the terminal, when there is one (stdin and stderr are terminals); false
/// otherwise, and for anything but a yes.
async fn ask_on_terminal(question: String) -> bool {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return false;
    }
    tokio::task::spawn_blocking(move || {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
    })
    .await
    .unwrap_or(false)
}

/// Whether the DID's current PLC document names `key` as its `#atproto` key.
async fn plc_names_key(http: &reqwest::Client, plc: &str, did: &str, key: &str) -> bool {
    let url = format!("{}/{did}/log/last", plc.trim_end_matches('/'));
    let Ok(res) = http.get(url).send().await else { return false };
    let Ok(last) = res.json::<Value>().await else { return false };
    last["verificationMethods"]["atproto"] == key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let key = Keypair::generate(atproto::crypto::Algorithm::K256);
        Policy {
            did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
            own_key: key.public_key(),
            key,
            plc: "http://127.0.0.1:9".into(),
            http: reqwest::Client::new(),
            approve_identity: false,
            approve_key_removal: false,
            last_rev: None,
            signed: verify::SignedHere::default(),
        }
    }

    #[tokio::test]
    async fn a_sign_request_it_cannot_read_is_declined_and_other_messages_get_no_answer() {
        let mut p = policy();
        // `ops` of the wrong shape: the request cannot be read, but its id can.
        let garbled = r#"{"type":"sign_request","requestId":"r1","did":"x","payload":"AA","ops":7,"expiresAt":"t"}"#;
        let answer = p.answer(garbled).await.expect("an answer");
        assert_eq!(answer["type"], "sign_reject");
        assert_eq!(answer["requestId"], "r1");
        assert!(answer["reason"].as_str().unwrap().contains("cannot read"), "{answer}");
        for silent in [r#"{"type":"sign_error","requestId":"r1","message":"no"}"#, r#"{"type":"hello"}"#, "not json"] {
            assert_eq!(p.answer(silent).await, None, "{silent}");
        }
        // A readable request whose payload is not base64url is declined for that.
        let bad_payload =
            r#"{"type":"sign_request","requestId":"r2","did":"x","payload":"***","ops":[],"expiresAt":"t"}"#;
        let answer = p.answer(bad_payload).await.expect("an answer");
        assert_eq!((answer["type"].as_str(), answer["requestId"].as_str()), (Some("sign_reject"), Some("r2")));
    }
}

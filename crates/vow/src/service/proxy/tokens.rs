//! Service-auth tokens, signed by the user's key through their signer: the PDS holds no key
//! an AppView accepts (it verifies only against the `#atproto` key of the user's DID
//! document, which in Vow is the user's).
//!
//! Three sources, in order: a short-lived token signed on demand and kept until shortly
//! before it expires; a stored token the signer signed in advance for a read method (so
//! reading goes on while no signer is open); or, with a signer connected, a new on-demand
//! token. Tokens are ES256K JWTs with `{"typ":"JWT","alg":"ES256K"}` and the claims
//! `iss`, `aud`, `lxm`, `iat`, `exp`, `jti`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atproto::crypto::PublicKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::service::signer::{OpSummary, SignError, SignerHub};

/// Lifetime of an on-demand token, as on the reference PDS.
pub const ON_DEMAND_SECS: i64 = 60;
/// A token is not handed out when it expires sooner than this.
const MARGIN_SECS: i64 = 10;

/// The chat service's read methods that get stored tokens (its lexicons are not bundled).
const CHAT_READS: &[&str] = &[
    "chat.bsky.convo.getConvo",
    "chat.bsky.convo.getConvoAvailability",
    "chat.bsky.convo.getConvoForMembers",
    "chat.bsky.convo.getConvoMembers",
    "chat.bsky.convo.getLog",
    "chat.bsky.convo.getMessages",
    "chat.bsky.convo.listConvoRequests",
    "chat.bsky.convo.listConvos",
];

/// AppView read methods that never get a stored token: the PDS answers them itself, or their
/// tokens are for another audience.
const NOT_STORED: &[&str] =
    &["app.bsky.actor.getPreferences", "app.bsky.feed.getFeed", "app.bsky.feed.getFeedSkeleton"];

/// The JWT signing input (`header.claims`) of a service-auth token.
pub fn signing_input(iss: &str, aud: &str, lxm: Option<&str>, iat: i64, exp: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256K"}"#);
    let mut claims = serde_json::json!({ "iss": iss, "aud": aud, "iat": iat, "exp": exp, "jti": uuid::Uuid::new_v4().simple().to_string() });
    if let Some(lxm) = lxm {
        claims["lxm"] = lxm.into();
    }
    format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[derive(Clone)]
pub struct ServiceTokens {
    db: sqlx::SqlitePool,
    signers: Arc<SignerHub>,
    signer_timeout: Duration,
    /// Lifetime of stored tokens; zero: none are stored.
    stored_ttl: Duration,
    /// The read methods that get stored tokens, by audience.
    reads: Arc<Vec<(String, String)>>,
    /// On-demand tokens by (did, aud, lxm): the token, its expiry and the did:key that signed it.
    fresh: moka::sync::Cache<(String, String, String), (String, i64, String)>,
    /// Accounts whose stored tokens are being kept fresh.
    keeping: Arc<Mutex<HashSet<String>>>,
    /// Each account's signing key (did:key), briefly: every proxied call needs it.
    keys: moka::sync::Cache<String, Option<String>>,
}

/// Where a token comes from when none is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Ask the connected signer.
    Sign,
    /// Only a kept token will do.
    KeptOnly,
}

impl ServiceTokens {
    pub fn new(
        db: sqlx::SqlitePool,
        signers: Arc<SignerHub>,
        signer_timeout: Duration,
        stored_ttl: Duration,
        appview_did: &str,
        chat_did: &str,
        budget: crate::service::bounded::Budget,
    ) -> Self {
        let mut reads: Vec<(String, String)> = atproto::lexicon::Catalog::bundled()
            .queries()
            .filter(|nsid| nsid.starts_with("app.bsky.") && !NOT_STORED.contains(nsid))
            .map(|nsid| (appview_did.to_owned(), nsid.to_owned()))
            .collect();
        reads.extend(CHAT_READS.iter().map(|nsid| (chat_did.to_owned(), (*nsid).to_owned())));
        reads.sort();
        let fresh = moka::sync::Cache::builder()
            .max_capacity(budget.of("service_tokens"))
            .weigher(|(a, b, c): &(String, String, String), (token, _, d): &(String, i64, String)| {
                crate::service::bounded::weigh(a.len() + b.len() + c.len() + token.len() + d.len())
            })
            .time_to_live(Duration::from_secs(ON_DEMAND_SECS as u64))
            .support_invalidation_closures()
            .build();
        // A read waiting on a stuck signer should not wait as long as a write may.
        let signer_timeout = signer_timeout.min(Duration::from_secs(10));
        let keys = moka::sync::Cache::builder()
            .max_capacity(budget.of("signer_keys"))
            .weigher(|did: &String, key: &Option<String>| {
                crate::service::bounded::weigh(did.len() + key.as_ref().map_or(0, String::len))
            })
            .time_to_live(Duration::from_secs(30))
            .build();
        let reads = Arc::new(reads);
        Self { db, signers, signer_timeout, stored_ttl, reads, fresh, keeping: Default::default(), keys }
    }

    /// A token for `did` to call `lxm` at `aud`, signed by `key`: kept, or (with
    /// [`Fallback::Sign`]) signed now by the connected signer. `None` when there is neither a
    /// kept token nor a signer.
    pub async fn for_call(
        &self,
        did: &str,
        key: &PublicKey,
        aud: &str,
        lxm: &str,
        fallback: Fallback,
    ) -> Result<Option<String>, SignError> {
        let now = crate::store::db::unix_now();
        let id = (did.to_owned(), aud.to_owned(), lxm.to_owned());
        let key_did = key.to_did_key();
        if let Some((token, exp, signed_by)) = self.fresh.get(&id)
            && exp > now + MARGIN_SECS
            && signed_by == key_did
        {
            return Ok(Some(token));
        }
        let stored = crate::store::db::service_tokens::valid(&self.db, did, aud, lxm, &key_did, now + MARGIN_SECS)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%did, error = %e, "stored service tokens could not be read");
                None
            });
        if let Some((token, exp)) = stored {
            // Kept in memory too, so the next call skips the database.
            self.fresh.insert(id, (token.clone(), exp, key_did));
            return Ok(Some(token));
        }
        if fallback == Fallback::KeptOnly || !self.signers.is_connected(did) {
            return Ok(None);
        }
        let exp = now + ON_DEMAND_SECS;
        match self.sign(did, key, aud, Some(lxm), now, exp).await {
            Ok(token) => {
                self.fresh.insert(id, (token.clone(), exp, key_did));
                Ok(Some(token))
            }
            Err(SignError::NotConnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The account's signing key, if it has one (cached for half a minute; see [`Self::forget_key`]).
    pub async fn account_key(&self, did: &str) -> Result<Option<PublicKey>, sqlx::Error> {
        let key_did = match self.keys.get(did) {
            Some(k) => k,
            None => {
                let account = crate::store::db::accounts::by_did(&self.db, did).await?;
                let k = account.and_then(|a| a.signing_key);
                self.keys.insert(did.to_owned(), k.clone());
                k
            }
        };
        Ok(key_did.and_then(|k| PublicKey::from_did_key(&k).ok()))
    }

    /// Forgets the cached key of `did`, after it changed.
    pub fn forget_key(&self, did: &str) {
        self.keys.invalidate(did);
    }

    /// Has the connected signer sign a token valid from `iat` to `exp`; the hub verifies the
    /// signature against `key` before it returns.
    pub async fn sign(
        &self,
        did: &str,
        key: &PublicKey,
        aud: &str,
        lxm: Option<&str>,
        iat: i64,
        exp: i64,
    ) -> Result<String, SignError> {
        let input = signing_input(did, aud, lxm, iat, exp);
        let summary = OpSummary {
            kind: "com.atproto.server.getServiceAuth".into(),
            collection: lxm.unwrap_or("*").to_owned(),
            rkey: Some(aud.to_owned()),
        };
        let sig = self
            .signers
            .request_with_deadline(
                did,
                key.clone(),
                input.clone().into_bytes(),
                vec![summary],
                None,
                self.signer_timeout,
            )
            .await?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// Signs the stored read tokens of `did` that are missing or past half their life.
    /// Returns how many it signed.
    pub async fn refresh_stored(&self, did: &str, key: &PublicKey) -> Result<usize, SignError> {
        let ttl = self.stored_ttl.as_secs() as i64;
        if ttl == 0 {
            return Ok(0);
        }
        let key_did = key.to_did_key();
        let now = crate::store::db::unix_now();
        let current: std::collections::HashMap<(String, String), i64> =
            match crate::store::db::service_tokens::expiries(&self.db, did, &key_did).await {
                Ok(rows) => rows.into_iter().map(|(aud, lxm, exp)| ((aud, lxm), exp)).collect(),
                Err(e) => {
                    tracing::warn!(%did, error = %e, "stored service tokens could not be read");
                    return Ok(0);
                }
            };
        let mut signed = 0;
        for (aud, lxm) in self.reads.iter() {
            if current.get(&(aud.clone(), lxm.clone())).is_some_and(|exp| exp - now > ttl / 2) {
                continue;
            }
            let exp = now + ttl;
            let token = self.sign(did, key, aud, Some(lxm), now, exp).await?;
            if let Err(e) = crate::store::db::service_tokens::put(&self.db, did, aud, lxm, &key_did, &token, exp).await
            {
                tracing::warn!(%did, error = %e, "a service token could not be stored");
            }
            signed += 1;
        }
        if signed > 0 {
            tracing::info!(%did, signed, ttl_secs = ttl, "signer signed read tokens for the AppView and chat service");
        }
        Ok(signed)
    }

    /// While `did`'s signer stays connected, keeps its stored read tokens fresh (checked every
    /// tenth of their lifetime, at most hourly). One keeper per account.
    pub fn keep_fresh(&self, did: String, key: PublicKey) {
        if self.stored_ttl.is_zero() || !self.keeping.lock().expect("keeping lock").insert(did.clone()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let every = (this.stored_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            while this.signers.is_connected(&did) {
                match this.refresh_stored(&did, &key).await {
                    Ok(_) | Err(SignError::NotConnected) => {}
                    Err(e) => tracing::warn!(%did, error = %e, "the signer did not sign the read tokens"),
                }
                tokio::time::sleep(every).await;
            }
            this.keeping.lock().expect("keeping lock").remove(&did);
        });
    }

    /// Forgets every token of `did`, stored or kept: its key changed, its last session ended,
    /// or it was deactivated or deleted.
    pub async fn discard(&self, did: &str) -> Result<(), sqlx::Error> {
        let gone = crate::store::db::service_tokens::discard(&self.db, did).await?;
        self.forget_key(did);
        let did = did.to_owned();
        let _ = self.fresh.invalidate_entries_if(move |(d, _, _), _| *d == did);
        if gone > 0 {
            tracing::info!(removed = gone, "stored service tokens discarded");
        }
        Ok(())
    }

    /// How many valid stored tokens `did` has for `key`, and when the first of them expires.
    pub async fn stored(&self, did: &str, key: &PublicKey) -> Result<(usize, Option<i64>), sqlx::Error> {
        let now = crate::store::db::unix_now();
        let rows = crate::store::db::service_tokens::expiries(&self.db, did, &key.to_did_key()).await?;
        let valid: Vec<i64> = rows.into_iter().map(|(_, _, exp)| exp).filter(|exp| *exp > now).collect();
        Ok((valid.len(), valid.iter().min().copied()))
    }

    /// How many read methods get stored tokens.
    pub fn stored_methods(&self) -> usize {
        self.reads.len()
    }
}

//! DPoP (RFC 9449) proofs, as the ATProto OAuth profile uses them: an ES256 JWT (`typ`
//! `dpop+jwt`) whose header carries the client's public key, bound to one request (`htm`,
//! `htu`), fresh (`iat`), used once (`jti`), carrying the server's current nonce, and, when it
//! comes with an access token, that token's hash (`ath`). The key's RFC 7638 thumbprint is what
//! tokens are bound to (`cnf.jkt`).
//!
//! Nonces are derived, not stored: HMAC of a secret and the current time window, so any
//! instance with the secret accepts them; the current and the previous window are accepted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use p256::ecdsa::signature::Verifier;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How far a proof's `iat` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 60;
/// How long a nonce window lasts; a nonce is good for one to two windows.
pub const NONCE_WINDOW_SECS: i64 = 180;

/// Why a proof was refused. `UseNonce` is the one a client recovers from by retrying with the
/// nonce in the `DPoP-Nonce` header (the `use_dpop_nonce` error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("the DPoP proof's signature does not verify with its key")]
    Signature,
    #[error("the DPoP proof is for {0}, not this request")]
    WrongRequest(&'static str),
    #[error("the DPoP proof is too old or from the future")]
    Stale,
    #[error("the DPoP proof was already used")]
    Replayed,
    #[error("a fresh server nonce is required")]
    UseNonce,
    #[error("the DPoP proof does not match the access token")]
    WrongToken,
}

/// A checked proof: the thumbprint of its key, and its `jti` (for the replay cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
}

/// The server's nonces.
#[derive(Clone)]
pub struct Nonces {
    secret: Vec<u8>,
}

impl Nonces {
    pub fn new(secret: &[u8]) -> Self {
        Self { secret: secret.to_vec() }
    }

    fn for_window(&self, window: i64) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(b"dpop-nonce");
        mac.update(&window.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
    }

    /// The nonce to hand out now.
    pub fn current(&self, now: i64) -> String {
        self.for_window(now.div_euclid(NONCE_WINDOW_SECS))
    }

    /// Whether `nonce` is the current or the previous window's.
    pub fn is_valid(&self, nonce: &str, now: i64) -> bool {
        let window = now.div_euclid(NONCE_WINDOW_SECS);
        [window, window - 1].iter().any(|w| constant_eq(self.for_window(*w).as_bytes(), nonce.as_bytes()))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A bounded memory of the `jti`s seen lately; a proof whose `jti` is in it is a replay.
pub struct Replays {
    seen: moka::sync::Cache<String, ()>,
    /// The bytes it holds, counted on insertion and on expiry (the cache's own count lags).
    held: Arc<std::sync::atomic::AtomicU64>,
    /// The bytes it may hold (see [`crate::service::bounded`]).
    capacity: u64,
}

impl Replays {
    /// Remembers proofs, up to `capacity` bytes of them, for as long as they could still be
    /// fresh.
    pub fn new(capacity: u64) -> Self {
        Self::with_ttl(capacity, Duration::from_secs((2 * MAX_SKEW_SECS) as u64 + 10))
    }

    /// Remembers values, up to `capacity` bytes of them, for `ttl`.
    pub fn with_ttl(capacity: u64, ttl: Duration) -> Self {
        let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let released = held.clone();
        let seen = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|jti: &String, _: &()| crate::service::bounded::weigh(jti.len()))
            .eviction_listener(move |jti: Arc<String>, _, _| {
                released.fetch_sub(crate::service::bounded::weigh(jti.len()).into(), Ordering::Relaxed);
            })
            .time_to_live(ttl)
            .build();
        Self { seen, held, capacity }
    }

    /// Records `jti`; false when it was already there, or when the memory is full (a flood
    /// must not push out what it remembers: then nothing new is accepted until it drains).
    pub fn first_use(&self, jti: &str) -> bool {
        let weight = u64::from(crate::service::bounded::weigh(jti.len()));
        if self.held.load(Ordering::Relaxed) + weight > self.capacity {
            self.seen.run_pending_tasks(); // expired entries leave now
            if self.held.load(Ordering::Relaxed) + weight > self.capacity {
                tracing::warn!("DPoP replay memory full; refusing new proofs until it drains");
                return false;
            }
        }
        let entry = self.seen.entry(jti.to_owned()).or_insert(());
        if entry.is_fresh() {
            self.held.fetch_add(weight, Ordering::Relaxed);
        }
        entry.is_fresh()
    }
}

/// The URL a proof's `htu` must name for a request: scheme, host, port and path, without
/// query or fragment (RFC 9449 §4.3).
pub fn normalize_htu(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return None;
    }
    let mut base = parsed.clone();
    base.set_query(None);
    base.set_fragment(None);
    Some(base.to_string())
}

/// The RFC 7638 thumbprint of a P-256 public JWK: SHA-256 over its required members in
/// lexicographic order, base64url.
pub fn thumbprint(jwk: &Value) -> Result<String, DpopError> {
    let (Some("EC"), Some("P-256"), Some(x), Some(y)) =
        (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["x"].as_str(), jwk["y"].as_str())
    else {
        return Err(DpopError::Malformed("the key must be an EC P-256 JWK"));
    };
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// What a request is, for checking its proof.
pub struct Request<'a> {
    pub method: &'a str,
    /// The full URL the client called (before normalisation).
    pub url: &'a str,
    /// The access token presented with it, if any.
    pub access_token: Option<&'a str>,
}

/// Checks a DPoP proof for `req` at `now` (unix seconds): everything but replay, which the
/// caller checks with [`Replays::first_use`] once the rest has passed.
pub fn check(proof: &str, req: &Request<'_>, nonces: &Nonces, now: i64) -> Result<Proof, DpopError> {
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(DpopError::Malformed("not a compact JWS"));
    };
    let json = |part: &str| -> Result<Value, DpopError> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| DpopError::Malformed("not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| DpopError::Malformed("not JSON"))
    };
    let (header, claims) = (json(h)?, json(p)?);
    if header["typ"] != "dpop+jwt" {
        return Err(DpopError::Malformed("typ must be dpop+jwt"));
    }
    if header["alg"] != "ES256" {
        return Err(DpopError::Malformed("alg must be ES256"));
    }
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err(DpopError::Malformed("the header carries a private key"));
    }
    let jkt = thumbprint(jwk)?;
    let coord = |k: &str| -> Result<Vec<u8>, DpopError> {
        let b = URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap_or("")).map_err(|_| DpopError::Malformed("bad key"))?;
        if b.len() != 32 {
            return Err(DpopError::Malformed("bad key"));
        }
        Ok(b)
    };
    let mut sec1 = vec![0x04];
    sec1.extend(coord("x")?);
    sec1.extend(coord("y")?);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| DpopError::Malformed("bad key"))?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| DpopError::Malformed("bad signature encoding"))?;
    let sig = p256::ecdsa::Signature::from_slice(&sig).map_err(|_| DpopError::Signature)?;
    key.verify(format!("{h}.{p}").as_bytes(), &sig).map_err(|_| DpopError::Signature)?;

    if claims["htm"].as_str() != Some(req.method) {
        return Err(DpopError::WrongRequest("another method"));
    }
    let htu = claims["htu"].as_str().and_then(normalize_htu);
    if htu.is_none() || htu != normalize_htu(req.url) {
        return Err(DpopError::WrongRequest("another URL"));
    }
    let iat = claims["iat"].as_i64().ok_or(DpopError::Malformed("iat missing"))?;
    if (iat - now).abs() > MAX_SKEW_SECS {
        return Err(DpopError::Stale);
    }
    let jti = claims["jti"].as_str().filter(|j| !j.is_empty() && j.len() <= 256);
    let jti = jti.ok_or(DpopError::Malformed("jti missing"))?.to_owned();
    match claims["nonce"].as_str() {
        Some(n) if nonces.is_valid(n, now) => {}
        _ => return Err(DpopError::UseNonce),
    }
    if let Some(token) = req.access_token {
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        if claims["ath"].as_str() != Some(ath.as_str()) {
            return Err(DpopError::WrongToken);
        }
    }
    Ok(Proof { jkt, jti })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use serde_json::json;

    fn jwk_of(key: &SigningKey) -> Value {
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        json!({ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&bytes[1..33]), "y": URL_SAFE_NO_PAD.encode(&bytes[33..65]) })
    }

    fn proof(key: &SigningKey, header: Value, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig: p256::ecdsa::Signature = key.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[test]
    fn proofs_are_bound_to_key_request_time_nonce_and_token() {
        let key = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let nonces = Nonces::new(b"secret");
        let now = 1_800_000_000;
        let nonce = nonces.current(now);
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk_of(&key) });
        let claims = |over: Value| {
            let mut c = json!({ "jti": "j-1", "htm": "POST", "htu": "https://pds.test/oauth/token", "iat": now, "nonce": nonce });
            for (k, v) in over.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let req = Request { method: "POST", url: "https://pds.test/oauth/token?x=1", access_token: None };
        let good = check(&proof(&key, header.clone(), claims(json!({}))), &req, &nonces, now).unwrap();
        assert_eq!(good.jkt, thumbprint(&jwk_of(&key)).unwrap());

        let refused = |c: Value, req: &Request<'_>| check(&proof(&key, header.clone(), claims(c)), req, &nonces, now);
        assert_eq!(refused(json!({ "htm": "GET" }), &req), Err(DpopError::WrongRequest("another method")));
        assert_eq!(
            refused(json!({ "htu": "https://evil.test/oauth/token" }), &req),
            Err(DpopError::WrongRequest("another URL"))
        );
        assert_eq!(refused(json!({ "iat": now - 600 }), &req), Err(DpopError::Stale));
        assert_eq!(refused(json!({ "nonce": "stale" }), &req), Err(DpopError::UseNonce));
        assert_eq!(refused(json!({ "nonce": Value::Null }), &req), Err(DpopError::UseNonce));
        // `now` starts a window: in the next one its nonce still works, two windows on it does not.
        assert_eq!(now % NONCE_WINDOW_SECS, 0);
        assert!(nonces.is_valid(&nonce, now + NONCE_WINDOW_SECS));
        assert!(!nonces.is_valid(&nonce, now + 2 * NONCE_WINDOW_SECS));
        assert!(!Nonces::new(b"other secret").is_valid(&nonce, now));

        // With an access token, the proof must carry its hash.
        let with_token = Request { method: "GET", url: "https://pds.test/xrpc/x", access_token: Some("tok") };
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(b"tok"));
        assert!(refused(json!({ "htm": "GET", "htu": "https://pds.test/xrpc/x", "ath": ath }), &with_token).is_ok());
        assert_eq!(
            refused(json!({ "htm": "GET", "htu": "https://pds.test/xrpc/x" }), &with_token),
            Err(DpopError::WrongToken)
        );

        // Another key's signature, a private key in the header, another algorithm.
        let other = SigningKey::from_slice(&[8u8; 32]).unwrap();
        let forged = proof(&other, header.clone(), claims(json!({})));
        assert_eq!(check(&forged, &req, &nonces, now), Err(DpopError::Signature));
        let mut leaky = header.clone();
        leaky["jwk"]["d"] = json!("secret");
        assert!(matches!(
            check(&proof(&key, leaky, claims(json!({}))), &req, &nonces, now),
            Err(DpopError::Malformed(_))
        ));
        let mut hs = header.clone();
        hs["alg"] = json!("HS256");
        assert!(matches!(check(&proof(&key, hs, claims(json!({}))), &req, &nonces, now), Err(DpopError::Malformed(_))));
        assert!(matches!(check("a.b", &req, &nonces, now), Err(DpopError::Malformed(_))));
    }

    #[test]
    fn a_jti_is_accepted_once() {
        let replays = Replays::new(64 * 1024);
        assert!(replays.first_use("j-1"));
        assert!(!replays.first_use("j-1"));
        assert!(replays.first_use("j-2"));
    }

    #[test]
    fn the_replay_memory_is_bounded_in_bytes() {
        let replays = Replays::new(64 * 1024);
        let long = "j".repeat(1000);
        let accepted = (0..1000).filter(|i| replays.first_use(&format!("{long}{i}"))).count();
        // About 64 KiB of 1,1xx-byte entries, then nothing new until they expire.
        assert!((40..=80).contains(&accepted), "{accepted} accepted");
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7517's example P-256 key; the thumbprint was computed independently (Python:
        // base64url of sha256 over '{"crv":"P-256","kty":"EC","x":…,"y":…}').
        let jwk = json!({ "kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "ignored" });
        assert_eq!(thumbprint(&jwk).unwrap(), "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
        assert!(thumbprint(&json!({ "kty": "RSA" })).is_err());
        assert_eq!(normalize_htu("https://pds.test/a?b=c#d").as_deref(), Some("https://pds.test/a"));
        assert_eq!(normalize_htu("ftp://pds.test/a"), None);
    }
}

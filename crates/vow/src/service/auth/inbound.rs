//! Service-auth tokens other servers send Vow (a user's current PDS vouching for a migration):
//! an ES256K or ES256 JWT issued by the user's DID, checked against the `#atproto` key of that
//! DID's current document, for Vow (`aud`), for one method (`lxm`), and not expired.

use atproto::crypto::PublicKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Why a service token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is a {0} token, not a service-auth token")]
    WrongType(String),
    #[error("the token was issued by {0}, not by {1}")]
    WrongIssuer(String, String),
    #[error("the token is for {0}, not for this PDS")]
    WrongAudience(String),
    #[error("the token is for {0}, not for {1}")]
    WrongMethod(String, String),
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature does not match the #atproto key of {0}")]
    BadSignature(String),
}

/// A token's claims once its form is checked, before its signature is.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub iss: String,
    pub alg: String,
    signing_input: String,
    signature: Vec<u8>,
}

/// Checks everything but the signature: type, issuer (`did`), audience, method, expiry.
pub fn inspect(token: &str, did: &str, aud: &str, lxm: &str, now: i64) -> Result<Unverified, Refused> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, sig] = parts.as_slice() else { return Err(Refused::Malformed) };
    let json = |s: &str| -> Result<Value, Refused> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| Refused::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| Refused::Malformed)
    };
    let (h, c) = (json(header)?, json(claims)?);
    if let Some(typ) = h["typ"].as_str()
        && matches!(typ, "at+jwt" | "refresh+jwt" | "dpop+jwt")
    {
        return Err(Refused::WrongType(typ.to_owned()));
    }
    let alg = h["alg"].as_str().ok_or(Refused::Malformed)?.to_owned();
    let iss = c["iss"].as_str().ok_or(Refused::Malformed)?;
    // The issuer may name a service of the DID (`did#atproto_pds`); the DID is what counts.
    let issuer = iss.split('#').next().unwrap_or_default();
    if issuer != did {
        return Err(Refused::WrongIssuer(iss.to_owned(), did.to_owned()));
    }
    let token_aud = c["aud"].as_str().ok_or(Refused::Malformed)?;
    if token_aud != aud {
        return Err(Refused::WrongAudience(token_aud.to_owned()));
    }
    match c["lxm"].as_str() {
        Some(m) if m == lxm => {}
        other => return Err(Refused::WrongMethod(other.unwrap_or("any method").to_owned(), lxm.to_owned())),
    }
    let exp = c["exp"].as_i64().ok_or(Refused::Malformed)?;
    if exp <= now {
        return Err(Refused::Expired);
    }
    let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| Refused::Malformed)?;
    Ok(Unverified { iss: issuer.to_owned(), alg, signing_input: format!("{header}.{claims}"), signature })
}

impl Unverified {
    /// Checks the signature against `key` (the `#atproto` key of the issuer's document).
    pub fn verify(&self, key: &PublicKey) -> Result<(), Refused> {
        if self.alg != key.algorithm().jwt_alg() {
            return Err(Refused::BadSignature(self.iss.clone()));
        }
        key.verify(self.signing_input.as_bytes(), &self.signature).map_err(|_| Refused::BadSignature(self.iss.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atproto::crypto::{Algorithm, Keypair};

    fn token(key: &Keypair, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256K"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = key.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn only_a_live_token_from_the_did_for_this_pds_and_method_passes() {
        let key = Keypair::generate(Algorithm::K256);
        let other = Keypair::generate(Algorithm::K256);
        let lxm = "com.atproto.server.createAccount";
        let good = serde_json::json!({ "iss": "did:plc:a", "aud": "did:web:vow", "lxm": lxm, "exp": 2000 });
        let t = token(&key, good.clone());
        inspect(&t, "did:plc:a", "did:web:vow", lxm, 1000).unwrap().verify(&key.public_key()).unwrap();
        let bad_sig = inspect(&t, "did:plc:a", "did:web:vow", lxm, 1000).unwrap().verify(&other.public_key());
        assert!(matches!(bad_sig, Err(Refused::BadSignature(_))));
        let with = |field: &str, v: Value| {
            let mut c = good.clone();
            c[field] = v;
            inspect(&token(&key, c), "did:plc:a", "did:web:vow", lxm, 1000).map(|_| ())
        };
        assert_eq!(with("exp", 999.into()), Err(Refused::Expired));
        assert!(matches!(with("aud", "did:web:other".into()), Err(Refused::WrongAudience(_))));
        assert!(matches!(with("lxm", "com.atproto.repo.createRecord".into()), Err(Refused::WrongMethod(..))));
        assert!(matches!(with("lxm", Value::Null), Err(Refused::WrongMethod(..))));
        assert!(matches!(with("iss", "did:plc:b".into()), Err(Refused::WrongIssuer(..))));
        assert!(with("iss", "did:plc:a#atproto_pds".into()).is_ok());
        assert_eq!(inspect("a.b", "did:plc:a", "did:web:vow", lxm, 1000).map(|_| ()), Err(Refused::Malformed));
    }
}

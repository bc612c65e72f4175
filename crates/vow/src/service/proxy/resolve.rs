//! Finding a service from its DID: the DID document (did:plc from the PLC directory, did:web
//! from its host), then the service entry, named `#id` or `did#id`. Documents are cached for
//! a while; failures are not.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::service::identity::plc::PlcClient;

/// Largest DID document read.
const MAX_DOC_BYTES: usize = 64 * 1024;
/// How long a resolved document is used.
const DOC_TTL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0} is not a DID this PDS can resolve")]
    Unsupported(String),
    #[error("{0} could not be resolved: {1}")]
    Unreachable(String, String),
    #[error("{0} has no DID document")]
    NotFound(String),
    #[error("the DID document of {0} has no service #{1}")]
    NoService(String, String),
    #[error(transparent)]
    Refused(#[from] crate::service::net::Refused),
}

#[derive(Clone)]
pub struct Resolver {
    plc: PlcClient,
    http: reqwest::Client,
    allow_private: bool,
    docs: moka::sync::Cache<String, Arc<Value>>,
}

impl Resolver {
    /// `http` is the guarded client of [`crate::service::net::client`].
    /// `cache_bytes` bounds the DID documents kept.
    pub fn new(plc: PlcClient, http: reqwest::Client, allow_private: bool, cache_bytes: u64) -> Self {
        let docs = moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|did: &String, doc: &Arc<Value>| crate::service::bounded::weigh(did.len() + doc.to_string().len()))
            .time_to_live(DOC_TTL)
            .build();
        Self { plc, http, allow_private, docs }
    }

    /// The current DID document of `did`.
    pub async fn document(&self, did: &str) -> Result<Arc<Value>, ResolveError> {
        if let Some(doc) = self.docs.get(did) {
            return Ok(doc);
        }
        let doc = if did.starts_with("did:plc:") {
            self.plc
                .resolve(did)
                .await
                .map_err(|e| ResolveError::Unreachable(did.into(), e.to_string()))?
                .ok_or_else(|| ResolveError::NotFound(did.into()))?
        } else if let Some(host) = did.strip_prefix("did:web:") {
            self.did_web(did, host).await?
        } else {
            return Err(ResolveError::Unsupported(did.into()));
        };
        if doc["id"].as_str() != Some(did) {
            return Err(ResolveError::Unreachable(did.into(), "the document is for another DID".into()));
        }
        let doc = Arc::new(doc);
        self.docs.insert(did.to_owned(), doc.clone());
        Ok(doc)
    }

    async fn did_web(&self, did: &str, host: &str) -> Result<Value, ResolveError> {
        // ATProto uses host-level did:web only; a port is percent-encoded.
        let host = host.replace("%3A", ":").replace("%3a", ":");
        if host.contains('/')
            || (host.contains(':') && host.split_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()))
        {
            return Err(ResolveError::Unsupported(did.into()));
        }
        let bare = host.split(':').next().unwrap_or_default();
        // As @atproto/identity does: a localhost service (development) is served over HTTP.
        let scheme = if self.allow_private && (bare == "localhost" || bare == "127.0.0.1") { "http" } else { "https" };
        let url = reqwest::Url::parse(&format!("{scheme}://{host}/.well-known/did.json"))
            .map_err(|_| ResolveError::Unsupported(did.into()))?;
        crate::service::net::check_url(&url, self.allow_private)?;
        let unreachable = |e: String| ResolveError::Unreachable(did.into(), e);
        let response = self.http.get(url).send().await.map_err(|e| unreachable(e.to_string()))?;
        match response.status().as_u16() {
            200 => {}
            404 | 410 => return Err(ResolveError::NotFound(did.into())),
            status => return Err(unreachable(format!("status {status}"))),
        }
        let body = read_bounded(response, MAX_DOC_BYTES).await.map_err(unreachable)?;
        serde_json::from_slice(&body).map_err(|e| unreachable(format!("not a JSON document: {e}")))
    }

    /// The endpoint of the service `#id` of `did`.
    pub async fn service_endpoint(&self, did: &str, id: &str) -> Result<reqwest::Url, ResolveError> {
        let doc = self.document(did).await?;
        let endpoint = service_entry(&doc, did, id).ok_or_else(|| ResolveError::NoService(did.into(), id.into()))?;
        let url = reqwest::Url::parse(endpoint).map_err(|_| ResolveError::NoService(did.into(), id.into()))?;
        crate::service::net::check_url(&url, self.allow_private)?;
        Ok(url)
    }

    /// The DID document as it is now, not as the cache remembers it (for checks that decide
    /// who controls an account).
    pub async fn fresh_document(&self, did: &str) -> Result<Arc<Value>, ResolveError> {
        self.forget(did);
        self.document(did).await
    }

    /// The `#atproto` key of `did`'s current document (fetched afresh), if it has a usable one.
    pub async fn current_atproto_key(&self, did: &str) -> Result<Option<atproto::crypto::PublicKey>, ResolveError> {
        let doc = self.fresh_document(did).await?;
        Ok(signing_key(&doc, did).and_then(|k| atproto::crypto::PublicKey::from_did_key(&k).ok()))
    }

    /// Forgets a cached document (after an identity change).
    pub fn forget(&self, did: &str) {
        self.docs.invalidate(did);
    }
}

/// The `serviceEndpoint` of the service `#id` (or `did#id`) in a DID document.
pub fn service_entry<'a>(doc: &'a Value, did: &str, id: &str) -> Option<&'a str> {
    let full = format!("{did}#{id}");
    doc["service"].as_array()?.iter().find_map(|s| {
        let sid = s["id"].as_str()?;
        (sid == format!("#{id}") || sid == full).then(|| s["serviceEndpoint"].as_str()).flatten()
    })
}

/// The `#atproto` verification method of a DID document, as a did:key (a `Multikey`, or the
/// older `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019` forms).
pub fn signing_key(doc: &Value, did: &str) -> Option<String> {
    let full = format!("{did}#atproto");
    doc["verificationMethod"].as_array()?.iter().find_map(|m| {
        let id = m["id"].as_str()?;
        if id != "#atproto" && id != full {
            return None;
        }
        let kind = m["type"].as_str().unwrap_or("Multikey");
        let key = atproto::crypto::PublicKey::from_verification_method(kind, m["publicKeyMultibase"].as_str()?).ok()?;
        Some(key.to_did_key())
    })
}

/// A response body, refused beyond `limit` bytes.
pub async fn read_bounded(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > limit {
            return Err(format!("larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn service_entries_match_both_id_forms() {
        let doc = json!({ "id": "did:web:x", "service": [
            { "id": "#bsky_appview", "type": "BskyAppView", "serviceEndpoint": "https://a.example" },
            { "id": "did:web:x#bsky_chat", "type": "BskyChatService", "serviceEndpoint": "https://c.example" },
        ]});
        assert_eq!(super::service_entry(&doc, "did:web:x", "bsky_appview"), Some("https://a.example"));
        assert_eq!(super::service_entry(&doc, "did:web:x", "bsky_chat"), Some("https://c.example"));
        assert_eq!(super::service_entry(&doc, "did:web:y", "bsky_chat"), None);
        assert_eq!(super::service_entry(&doc, "did:web:x", "atproto_pds"), None);
    }

    #[test]
    fn the_atproto_key_is_read_in_both_document_forms() {
        let key = atproto::crypto::Keypair::generate(atproto::crypto::Algorithm::K256).public_key();
        let multikey = key.to_multikey();
        // The older form: the bare compressed point, base58btc.
        let legacy = format!("z{}", bs58_of(&key.to_sec1_compressed()));
        for (kind, value) in [("Multikey", multikey), ("EcdsaSecp256k1VerificationKey2019", legacy)] {
            let doc = json!({ "verificationMethod": [
                { "id": "did:plc:a#other", "type": "Multikey", "publicKeyMultibase": "zNope" },
                { "id": "did:plc:a#atproto", "type": kind, "publicKeyMultibase": value },
            ]});
            assert_eq!(super::signing_key(&doc, "did:plc:a"), Some(key.to_did_key()), "{kind}");
        }
        assert_eq!(super::signing_key(&json!({}), "did:plc:a"), None);
    }

    fn bs58_of(bytes: &[u8]) -> String {
        multibase::encode(multibase::Base::Base58Btc, bytes)[1..].to_owned()
    }
}

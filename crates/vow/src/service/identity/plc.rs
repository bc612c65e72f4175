//! did:plc operations and the PLC directory client. Every response is checked: an operation
//! the directory refused is an error, never reported as success.

use std::collections::BTreeMap;

use atproto::crypto::Keypair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A service entry of a DID document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint: String,
}

/// A `plc_operation`, signed or not (`sig` is left out of the bytes that are signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: String,
    pub rotation_keys: Vec<String>,
    pub verification_methods: BTreeMap<String, String>,
    pub also_known_as: Vec<String>,
    pub services: BTreeMap<String, Service>,
    pub prev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// Why a PLC request failed.
#[derive(Debug, thiserror::Error)]
pub enum PlcError {
    #[error("PLC directory unreachable: {0}")]
    Unreachable(String),
    #[error("PLC directory refused the operation ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl Operation {
    /// The genesis operation of a new account hosted at `endpoint`.
    pub fn genesis(rotation_keys: Vec<String>, signing_key: String, handle: &str, endpoint: &str) -> Self {
        Self {
            kind: "plc_operation".into(),
            rotation_keys,
            verification_methods: BTreeMap::from([("atproto".to_owned(), signing_key)]),
            also_known_as: vec![format!("at://{handle}")],
            services: BTreeMap::from([(
                "atproto_pds".to_owned(),
                Service { kind: "AtprotoPersonalDataServer".into(), endpoint: endpoint.to_owned() },
            )]),
            prev: None,
            sig: None,
        }
    }

    /// The DAG-CBOR bytes that are signed: the operation without `sig`.
    pub fn unsigned_bytes(&self) -> Vec<u8> {
        let unsigned = Self { sig: None, ..self.clone() };
        atproto::data::encode_as(&unsigned).expect("operations encode")
    }

    /// Signs with a key held here (the PDS rotation key, before handover).
    pub fn sign(mut self, key: &Keypair) -> Self {
        self.sig = Some(URL_SAFE_NO_PAD.encode(key.sign(&self.unsigned_bytes())));
        self
    }

    /// An unsigned copy of this (signed) operation that follows it: same content, `prev`
    /// pointing here. Callers change what they mean to change, then sign it.
    pub fn successor(&self) -> Self {
        Self { sig: None, prev: Some(self.cid().to_string()), ..self.clone() }
    }

    /// The CID of a signed operation, which the next operation names as `prev`.
    pub fn cid(&self) -> atproto::Cid {
        atproto::cid::cbor_cid(&atproto::data::encode_as(self).expect("operations encode"))
    }

    /// The DID a signed genesis operation creates: `did:plc:` + the first 24 characters of the
    /// base32 SHA-256 of the signed operation.
    pub fn did(&self) -> String {
        let bytes = atproto::data::encode_as(self).expect("operations encode");
        let digest = Sha256::digest(&bytes);
        let b32 = base32_lower(&digest);
        format!("did:plc:{}", &b32[..24])
    }
}

/// A `plc_tombstone`: the DID's end, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    #[serde(rename = "type")]
    pub kind: String,
    pub prev: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Tombstone {
    /// The tombstone that follows the operation with CID `prev`.
    pub fn after(prev: &str) -> Self {
        Self { kind: "plc_tombstone".into(), prev: prev.to_owned(), sig: None }
    }

    pub fn unsigned_bytes(&self) -> Vec<u8> {
        atproto::data::encode_as(&Self { sig: None, ..self.clone() }).expect("tombstones encode")
    }
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Client of a PLC directory.
#[derive(Debug, Clone)]
pub struct PlcClient {
    base: String,
    http: reqwest::Client,
}

impl PlcClient {
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), http }
    }

    /// Submits a signed operation (or tombstone) for `did`.
    pub async fn submit(&self, did: &str, op: &impl Serialize) -> Result<(), PlcError> {
        let response = self
            .http
            .post(format!("{}/{did}", self.base))
            .json(op)
            .send()
            .await
            .map_err(|e| PlcError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        Err(PlcError::Rejected { status: status.as_u16(), message })
    }

    /// The newest operation in the DID's log.
    pub async fn last_operation(&self, did: &str) -> Result<Operation, PlcError> {
        let response = self
            .http
            .get(format!("{}/{did}/log/last", self.base))
            .send()
            .await
            .map_err(|e| PlcError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(PlcError::Rejected { status, message: response.text().await.unwrap_or_default() });
        }
        response.json().await.map_err(|e| PlcError::Unreachable(format!("unexpected last operation: {e}")))
    }

    /// The current DID document.
    pub async fn resolve(&self, did: &str) -> Result<Option<serde_json::Value>, PlcError> {
        let response = self
            .http
            .get(format!("{}/{did}", self.base))
            .send()
            .await
            .map_err(|e| PlcError::Unreachable(e.to_string()))?;
        match response.status().as_u16() {
            404 | 410 => Ok(None),
            200 => response.json().await.map(Some).map_err(|e| PlcError::Unreachable(e.to_string())),
            status => Err(PlcError::Rejected { status, message: response.text().await.unwrap_or_default() }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(super::base32_lower(b"foobar"), "mzxw6ytboi");
        assert_eq!(super::base32_lower(b""), "");
    }
}

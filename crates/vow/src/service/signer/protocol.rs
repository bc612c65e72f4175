//! The signer WebSocket messages (JSON text frames), compatible with the original Vow's.
//! Unknown fields are ignored so either side can add some.

use serde::{Deserialize, Serialize};

use super::OpSummary;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    SignRequest {
        #[serde(rename = "requestId")]
        request_id: String,
        did: String,
        /// base64url (no padding) of the exact bytes to sign: an unsigned commit or PLC
        /// operation in DAG-CBOR.
        payload: String,
        ops: Vec<OpSummary>,
        #[serde(rename = "expiresAt")]
        expires_at: String,
        /// For a commit: what it changes, so the signer can check it (see
        /// [`super::verify::check_commit`]). Absent for other payloads.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        commit: Option<CommitEvidence>,
    },
    /// Sent when a response was refused, so the signer can show why (an extension: the
    /// original logged and stayed silent).
    SignError {
        #[serde(rename = "requestId")]
        request_id: String,
        message: String,
    },
}

/// What a commit changes, as a relay sees it in the commit's `#commit` event (sync 1.1): enough
/// for a signer to check that the commit changes exactly these records of a tree it trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEvidence {
    /// base64url of the previous signed commit's block (DAG-CBOR).
    #[serde(rename = "prevCommit")]
    pub prev_commit: String,
    /// base64url of a CAR holding the new records and tree nodes and the covering proof, in
    /// the new tree, of every changed key.
    pub blocks: String,
    pub ops: Vec<EvidenceOp>,
}

/// One changed key: its value after (`cid`) and before (`prev`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceOp {
    pub action: String,
    pub path: String,
    pub cid: Option<String>,
    pub prev: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    SignResponse {
        #[serde(rename = "requestId")]
        request_id: String,
        /// base64url of the 64-byte compact secp256k1 signature over SHA-256(payload).
        #[serde(rename = "commitSignature")]
        commit_signature: String,
        /// An optional passkey assertion over the payload; verified when present.
        #[serde(rename = "authenticatorData", default)]
        authenticator_data: Option<String>,
        #[serde(rename = "clientDataJSON", default)]
        client_data_json: Option<String>,
        #[serde(default)]
        signature: Option<String>,
    },
    SignReject {
        #[serde(rename = "requestId")]
        request_id: String,
        /// Why, when the signer says (logged, never trusted).
        #[serde(default)]
        reason: Option<String>,
    },
}

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
    },
    /// Sent when a response was refused, so the signer can show why (an extension: the
    /// original logged and stayed silent).
    SignError {
        #[serde(rename = "requestId")]
        request_id: String,
        message: String,
    },
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
    },
}

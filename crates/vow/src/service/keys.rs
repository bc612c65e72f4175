//! The server's own keys: the secp256k1 rotation key (raw 32 bytes, as the original stores it)
//! and the P-256 JWK that signs session tokens. Missing files are created on first run.

use std::path::Path;

use atproto::crypto::{Algorithm, Keypair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a valid key: {reason}")]
    Invalid { path: String, reason: String },
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Writes a new secp256k1 rotation key.
pub fn create_rotation_key(path: &Path) -> Result<Keypair, KeyFileError> {
    let key = Keypair::generate(Algorithm::K256);
    write_private(path, &key.to_bytes())?;
    Ok(key)
}

/// Loads the rotation key, creating it if the file does not exist.
pub fn load_or_create_rotation_key(path: &Path) -> Result<Keypair, KeyFileError> {
    load_or_create_k256(path, "rotation key")
}

/// Loads a raw secp256k1 key file (`what` names it in the log), creating it if missing.
pub fn load_or_create_k256(path: &Path, what: &str) -> Result<Keypair, KeyFileError> {
    if !path.exists() {
        tracing::info!(path = %path.display(), "creating {what}");
        return create_rotation_key(path);
    }
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io { path: path.display().to_string(), source })?;
    Keypair::from_bytes(Algorithm::K256, &bytes)
        .map_err(|e| KeyFileError::Invalid { path: path.display().to_string(), reason: e.to_string() })
}

/// Writes a new P-256 private JWK.
pub fn create_private_jwk(path: &Path) -> Result<Keypair, KeyFileError> {
    let key = Keypair::generate(Algorithm::P256);
    let point = key.public_key().to_sec1_uncompressed();
    let kid = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        "d": URL_SAFE_NO_PAD.encode(key.to_bytes()),
        "kid": kid.to_string(),
    });
    write_private(path, jwk.to_string().as_bytes())?;
    Ok(key)
}

/// Loads the JWK, creating it if the file does not exist.
pub fn load_or_create_jwk(path: &Path) -> Result<Keypair, KeyFileError> {
    if !path.exists() {
        tracing::info!(path = %path.display(), "creating session JWK");
        return create_private_jwk(path);
    }
    let invalid = |reason: String| KeyFileError::Invalid { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path)
        .map_err(|source| KeyFileError::Io { path: path.display().to_string(), source })?;
    let jwk: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err(invalid("expected an EC P-256 JWK".into()));
    }
    let d = jwk["d"].as_str().ok_or_else(|| invalid("no private part 'd'".into()))?;
    let d = URL_SAFE_NO_PAD.decode(d).map_err(|e| invalid(e.to_string()))?;
    Keypair::from_bytes(Algorithm::P256, &d).map_err(|e| invalid(e.to_string()))
}

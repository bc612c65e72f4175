//! Keys and signatures as atproto uses them: did:key and multikey encodings for K-256
//! (secp256k1) and P-256, RFC 6979 deterministic ECDSA over SHA-256, 64-byte compact `r||s`
//! signatures that must be low-S.

use signature_compat::{Signer, Verifier};

/// Re-exported trait names, kept private to this module.
mod signature_compat {
    pub use k256::ecdsa::signature::{Signer, Verifier};
}

/// Multicodec varint prefix of a compressed secp256k1 public key.
const K256_PREFIX: [u8; 2] = [0xe7, 0x01];
/// Multicodec varint prefix of a compressed P-256 public key.
const P256_PREFIX: [u8; 2] = [0x80, 0x24];

/// Why a key or signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid key encoding: {0}")]
    InvalidKey(String),
    #[error("signature is not 64 bytes (compact r||s); DER and other encodings are refused")]
    SignatureLength,
    #[error("signature has a high S value; atproto requires low-S")]
    HighS,
    #[error("signature does not verify")]
    BadSignature,
}

/// The two curves atproto supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// secp256k1, JWT name `ES256K`.
    K256,
    /// NIST P-256, JWT name `ES256`.
    P256,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub fn jwt_alg(self) -> &'static str {
        match self {
            Self::K256 => "ES256K",
            Self::P256 => "ES256",
        }
    }
}

/// A public key that can verify atproto signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    K256(k256::ecdsa::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Parses `did:key:z...`.
    pub fn from_did_key(did: &str) -> Result<Self, CryptoError> {
        let multikey =
            did.strip_prefix("did:key:").ok_or_else(|| CryptoError::InvalidKey("must start with 'did:key:'".into()))?;
        Self::from_multikey(multikey)
    }

    /// Parses a multibase multikey (`z` + base58btc of the multicodec prefix and the key).
    pub fn from_multikey(multikey: &str) -> Result<Self, CryptoError> {
        if !multikey.starts_with('z') {
            return Err(CryptoError::InvalidKey("multikey must be base58btc ('z')".into()));
        }
        let (_, bytes) = multibase::decode(multikey).map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
        let bad = |e: k256::ecdsa::Error| CryptoError::InvalidKey(e.to_string());
        if let Some(point) = bytes.strip_prefix(&K256_PREFIX[..]) {
            k256::ecdsa::VerifyingKey::from_sec1_bytes(point).map(Self::K256).map_err(bad)
        } else if let Some(point) = bytes.strip_prefix(&P256_PREFIX[..]) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map(Self::P256).map_err(bad)
        } else {
            Err(CryptoError::InvalidKey("unsupported key type (want secp256k1 or P-256)".into()))
        }
    }

    /// Parses a compressed or uncompressed SEC1 point for the given curve.
    pub fn from_sec1(alg: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = |e: k256::ecdsa::Error| CryptoError::InvalidKey(e.to_string());
        match alg {
            Algorithm::K256 => k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map(Self::K256).map_err(bad),
            Algorithm::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map(Self::P256).map_err(bad),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::K256(_) => Algorithm::K256,
            Self::P256(_) => Algorithm::P256,
        }
    }

    /// The compressed SEC1 point (33 bytes).
    pub fn to_sec1_compressed(&self) -> Vec<u8> {
        match self {
            Self::K256(k) => k.to_sec1_point(true).as_bytes().to_vec(),
            Self::P256(k) => k.to_sec1_point(true).as_bytes().to_vec(),
        }
    }

    /// The uncompressed SEC1 point (65 bytes), as JWKs need it.
    pub fn to_sec1_uncompressed(&self) -> Vec<u8> {
        match self {
            Self::K256(k) => k.to_sec1_point(false).as_bytes().to_vec(),
            Self::P256(k) => k.to_sec1_point(false).as_bytes().to_vec(),
        }
    }

    /// A DID document verification method: `Multikey`, or the legacy
    /// `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019` forms whose
    /// `publicKeyMultibase` is the bare SEC1 point (older PLC directories still serve these).
    pub fn from_verification_method(kind: &str, multibase: &str) -> Result<Self, CryptoError> {
        let legacy = match kind {
            "Multikey" => return Self::from_multikey(multibase),
            "EcdsaSecp256k1VerificationKey2019" => Algorithm::K256,
            "EcdsaSecp256r1VerificationKey2019" => Algorithm::P256,
            other => return Err(CryptoError::InvalidKey(format!("unsupported verification method type {other:?}"))),
        };
        let (base, bytes) = multibase::decode(multibase).map_err(|e| CryptoError::InvalidKey(e.to_string()))?;
        if base != multibase::Base::Base58Btc {
            return Err(CryptoError::InvalidKey("legacy key must be base58btc ('z')".into()));
        }
        Self::from_sec1(legacy, &bytes)
    }

    /// The multibase multikey, as used in DID documents' `publicKeyMultibase`.
    pub fn to_multikey(&self) -> String {
        let prefix = match self {
            Self::K256(_) => K256_PREFIX,
            Self::P256(_) => P256_PREFIX,
        };
        let mut bytes = prefix.to_vec();
        bytes.extend(self.to_sec1_compressed());
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    /// `did:key:` + multikey.
    pub fn to_did_key(&self) -> String {
        format!("did:key:{}", self.to_multikey())
    }

    /// Verifies a compact 64-byte low-S signature over SHA-256 of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        if sig.len() != 64 {
            return Err(CryptoError::SignatureLength);
        }
        match self {
            Self::K256(key) => {
                let sig = k256::ecdsa::Signature::from_slice(sig).map_err(|_| CryptoError::BadSignature)?;
                if sig.normalize_s() != sig {
                    return Err(CryptoError::HighS);
                }
                key.verify(message, &sig).map_err(|_| CryptoError::BadSignature)
            }
            Self::P256(key) => {
                let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|_| CryptoError::BadSignature)?;
                // p256's verifier accepts high-S, so the check is ours.
                if sig.normalize_s() != sig {
                    return Err(CryptoError::HighS);
                }
                key.verify(message, &sig).map_err(|_| CryptoError::BadSignature)
            }
        }
    }
}

/// A private key. Vow only holds these for its own service identity and in tests and the
/// programmatic signer; users' keys live in their browsers.
#[derive(Clone)]
pub enum Keypair {
    K256(k256::ecdsa::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.public_key().to_did_key())
    }
}

impl Keypair {
    /// A fresh random key.
    pub fn generate(alg: Algorithm) -> Self {
        // Rejection sampling: a random 32-byte string is a valid scalar except with
        // negligible probability. `rand::rng()` is a CSPRNG seeded from the OS.
        loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(key) = Self::from_bytes(alg, &bytes) {
                return key;
            }
        }
    }

    /// Loads a 32-byte private scalar.
    pub fn from_bytes(alg: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = |e: k256::ecdsa::Error| CryptoError::InvalidKey(e.to_string());
        match alg {
            Algorithm::K256 => k256::ecdsa::SigningKey::from_slice(bytes).map(Self::K256).map_err(bad),
            Algorithm::P256 => p256::ecdsa::SigningKey::from_slice(bytes).map(Self::P256).map_err(bad),
        }
    }

    /// The 32-byte private scalar.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::K256(k) => k.to_bytes().to_vec(),
            Self::P256(k) => k.to_bytes().to_vec(),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::K256(_) => Algorithm::K256,
            Self::P256(_) => Algorithm::P256,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::K256(k) => PublicKey::K256(*k.verifying_key()),
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
        }
    }

    /// Signs SHA-256 of `message` (RFC 6979), returning a 64-byte low-S signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let bytes = match self {
            Self::K256(k) => {
                let sig: k256::ecdsa::Signature = k.sign(message);
                sig.normalize_s().to_bytes()
            }
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.normalize_s().to_bytes()
            }
        };
        let mut out = [0u8; 64];
        out.copy_from_slice(&bytes);
        out
    }
}

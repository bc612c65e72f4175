//! The user's signing key from a passkey's PRF output, derived exactly as the original Vow does
//! in the browser, so a person's key is the same in either implementation:
//! PRF salt = SHA-256("Vow PDS Commit Signing Key Derivation"); seed = HKDF-SHA256(IKM = PRF
//! output, salt = "Vow PDS Signing Key", info = "K256", 32 bytes); the seed is the secp256k1
//! private key. The account page does this in JavaScript; this copy pins the vectors in Rust.

use atproto::crypto::{Algorithm, CryptoError, Keypair};
use sha2::{Digest, Sha256};

/// The PRF input (`eval.first`) every Vow passkey is asked for.
pub fn prf_salt() -> [u8; 32] {
    Sha256::digest(b"Vow PDS Commit Signing Key Derivation").into()
}

/// The signing key for a PRF output. Fails only for the (astronomically unlikely) seeds that
/// are not valid secp256k1 scalars.
pub fn signing_key(prf_output: &[u8]) -> Result<Keypair, CryptoError> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(b"Vow PDS Signing Key"), prf_output);
    let mut seed = [0u8; 32];
    hk.expand(b"K256", &mut seed).expect("32 bytes is a valid HKDF length");
    Keypair::from_bytes(Algorithm::K256, &seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The vectors of vow-behaviour.md, Appendix D.
    #[test]
    fn derivation_matches_the_published_vectors() {
        assert_eq!(prf_salt().to_vec(), hex("73154e3f878b457e0cf48a033c3d290c91c66c9e4a2e01fd343d3182ab1dcf28"));
        let counting: Vec<u8> = (0u8..32).collect();
        let cases: [(Vec<u8>, &str, &str); 3] = [
            (
                vec![0; 32],
                "0734d4687b1fb622d53219d7b93f096a89518b80d1555f684f459ba224cbbaa3",
                "did:key:zQ3shTAwMcX1Fn1brQnoBpZ5RmBrNhDWqLLuvnkEoSs9dfHoJ",
            ),
            (
                vec![1; 32],
                "e48faf8abb7f6e27556d1805eee3cdbc6b32af8735bde939fa93889d0044ce69",
                "did:key:zQ3shs5AchQhZeUF1xpuD1aVNyFNPWsq2TaMrC8GRodxRCmmX",
            ),
            (
                counting,
                "30c88bfcb2b2218104d4d0a9f905a73ed90f77301f87decbc2095c3cdcfea3a4",
                "did:key:zQ3shs2jSZFGAtCmLe2WzbdtqSTXfPC9vo6ogWuooXPjAw4py",
            ),
        ];
        for (prf, private, did_key) in cases {
            let key = signing_key(&prf).unwrap();
            assert_eq!(key.to_bytes(), hex(private));
            assert_eq!(key.public_key().to_did_key(), did_key);
        }
    }
}

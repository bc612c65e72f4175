//! The OAuth provider of the ATProto profile: DPoP proof checks (`dpop.rs`), client IDs and
//! metadata (`client.rs`), pushed requests and codes (`requests.rs`), the authorization server
//! itself (`provider.rs`), and PKCE (here). Served unless `VOW_OAUTH=false`.

pub mod client;
pub mod dpop;
pub mod provider;
pub mod requests;

/// PKCE with S256 (RFC 7636): the verifier hashes to the challenge the client sent first.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use sha2::Digest;
    // RFC 7636 §4.1: 43 to 128 characters of the unreserved set.
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    well_formed && hashed == challenge
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkce_follows_rfc_7636() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(super::pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!super::pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!super::pkce_matches("short", "x"));
    }
}

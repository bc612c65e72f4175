//! Password hashing with scrypt (memory-hard), in the reference PDS's `salt:hash` hex format
//! and parameters (N=2^14, r=8, p=1, 64-byte key), so hashes move between implementations.

use subtle::ConstantTimeEq;

fn params() -> scrypt::Params {
    scrypt::Params::new(14, 8, 1).expect("valid scrypt parameters")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Hashes a password with a fresh random salt. CPU-heavy: call from a blocking task.
pub fn hash(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let salt_hex = hex(&salt);
    let mut out = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), salt_hex.as_bytes(), &params(), &mut out).expect("64-byte output is valid");
    format!("{salt_hex}:{}", hex(&out))
}

/// Checks a password against a stored hash in constant time. CPU-heavy: call from a blocking task.
pub fn verify(password: &str, stored: &str) -> bool {
    let Some((salt, expected)) = stored.split_once(':') else { return false };
    let Some(expected) = unhex(expected) else { return false };
    let mut out = vec![0u8; expected.len()];
    if scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params(), &mut out).is_err() {
        return false;
    }
    out.ct_eq(&expected).into()
}

/// [`hash`] on the blocking pool.
pub async fn hash_async(password: String) -> String {
    tokio::task::spawn_blocking(move || hash(&password)).await.expect("hashing does not panic")
}

/// [`verify`] on the blocking pool.
pub async fn verify_async(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&password, &stored)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let h = super::hash("correct horse");
        assert!(super::verify("correct horse", &h));
        assert!(!super::verify("wrong", &h));
        assert!(!super::verify("correct horse", "garbage"));
        assert_ne!(super::hash("correct horse"), h, "salted");
    }
}

//! Password hashing with scrypt (memory-hard), in the reference PDS's `salt:hash` hex format
//! and parameters (N=2^14, r=8, p=1, 64-byte key), so hashes move between implementations.

use axum::http::StatusCode;
use subtle::ConstantTimeEq;

use crate::error::{XrpcError, XrpcResult};

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
    metrics::counter!("vow_password_checks_total").increment(1);
    let Some((salt, expected)) = stored.split_once(':') else { return false };
    let Some(expected) = unhex(expected) else { return false };
    let mut out = vec![0u8; expected.len()];
    if scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params(), &mut out).is_err() {
        return false;
    }
    out.ct_eq(&expected).into()
}

/// Password hashing runs on a few threads of its own, never more at once: each scrypt call
/// holds 16 MiB, so unbounded parallel logins would take unbounded memory (and, on the
/// blocking pool's many threads, keep it). Callers beyond the queue are turned away.
struct Pool {
    queue: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

/// Jobs that may wait for a hashing thread, per thread.
const QUEUED_PER_THREAD: usize = 16;

fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(threads * QUEUED_PER_THREAD);
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        for i in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("vow-password-{i}"))
                .spawn(move || {
                    loop {
                        let job = jobs.lock().expect("password queue").recv();
                        match job {
                            Ok(job) => {
                                job();
                                // The hash's 16 MiB would otherwise stay until this thread
                                // next hashes.
                                crate::service::bounded::release_thread_memory();
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("password hashing thread starts");
        }
        Pool { queue }
    })
}

/// The answer when every hashing thread is busy and the queue is full.
fn busy() -> XrpcError {
    XrpcError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimitExceeded",
        "Too many password checks are in progress; try again in a moment",
    )
}

/// Runs `f` on the hashing threads, or refuses at once when too many are waiting.
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> XrpcResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Box::new(move || {
        let _ = tx.send(f());
    });
    pool().queue.try_send(job).map_err(|_| busy())?;
    rx.await.map_err(|_| XrpcError::internal("password hashing failed", "the hashing thread dropped the job"))
}

/// [`hash`] on the hashing threads.
pub async fn hash_async(password: String) -> XrpcResult<String> {
    on_pool(move || hash(&password)).await
}

/// [`verify`] on the hashing threads.
pub async fn verify_async(password: String, stored: String) -> XrpcResult<bool> {
    on_pool(move || verify(&password, &stored)).await
}

/// A hash in the stored format that no password is expected to match: its scrypt output would
/// have to be all zeros.
const UNMATCHABLE: &str = "00000000000000000000000000000000:\
    00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/// Checks a sign-in's password against the account's hash or, when no account has the
/// identifier given, against one nothing matches: the answer takes as long either way, so its
/// time does not tell which identifiers (email addresses among them) have accounts.
pub async fn verify_sign_in(password: String, stored: Option<String>) -> XrpcResult<bool> {
    match stored {
        Some(stored) => verify_async(password, stored).await,
        None => verify_async(password, UNMATCHABLE.to_owned()).await.map(|_| false),
    }
}

/// The shortest password accepted for a new account or a reset.
pub const MIN_LENGTH: usize = 8;

/// Checks a new password's length: at least [`MIN_LENGTH`] characters, at most 256 bytes.
pub fn check_new(password: &str) -> XrpcResult<()> {
    if password.chars().count() < MIN_LENGTH {
        return Err(crate::error::XrpcError::named(
            "InvalidPassword",
            format!("Choose a password of at least {MIN_LENGTH} characters"),
        ));
    }
    if password.len() > 256 {
        return Err(crate::error::XrpcError::named("InvalidPassword", "Password is too long"));
    }
    Ok(())
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

    #[test]
    fn the_unmatchable_hash_is_checked_in_full() {
        let (salt, key) = super::UNMATCHABLE.split_once(':').unwrap();
        assert_eq!((salt.len(), key.len()), (32, 128), "the shape of a stored hash");
        assert!(!super::verify("", super::UNMATCHABLE));
        assert!(!super::verify("correct horse", super::UNMATCHABLE));
    }

    #[tokio::test]
    async fn a_full_queue_turns_callers_away() {
        let h = super::hash("pw");
        let calls: Vec<_> = (0..200).map(|_| tokio::spawn(super::verify_async("wrong".into(), h.clone()))).collect();
        let mut refused = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(ok) => assert!(!ok),
                Err(e) => {
                    assert_eq!((e.status.as_u16(), e.error.as_str()), (429, "RateLimitExceeded"));
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "200 checks at once must overflow the queue");
        assert!(super::verify_async("pw".into(), h).await.unwrap(), "the pool works again afterwards");
    }
}

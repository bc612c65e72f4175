//! Pushed authorization requests and their codes, kept in memory: a request lives five
//! minutes and a code one, so neither is worth a database write. Both caches are bounded in
//! bytes (anyone may push requests). A restart forgets them: an app then starts its sign-in
//! again, as it would after an expired request.

use std::sync::Arc;
use std::time::Duration;

use super::provider::{CODE_TTL_SECS, Parameters, REQUEST_TTL_SECS};

/// Bytes the pending requests may take, and as much again for the codes.
pub const MAX_BYTES: u64 = 16 << 20;

/// A pushed request, and once approved, the account that approved it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub client_id: String,
    pub params: Parameters,
    /// The thumbprint of the DPoP key that pushed it.
    pub dpop_jkt: String,
    pub did: Option<String>,
}

impl Pending {
    /// Roughly what it occupies, for the byte bound.
    fn weight(&self) -> u32 {
        let p = &self.params;
        let text = [
            Some(&p.client_id),
            p.redirect_uri.as_ref(),
            p.scope.as_ref(),
            p.state.as_ref(),
            p.code_challenge.as_ref(),
            p.login_hint.as_ref(),
            p.response_mode.as_ref(),
            Some(&self.client_id),
            Some(&self.dpop_jkt),
            self.did.as_ref(),
        ];
        let bytes: usize = text.iter().flatten().map(|s| s.len()).sum();
        u32::try_from(bytes + 512).unwrap_or(u32::MAX)
    }
}

/// Cloning shares the caches.
#[derive(Clone)]
pub struct Requests {
    /// By request id.
    pending: moka::sync::Cache<String, Arc<Pending>>,
    /// Approved requests by their hashed code.
    codes: moka::sync::Cache<String, Arc<Pending>>,
}

fn cache(ttl_secs: i64) -> moka::sync::Cache<String, Arc<Pending>> {
    moka::sync::Cache::builder()
        .max_capacity(MAX_BYTES)
        .weigher(|k: &String, v: &Arc<Pending>| v.weight().saturating_add(k.len() as u32))
        .time_to_live(Duration::from_secs(ttl_secs as u64))
        .build()
}

impl Default for Requests {
    fn default() -> Self {
        Self { pending: cache(REQUEST_TTL_SECS), codes: cache(CODE_TTL_SECS) }
    }
}

impl Requests {
    pub fn insert(&self, id: String, request: Pending) {
        self.pending.insert(id, Arc::new(request));
    }

    /// A live request not yet answered.
    pub fn pending(&self, id: &str) -> Option<Arc<Pending>> {
        self.pending.get(id)
    }

    /// Approves a pending request for `did` under the hashed `code`; false when it was not
    /// pending any more (answered already, or expired).
    pub fn approve(&self, id: &str, did: &str, code: String) -> bool {
        let Some(request) = self.pending.remove(id) else { return false };
        let mut approved = (*request).clone();
        approved.did = Some(did.to_owned());
        self.codes.insert(code, Arc::new(approved));
        true
    }

    /// Uses up an approved request by its hashed code: once, while it lives.
    pub fn take_code(&self, code: &str) -> Option<Arc<Pending>> {
        self.codes.remove(code)
    }

    /// Forgets a request the user declined.
    pub fn forget(&self, id: &str) {
        self.pending.invalidate(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Pending {
        Pending {
            client_id: "http://localhost".into(),
            params: Parameters { client_id: "http://localhost".into(), ..Default::default() },
            dpop_jkt: "jkt".into(),
            did: None,
        }
    }

    #[test]
    fn a_request_is_approved_once_and_its_code_used_once() {
        let r = Requests::default();
        r.insert("req".into(), request());
        assert!(r.pending("req").is_some());
        assert!(r.approve("req", "did:plc:a", "code".into()));
        assert!(r.pending("req").is_none(), "an answered request is not pending");
        assert!(!r.approve("req", "did:plc:b", "other".into()), "nor approved twice");
        let taken = r.take_code("code").unwrap();
        assert_eq!(taken.did.as_deref(), Some("did:plc:a"));
        assert!(r.take_code("code").is_none(), "a code is single-use");
        assert!(r.take_code("other").is_none());
    }

    #[test]
    fn a_declined_request_is_gone() {
        let r = Requests::default();
        r.insert("req".into(), request());
        r.forget("req");
        assert!(r.pending("req").is_none());
        assert!(!r.approve("req", "did:plc:a", "code".into()));
    }

    #[test]
    fn the_store_stays_within_its_byte_bound() {
        let r = Requests::default();
        let mut big = request();
        big.params.state = Some("x".repeat(1024));
        for i in 0..40_000 {
            r.insert(format!("req-{i}"), big.clone());
        }
        r.pending.run_pending_tasks();
        assert!(r.pending.weighted_size() <= MAX_BYTES, "{}", r.pending.weighted_size());
    }
}

//! Handle resolution: this server's own accounts first, then DNS TXT `_atproto.<handle>`,
//! then `https://<handle>/.well-known/atproto-did`.

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::error::XrpcError;

/// Resolves handles; built once (the DNS resolver reads the system configuration, or talks to
/// the one server `VOW_DNS_SERVER` names).
#[derive(Clone)]
pub struct HandleResolver {
    dns: Option<TokioResolver>,
    http: reqwest::Client,
}

impl HandleResolver {
    /// `http` must be a guarded client (public addresses only, no redirects, bounded in time:
    /// the proxy's), as anyone may ask to resolve any handle.
    pub fn new(dns_server: Option<std::net::SocketAddr>, http: reqwest::Client) -> Self {
        let dns = crate::service::net::dns_resolver(dns_server);
        if dns.is_none() {
            tracing::warn!("handles resolve over HTTPS only");
        }
        Self { dns, http }
    }

    /// The DID a handle names: an account of this PDS's (`db`), or by DNS, or over HTTPS.
    pub async fn resolve(
        &self,
        db: &sqlx::SqlitePool,
        handle: &atproto::syntax::Handle,
    ) -> Result<Option<String>, XrpcError> {
        let normalized = handle.normalized();
        if let Some(account) = crate::store::db::accounts::by_handle(db, &normalized).await? {
            return Ok(Some(account.did));
        }
        Ok(self.resolve_elsewhere(&normalized).await)
    }

    /// The DID a handle names by DNS or over HTTPS, asking no local account.
    pub async fn resolve_elsewhere(&self, handle: &str) -> Option<String> {
        if let Some(did) = self.resolve_dns(handle).await {
            return Some(did);
        }
        self.resolve_https(handle).await
    }

    async fn resolve_dns(&self, handle: &str) -> Option<String> {
        let lookup = self.dns.as_ref()?.lookup(format!("_atproto.{handle}."), RecordType::TXT).await.ok()?;
        let dids: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(txt.to_string()),
                _ => None,
            })
            .filter_map(|txt| txt.strip_prefix("did=").map(str::to_owned))
            .collect();
        // Several different DIDs make the handle ambiguous: treat it as unresolved.
        match dids.as_slice() {
            [one] if atproto::syntax::Did::new(one.as_str()).is_ok() => Some(one.clone()),
            _ => None,
        }
    }

    async fn resolve_https(&self, handle: &str) -> Option<String> {
        let mut response = self.http.get(format!("https://{handle}/.well-known/atproto-did")).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        // A DID is short: read at most 2 KiB.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            body.extend_from_slice(&chunk);
            if body.len() > 2048 {
                return None;
            }
        }
        let body = String::from_utf8(body).ok()?;
        let did = body.lines().next()?.trim();
        atproto::syntax::Did::new(did).ok().map(|d| d.into_string())
    }
}

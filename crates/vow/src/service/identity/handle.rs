//! Handle resolution: this server's own accounts first, then DNS TXT `_atproto.<handle>`,
//! then `https://<handle>/.well-known/atproto-did`.

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::error::XrpcError;

/// The DID a handle names: an account of this PDS's (`db`), or by DNS, or over HTTPS (`http`).
pub async fn resolve(
    db: &sqlx::SqlitePool,
    http: &reqwest::Client,
    handle: &atproto::syntax::Handle,
) -> Result<Option<String>, XrpcError> {
    let normalized = handle.normalized();
    if let Some(account) = crate::store::db::accounts::by_handle(db, &normalized).await? {
        return Ok(Some(account.did));
    }
    if let Some(did) = resolve_dns(&normalized).await {
        return Ok(Some(did));
    }
    Ok(resolve_https(http, &normalized).await)
}

async fn resolve_dns(handle: &str) -> Option<String> {
    let resolver = TokioResolver::builder_tokio().ok()?.build().ok()?;
    let lookup = resolver.lookup(format!("_atproto.{handle}."), RecordType::TXT).await.ok()?;
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

async fn resolve_https(http: &reqwest::Client, handle: &str) -> Option<String> {
    let response = http
        .get(format!("https://{handle}/.well-known/atproto-did"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.text().await.ok()?;
    let did = body.lines().next()?.trim();
    atproto::syntax::Did::new(did).ok().map(|d| d.into_string())
}

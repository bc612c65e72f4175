//! Asks relays (`VOW_RELAYS`) to crawl this PDS: at start-up, and again at most every 20 minutes
//! while new events flow, so relays that dropped the connection come back. Failures are logged
//! and retried a minute later.

use std::time::Duration;

const EVERY: Duration = Duration::from_secs(20 * 60);
const RETRY: Duration = Duration::from_secs(60);

/// What the crawl requests need: where to send them and what to say.
pub struct Crawl {
    pub db: sqlx::SqlitePool,
    pub http: reqwest::Client,
    pub relays: Vec<String>,
    /// This PDS's hostname, as relays should crawl it.
    pub hostname: String,
}

pub fn start(crawl: Crawl) {
    if crawl.relays.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut last_head: Option<i64> = None;
        loop {
            let head = crate::store::db::events::newest_seq(&crawl.db).await.ok().flatten();
            // The first round always runs; later ones only when something new was published.
            let due = last_head.is_none() || head != last_head;
            let mut failed = false;
            if due {
                for relay in &crawl.relays {
                    if let Err(e) = request_crawl(&crawl, relay).await {
                        tracing::warn!(%relay, error = %e, "requestCrawl failed; will retry");
                        failed = true;
                    } else {
                        tracing::info!(%relay, "requestCrawl sent");
                    }
                }
            }
            if !failed {
                last_head = Some(head.unwrap_or(0));
            }
            tokio::time::sleep(if failed { RETRY } else { EVERY }).await;
        }
    });
}

async fn request_crawl(crawl: &Crawl, relay: &str) -> Result<(), String> {
    let base = if relay.starts_with("http://") || relay.starts_with("https://") {
        relay.trim_end_matches('/').to_owned()
    } else {
        format!("https://{}", relay.trim_end_matches('/'))
    };
    let res = crawl
        .http
        .post(format!("{base}/xrpc/com.atproto.sync.requestCrawl"))
        .json(&serde_json::json!({ "hostname": crawl.hostname }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status().is_success() { Ok(()) } else { Err(format!("relay answered {}", res.status())) }
}

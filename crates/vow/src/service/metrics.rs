//! Prometheus metrics: the `metrics` facade records events where they happen (requests, the
//! commit phases, signing, IPFS calls); the state that is cheaper to read than to track
//! (accounts by status, stored bytes, connections, queues) is read when `/metrics` is scraped.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: from a cached read to a slow signature.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder (installed on first use) and what `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

/// The state read at each scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub accounts_by_status: Vec<(&'static str, i64)>,
    pub records: i64,
    pub block_bytes: i64,
    pub blob_bytes: i64,
    pub blobs: i64,
    pub db_pool_size: u32,
    pub db_pool_idle: usize,
    pub signer_connections: usize,
    pub firehose_head_seq: i64,
    pub firehose_lags: Vec<crate::service::firehose::SubscriberLag>,
    pub mail_queue: usize,
    /// Each bounded cache's bound, in bytes.
    pub cache_bounds: Vec<(&'static str, u64)>,
}

impl Metrics {
    pub fn install() -> Self {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new().set_buckets(BUCKETS).expect("buckets are not empty");
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // Another recorder may already be installed (tests running several servers in
                // one process do not): then this one only renders what it is given.
                let _ = metrics::set_global_recorder(recorder);
                let upkeep = handle.clone();
                std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(Duration::from_secs(5));
                            upkeep.run_upkeep();
                        }
                    })
                    .expect("the upkeep thread starts");
                handle
            })
            .clone();
        describe();
        Self { handle }
    }

    /// The text exposition, with the scraped state set first.
    pub fn render(&self, s: &Snapshot) -> String {
        for (status, n) in &s.accounts_by_status {
            metrics::gauge!("vow_accounts", "status" => *status).set(*n as f64);
        }
        metrics::gauge!("vow_records").set(s.records as f64);
        metrics::gauge!("vow_stored_bytes", "kind" => "blocks").set(s.block_bytes as f64);
        metrics::gauge!("vow_stored_bytes", "kind" => "blobs").set(s.blob_bytes as f64);
        metrics::gauge!("vow_blobs").set(s.blobs as f64);
        metrics::gauge!("vow_db_pool_connections", "state" => "open").set(s.db_pool_size as f64);
        metrics::gauge!("vow_db_pool_connections", "state" => "idle").set(s.db_pool_idle as f64);
        metrics::gauge!("vow_signer_connections").set(s.signer_connections as f64);
        metrics::gauge!("vow_firehose_subscribers").set(s.firehose_lags.len() as f64);
        metrics::gauge!("vow_firehose_head_seq").set(s.firehose_head_seq as f64);
        let max_lag = s.firehose_lags.iter().map(|l| l.lag).max().unwrap_or(0);
        metrics::gauge!("vow_firehose_max_lag_events").set(max_lag as f64);
        metrics::gauge!("vow_mail_queue").set(s.mail_queue as f64);
        for (cache, bound) in &s.cache_bounds {
            metrics::gauge!("vow_cache_bound_bytes", "cache" => *cache).set(*bound as f64);
        }
        let mut text = self.handle.render();
        per_subscriber(&mut text, &s.firehose_lags);
        text
    }
}

/// One series per connected subscriber, written here rather than through the recorder so a
/// subscriber's series goes when it does (the recorder keeps every gauge it was ever given).
fn per_subscriber(text: &mut String, lags: &[crate::service::firehose::SubscriberLag]) {
    use std::fmt::Write;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(
        "# HELP vow_firehose_subscriber_lag_events Committed events a connected subscriber has not been sent yet\n",
    );
    text.push_str("# TYPE vow_firehose_subscriber_lag_events gauge\n");
    for l in lags {
        // Addresses are IP literals: nothing in them needs escaping.
        let _ = writeln!(
            text,
            "vow_firehose_subscriber_lag_events{{subscriber=\"{}\",address=\"{}\"}} {}",
            l.id, l.address, l.lag
        );
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("vow_http_requests_total", "HTTP requests by route, method and status");
    describe_histogram!("vow_http_request_duration_seconds", "HTTP request latency by route");
    describe_histogram!("vow_commit_phase_seconds", "Time a commit spends staging, signing and storing");
    describe_counter!("vow_commits_total", "Commits written");
    describe_histogram!("vow_commit_batch_requests", "Requests whose writes one commit holds (group commit)");
    describe_histogram!("vow_commit_batch_ops", "Record operations one commit holds");
    describe_counter!("vow_write_requests_total", "Write requests queued for a commit");
    describe_gauge!("vow_write_queue_requests", "Write requests waiting in the accounts' queues");
    describe_histogram!("vow_signing_seconds", "Signing round trips to the user's signer");
    describe_counter!("vow_signing_failures_total", "Signatures not obtained, by reason");
    describe_histogram!("vow_ipfs_call_seconds", "Calls to the IPFS node by RPC method");
    describe_counter!("vow_ipfs_errors_total", "Failed calls to the IPFS node by RPC method");
    describe_counter!("vow_mail_sent_total", "Mails handed to the SMTP server, by outcome");
    describe_counter!("vow_rate_limited_total", "Requests refused by a rate limit");
    describe_counter!(
        "vow_swept_total",
        "What the clean-up sweeps removed: unreferenced blobs, expired firehose events"
    );
    describe_histogram!("vow_db_pool_wait_seconds", "Time spent waiting for a SQLite connection from the pool");
    describe_gauge!("vow_accounts", "Accounts by status");
    describe_gauge!("vow_cache_bound_bytes", "The most each bounded cache may hold, in bytes");
    describe_gauge!("vow_stored_bytes", "Bytes stored: repo blocks (in SQLite) and blobs");
    describe_gauge!("vow_firehose_head_seq", "The newest firehose sequence number");
    describe_gauge!("vow_firehose_max_lag_events", "Events the furthest-behind subscriber has not been sent yet");
    describe_gauge!("vow_firehose_subscribers", "Connected firehose subscribers, replaying or live");
}

/// Turns the connection pool's acquire events (sqlx reports each acquire's wait as a tracing
/// event when `acquire_time_level` is set; see `store::db::open`) into the
/// `vow_db_pool_wait_seconds` histogram. Install it with [`pool_wait_filter`], so the events
/// reach it whatever the log level.
pub struct PoolWaits;

/// The events [`PoolWaits`] reads, and nothing else.
pub fn pool_wait_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_target(POOL_ACQUIRE_TARGET, tracing::Level::TRACE)
}

const POOL_ACQUIRE_TARGET: &str = "sqlx::pool::acquire";

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PoolWaits {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Waited(Option<f64>);
        impl tracing::field::Visit for Waited {
            fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
                if field.name() == "acquired_after_secs" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if event.metadata().target() != POOL_ACQUIRE_TARGET {
            return;
        }
        let mut waited = Waited(None);
        event.record(&mut waited);
        if let Some(secs) = waited.0 {
            metrics::histogram!("vow_db_pool_wait_seconds").record(secs);
        }
    }
}

/// Records how long a phase of a commit took.
pub fn commit_phase(phase: &'static str, took: Duration) {
    metrics::histogram!("vow_commit_phase_seconds", "phase" => phase).record(took.as_secs_f64());
}

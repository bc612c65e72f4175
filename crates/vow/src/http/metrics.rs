//! `GET /metrics`: Prometheus's text format. On the main address it needs the admin's
//! credentials; `VOW_METRICS_ADDR` serves it on an address of its own without them (for a
//! scraper on a private network).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::XrpcResult;
use crate::service::metrics::Snapshot;
use crate::state::AppState;
use crate::store::db::meta;

/// The route on the main address (admin only).
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(guarded))
}

/// The router of the metrics address (no credentials asked).
pub fn own_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(open)).with_state(state)
}

async fn guarded(State(state): State<AppState>, headers: HeaderMap) -> XrpcResult<Response> {
    crate::http::xrpc::extract::admin_check(&headers, &state.config.admin_password)?;
    render(&state).await
}

async fn open(State(state): State<AppState>) -> XrpcResult<Response> {
    render(&state).await
}

async fn render(state: &AppState) -> XrpcResult<Response> {
    let (records, block_bytes, blobs, blob_bytes) = meta::stored(&state.db).await?;
    let (firehose_head_seq, firehose_lags) = state.firehose.stats().await?;
    let snapshot = Snapshot {
        accounts_by_status: meta::accounts_by_status(&state.db).await?,
        records,
        block_bytes,
        blob_bytes,
        blobs,
        db_pool_size: state.db.size(),
        db_pool_idle: state.db.num_idle(),
        signer_connections: state.signers.connected(),
        firehose_head_seq,
        firehose_lags,
        mail_queue: state.mailer.queued(),
        cache_bounds: [
            ("sqlite_pages", crate::store::db::page_cache_bound(state.config.db_cache_bytes)),
            ("oauth_requests", 2 * crate::service::oauth::requests::MAX_BYTES),
        ]
        .into_iter()
        .chain(crate::service::bounded::Budget::new(state.config.memory_cache_bytes).all())
        .collect(),
    };
    let body = state.metrics.render(&snapshot);
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(res)
}

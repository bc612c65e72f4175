//! The HTTP edge, the top floor: the router (here), the rules every route shares (`edge`),
//! the XRPC handlers, the account pages and the well-known routes. Only this floor, the
//! composition (`crate::state`) and the CLI know `AppState`.

pub mod edge;
pub mod metrics;
pub mod web;
pub mod wellknown;
pub mod xrpc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method};
use tower_http::cors::{Any, CorsLayer};

use crate::state::AppState;

/// The full router.
pub fn router(state: AppState) -> Router {
    // ATProto clients run in browsers on other origins and send these headers.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("atproto-proxy"),
            HeaderName::from_static("atproto-accept-labelers"),
            HeaderName::from_static("dpop"),
        ])
        .expose_headers([HeaderName::from_static("dpop-nonce"), axum::http::header::WWW_AUTHENTICATE])
        .max_age(std::time::Duration::from_secs(86_400));
    let limit = state.config.max_json_body;
    let limits = crate::http::edge::BodyLimits { json: limit as u64 };
    let mut routes =
        crate::http::xrpc::routes().merge(crate::http::wellknown::routes()).merge(crate::http::metrics::routes());
    if state.config.oauth {
        routes = routes
            .merge(crate::http::web::oauth::routes())
            .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::web::oauth::nonce_header));
    }
    routes
        .merge(
            crate::http::web::routes()
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::web::canonical_host)),
        )
        .fallback(crate::http::xrpc::not_found)
        .method_not_allowed_fallback(crate::http::edge::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::edge::rate_limit))
        .layer(axum::middleware::from_fn(crate::http::edge::count_requests))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::edge::request_id))
        .layer(axum::middleware::from_fn_with_state(limits, crate::http::edge::refuse_oversized))
        .layer(axum::middleware::from_fn(crate::http::edge::xrpc_error_bodies))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(crate::http::edge::BODY_IDLE_TIMEOUT))
        .layer(cors)
        .with_state(state)
}

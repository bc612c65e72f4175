//! Proxying to the services apps expect behind their PDS: the AppView (`app.bsky.*`), the
//! chat service (`chat.bsky.*`), the moderation service (reports), or any service a request
//! names with `atproto-proxy: <did>#<service-id>`. Each call carries a service-auth token
//! signed by the user's key ([`tokens`]); calls go out through a client that cannot reach
//! private addresses ([`net`]); responses stream back.

pub mod resolve;
pub mod tokens;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{ProxyConfig, ServiceTarget};
use crate::error::XrpcError;
use crate::service::net;

/// Request headers passed on to the service.
const REQUEST_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "atproto-accept-labelers",
    "content-encoding",
    "content-type",
    "x-bsky-topics",
];

/// Response headers passed back to the client.
pub const RESPONSE_HEADERS: &[&str] = &[
    "atproto-content-labelers",
    "atproto-repo-rev",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-policy",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// Methods that never leave the PDS, whatever a request asks: the account, its identity,
/// email, app passwords, administration, and Vow's own.
pub fn never_proxied(nsid: &str) -> bool {
    ["com.atproto.server.", "com.atproto.identity.", "com.atproto.admin.", "com.atproto.sync.", "app.vow."]
        .iter()
        .any(|p| nsid.starts_with(p))
}

/// A service to call: its DID (the tokens' audience) and base URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub did: String,
    pub url: reqwest::Url,
    /// Configured by the operator (the AppView, chat, moderation), so it may live on a private
    /// network; services a request names go through the guarded client.
    pub configured: bool,
}

#[derive(Clone)]
pub struct Proxy {
    /// For the configured services.
    trusted: reqwest::Client,
    /// For services requests name: public addresses only (unless allowed), no redirects.
    http: reqwest::Client,
    pub resolver: resolve::Resolver,
    pub config: ProxyConfig,
    pub tokens: tokens::ServiceTokens,
}

fn target_of(service: &ServiceTarget) -> Result<Target, XrpcError> {
    let url = reqwest::Url::parse(&service.url).map_err(|e| XrpcError::internal("configured service URL", e))?;
    Ok(Target { did: service.did.clone(), url, configured: true })
}

impl Proxy {
    pub fn new(
        config: ProxyConfig,
        plc: crate::service::identity::plc::PlcClient,
        tokens: tokens::ServiceTokens,
        budget: crate::service::bounded::Budget,
    ) -> Self {
        let http = net::client(config.allow_private, config.timeout, None);
        let trusted = net::client(true, config.timeout, None);
        let resolver = resolve::Resolver::new(plc, http.clone(), config.allow_private, budget.of("did_documents"));
        Self { trusted, http, resolver, config, tokens }
    }

    pub fn appview(&self) -> Result<Target, XrpcError> {
        target_of(&self.config.appview)
    }

    pub fn moderation(&self) -> Result<Target, XrpcError> {
        target_of(&self.config.moderation)
    }

    /// Where a call to `nsid` goes: the service its `atproto-proxy` header names, else the
    /// default for its namespace. `None`: nowhere (the method is not implemented).
    pub async fn target(&self, header: Option<&str>, nsid: &str) -> Result<Option<Target>, XrpcError> {
        if let Some(header) = header {
            if never_proxied(nsid) {
                return Err(XrpcError::invalid_request(format!("{nsid} is never proxied: it belongs to this PDS")));
            }
            let (did, id) = header.split_once('#').ok_or_else(|| {
                XrpcError::invalid_request(
                    "atproto-proxy must be <did>#<service id>, e.g. did:web:api.bsky.app#bsky_appview",
                )
            })?;
            atproto::syntax::Did::new(did)
                .map_err(|e| XrpcError::invalid_request(format!("atproto-proxy: invalid DID {did:?}: {e}")))?;
            if id.is_empty() || id.contains('#') {
                return Err(XrpcError::invalid_request("atproto-proxy: the service id is missing"));
            }
            // The configured services need no resolution.
            let known = [
                (&self.config.appview, "bsky_appview"),
                (&self.config.chat, "bsky_chat"),
                (&self.config.moderation, "atproto_labeler"),
            ];
            if let Some((service, _)) = known.iter().find(|(service, sid)| service.did == did && *sid == id) {
                return target_of(service).map(Some);
            }
            let url = self.resolver.service_endpoint(did, id).await.map_err(|e| match e {
                resolve::ResolveError::Refused(r) => XrpcError::invalid_request(format!("atproto-proxy: {r}")),
                other => XrpcError::named("InvalidRequest", format!("atproto-proxy: {other}")),
            })?;
            return Ok(Some(Target { did: did.to_owned(), url, configured: false }));
        }
        if nsid.starts_with("app.bsky.") {
            Ok(Some(target_of(&self.config.appview)?))
        } else if nsid.starts_with("chat.bsky.") {
            Ok(Some(target_of(&self.config.chat)?))
        } else if nsid == "com.atproto.moderation.createReport" {
            Ok(Some(target_of(&self.config.moderation)?))
        } else {
            Ok(None)
        }
    }

    /// Calls `nsid` at `target` with the client's query, body and the headers that matter,
    /// and `token` as the bearer credential. The response is the service's, unread.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        method: &Method,
        target: &Target,
        nsid: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Option<axum::body::Bytes>,
        token: Option<&str>,
    ) -> Result<reqwest::Response, XrpcError> {
        let mut url = target.url.clone();
        url.set_path(&format!("{}/xrpc/{nsid}", target.url.path().trim_end_matches('/')));
        url.set_query(query.filter(|q| !q.is_empty()));
        let client = if target.configured {
            &self.trusted
        } else {
            net::check_url(&url, self.config.allow_private)
                .map_err(|e| XrpcError::invalid_request(format!("the service cannot be called: {e}")))?;
            &self.http
        };
        let mut request = client.request(method.clone(), url);
        for name in REQUEST_HEADERS {
            if let Some(value) = headers.get(*name) {
                request = request.header(*name, value);
            }
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.map_err(|e| upstream_error(&target.did, &e))
    }
}

/// The client's answer when the service could not be reached or timed out.
pub fn upstream_error(did: &str, e: &reqwest::Error) -> XrpcError {
    let cause = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
    tracing::warn!(service = did, error = %e, "proxied call failed");
    if e.is_timeout() {
        XrpcError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "UpstreamTimeout",
            format!("{did} did not answer in time"),
        )
    } else {
        XrpcError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "UpstreamFailure",
            format!("{did} could not be reached: {cause}"),
        )
    }
}

/// The response headers worth passing back.
pub fn response_headers(from: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in RESPONSE_HEADERS {
        if let Some(value) = from.get(*name)
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    out
}

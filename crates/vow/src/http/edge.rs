//! Rules of the HTTP edge that hold for every route: request bodies are bounded in size and in
//! time, and every error under `/xrpc/` carries an XRPC body, including the rejections the
//! framework makes itself (wrong method, missing WebSocket upgrade, unreadable body).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::error::XrpcError;
use crate::service::blobs::DRAIN_LIMIT;

/// How long a request body may go without sending anything.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// A refused body is read (and discarded) up to [`DRAIN_LIMIT`] bytes, so that the client,
/// which is still sending, gets to read the error instead of a reset connection; and for at
/// most this long.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// The largest body a route accepts, by path.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub json: u64,
}

impl BodyLimits {
    /// None for the routes that stream their bodies and apply their own limits.
    fn for_path(&self, path: &str) -> Option<u64> {
        match path {
            "/xrpc/com.atproto.repo.uploadBlob" | "/xrpc/com.atproto.repo.importRepo" => None,
            _ => Some(self.json),
        }
    }
}

/// Refuses a request whose declared length is over its route's limit before reading any of
/// it. A body small enough to drain is read to the end in the background (so the client sees
/// the 413); a larger one is not, and the connection is closed after the answer.
pub async fn refuse_oversized(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let Some(limit) = limits.for_path(req.uri().path()) else { return next.run(req).await };
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit) else { return next.run(req).await };
    let mut res = XrpcError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        format!("Request body is {declared} bytes; the limit here is {limit}"),
    )
    .into_response();
    if declared - limit <= DRAIN_LIMIT {
        let body = req.into_body();
        tokio::spawn(async move {
            let mut stream = body.into_data_stream();
            let _ = tokio::time::timeout(DRAIN_TIME, async { while let Some(Ok(_)) = stream.next().await {} }).await;
        });
    } else {
        res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// The XRPC error name for a status the framework chose.
fn error_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "AuthenticationRequired",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        StatusCode::TOO_MANY_REQUESTS => "RateLimitExceeded",
        StatusCode::NOT_IMPLEMENTED => "MethodNotImplemented",
        s if s.is_server_error() => "InternalServerError",
        _ => "InvalidRequest",
    }
}

/// Gives every error response under `/xrpc/` an XRPC body: handlers already do; this covers
/// the framework's own answers (405, WebSocket upgrade refusals, body read failures).
pub async fn xrpc_error_bodies(req: Request, next: Next) -> Response {
    let xrpc = req.uri().path().starts_with("/xrpc/");
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !xrpc || !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("Request failed").to_owned(),
        t => t.to_owned(),
    };
    let mut fixed = XrpcError::new(status, error_name(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// The answer for a known path called with the wrong method.
pub async fn method_not_allowed(req: Request<Body>) -> XrpcError {
    XrpcError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "InvalidRequest",
        format!("{} does not accept {}", req.uri().path(), req.method()),
    )
}

/// A TCP listener whose connections answer the HTTP parser's own refusals (a request line or
/// headers too long to read, a malformed request) with an XRPC body. Those are written by
/// the HTTP library before any route runs, with an empty body.
pub struct Listener(pub tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = ParserErrorBodies<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (ParserErrorBodies { inner: stream, pending: Vec::new() }, addr);
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The TCP peer of a request's connection (axum's connect info for [`Listener`]).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A connection that replaces the parser's bare error answers (see [`Listener`]).
pub struct ParserErrorBodies<S> {
    inner: S,
    /// A replacement answer not yet written.
    pending: Vec<u8>,
}

/// The XRPC answer for a bare parser refusal at the start of `out`, if it is one. The parser
/// writes such an answer only between requests, as the whole of one write, and the routes
/// never answer these statuses without a body (see [`xrpc_error_bodies`]).
fn parser_error_answer(out: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = match out.get(..12)? {
        b"HTTP/1.1 400" | b"HTTP/1.0 400" => (400, "The request could not be parsed"),
        b"HTTP/1.1 414" | b"HTTP/1.0 414" => (414, "The request URL is too long"),
        b"HTTP/1.1 431" | b"HTTP/1.0 431" => (431, "The request headers are too large"),
        _ => return None,
    };
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != out.len() {
        return None;
    }
    let head = String::from_utf8_lossy(out).to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::json!({ "error": "InvalidRequest", "message": message }).to_string();
    let reason = axum::http::StatusCode::from_u16(status).ok()?.canonical_reason().unwrap_or("Bad Request");
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: tokio::io::AsyncWrite + Unpin> ParserErrorBodies<S> {
    /// Writes out a pending replacement answer.
    fn poll_pending(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while !self.pending.is_empty() {
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ParserErrorBodies<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ParserErrorBodies<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(answer) = parser_error_answer(buf) {
            self.pending = answer;
            // Taken: written by the next poll, flush or shutdown.
            let _ = self.poll_pending(cx)?;
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next())
            && let Some(answer) = parser_error_answer(only)
        {
            self.pending = answer;
            let _ = self.poll_pending(cx)?;
            return std::task::Poll::Ready(Ok(only.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::parser_error_answer;

    #[test]
    fn only_bare_parser_refusals_are_replaced() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(parser_error_answer(bare).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{answer}");
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "InvalidRequest");
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        // A body follows, another status, or a write that is not a whole head: untouched.
        assert!(parser_error_answer(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(parser_error_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(parser_error_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
        assert!(parser_error_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore").is_none());
        assert!(parser_error_answer(b"HTTP/1").is_none());
    }
}

/// The client's address: the TCP peer, or, when the peer is one of the trusted reverse
/// proxies, the address the proxy names (the last X-Forwarded-For entry it did not add itself
/// from a trusted hop, else X-Real-IP).
pub fn client_ip(
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        return Some(*ip);
    }
    headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).or(Some(peer))
}

/// The key a client address is counted under: the address, or for IPv6 its /64 (one
/// subscriber's usual allocation, so a client cannot step around a limit inside its own net).
pub fn address_key(ip: Option<std::net::IpAddr>) -> String {
    match ip {
        Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(String::new, |v4| v4.to_string()),
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

/// Applies the global rate limit per client address, and the tighter per-address limit of the
/// XRPC methods that have one; reports the state in `ratelimit-*` headers. The admin's
/// requests and the health check are not counted. Every request leaves with its client's
/// address as a [`crate::http::xrpc::extract::ClientAddr`] extension.
pub async fn rate_limit(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use crate::service::ratelimit::Policy;
    let peer = req.extensions().get::<axum::extract::ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip());
    let ip = client_ip(peer, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(crate::http::xrpc::extract::ClientAddr(ip));
    let path = req.uri().path();
    if path == "/xrpc/_health"
        || path == "/metrics"
        || (req.headers().contains_key(axum::http::header::AUTHORIZATION)
            && crate::http::xrpc::extract::admin_check(req.headers(), &state.config.admin_password).is_ok())
    {
        return next.run(req).await;
    }
    let key = address_key(ip);
    let method = path.strip_prefix("/xrpc/").and_then(Policy::of_method);
    let checked = state.limits.check(Policy::Global, &key, 1).and_then(|global| match method {
        Some(policy) => state.limits.check(policy, &key, 1).map(|m| m.or(global)),
        None => Ok(global),
    });
    match checked {
        Ok(info) => {
            let mut res = next.run(req).await;
            // A handler's own refusal (per identifier, per account) says its own state.
            if let Some(info) = info
                && !res.headers().contains_key("ratelimit-limit")
            {
                info.write(res.headers_mut());
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.9, 203.0.113.5, 10.1.1.1".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        // From a stranger, the header is ignored.
        assert_eq!(client_ip(ip("192.0.2.1"), &headers, &trusted), ip("192.0.2.1"));
        // From the proxy, the last address it did not add from a trusted hop.
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.5"));
        let mut real = axum::http::HeaderMap::new();
        real.insert("x-real-ip", "203.0.113.77".parse().unwrap());
        assert_eq!(client_ip(ip("10.0.0.2"), &real, &trusted), ip("203.0.113.77"));
        assert_eq!(client_ip(ip("10.0.0.2"), &axum::http::HeaderMap::new(), &trusted), ip("10.0.0.2"));
        assert_eq!(address_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }
}

/// Counts every request by route (the matched route, so the label set stays bounded), method
/// and status, with its latency.
pub async fn count_requests(req: Request<Body>, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::histogram!("vow_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("vow_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    if res.status() == StatusCode::TOO_MANY_REQUESTS {
        metrics::counter!("vow_rate_limited_total").increment(1);
    }
    res
}

/// Gives every request an id (the `x-request-id` a trusted proxy set, else a new one), runs it
/// inside a `request` span carrying the id, method and path (never the query, which may carry
/// codes), so every log line of the request names it, and returns the id in `x-request-id`.
pub async fn request_id(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let peer = req.extensions().get::<axum::extract::ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip());
    let from_proxy = peer.is_some_and(|ip| state.config.trusted_proxies.iter().any(|net| net.contains(&ip)));
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| from_proxy && !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let started = std::time::Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(status = res.status().as_u16(), ms = started.elapsed().as_millis() as u64, "answered")
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

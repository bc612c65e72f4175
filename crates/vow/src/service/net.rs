//! Outbound HTTP to services named by users' requests, which must not become a way into the
//! operator's network: names resolve through a resolver that drops private, loopback and
//! link-local addresses, URLs with such literal addresses are refused, and redirects are not
//! followed (a redirect to a literal address would skip the resolver). A development setting
//! lifts the address rule for local services.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an address belongs to the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// Why a service may not be called.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not an http(s) URL")]
    Scheme(String),
    #[error("{0} points at a private or loopback address")]
    Private(String),
}

/// Checks a URL before it is called: http(s), and no literal private address unless allowed.
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme(url.to_string()));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Refused::Scheme(url.to_string())),
    };
    if !allow_private && literal.is_some_and(|ip| !is_public(ip)) {
        return Err(Refused::Private(url.to_string()));
    }
    Ok(())
}

/// An error and its causes on one line (reqwest's own message leaves out why a request
/// failed, such as a refused connection or a name that resolved to a private address).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A DNS resolver: the system's configuration, or the one server `server` names (UDP and TCP
/// on its port). Its cache is bounded in entries and short-lived, so a person who just added a
/// record and tries again does not wait on it. `None` when no resolver can be built.
pub fn dns_resolver(server: Option<SocketAddr>) -> Option<TokioResolver> {
    let builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let config = ResolverConfig::from_parts(None, vec![], vec![server]);
            Ok(TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()))
        }
        None => TokioResolver::builder_tokio(),
    };
    builder
        .and_then(|mut b| {
            let opts = b.options_mut();
            opts.cache_size = 1024;
            opts.positive_max_ttl = Some(std::time::Duration::from_secs(60));
            opts.negative_max_ttl = Some(std::time::Duration::from_secs(5));
            b.build()
        })
        .map_err(|e| tracing::warn!(error = %e, "no DNS resolver"))
        .ok()
}

/// Resolves names for outbound calls: with the configured DNS server when there is one (names
/// it does not know fall back to the system's lookup), keeping only public addresses unless
/// private ones are allowed.
struct Guarded {
    dns: Option<TokioResolver>,
    public_only: bool,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let dns = self.dns.clone();
        let public_only = self.public_only;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let mut all: Vec<SocketAddr> = Vec::new();
            if let Some(dns) = dns
                && let Ok(found) = dns.lookup_ip(format!("{host}.")).await
            {
                all = found.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            }
            if all.is_empty() {
                all = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            }
            let kept: Vec<SocketAddr> = all.into_iter().filter(|a| !public_only || is_public(a.ip())).collect();
            if kept.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> = Box::new(Refused::Private(host));
                return Err(refused);
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client for calls to services: bounded in time, no redirects, public addresses
/// only unless `allow_private`; names resolve with `dns` when given (see [`dns_resolver`]).
pub fn client(allow_private: bool, timeout: std::time::Duration, dns: Option<TokioResolver>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("vow/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(60));
    if !allow_private || dns.is_some() {
        builder = builder.dns_resolver(Arc::new(Guarded { dns, public_only: !allow_private }));
    }
    builder.build().expect("HTTP client builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_with_private_literals_are_refused_unless_allowed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&url("http://127.0.0.1:2583/xrpc/x"), false).is_err());
        assert!(check_url(&url("http://[::1]/x"), false).is_err());
        assert!(check_url(&url("https://api.bsky.app/xrpc/x"), false).is_ok());
        assert!(check_url(&url("http://127.0.0.1:2583/xrpc/x"), true).is_ok());
        assert!(check_url(&url("file:///etc/passwd"), true).is_err());
    }
}

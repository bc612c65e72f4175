//! Outbound HTTP to services named by users' requests, which must not become a way into the
//! operator's network: names resolve through a resolver that drops private, loopback and
//! link-local addresses, URLs with such literal addresses are refused, and redirects are not
//! followed (a redirect to a literal address would skip the resolver). A development setting
//! lifts the address rule for local services.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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

/// Resolves names with the system resolver and keeps only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> = Box::new(Refused::Private(host));
                return Err(refused);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client for calls to services: bounded in time, no redirects, public addresses
/// only unless `allow_private`.
pub fn client(allow_private: bool, timeout: std::time::Duration) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("vow/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(60));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
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

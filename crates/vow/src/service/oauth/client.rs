//! OAuth clients as the ATProto profile defines them: a client's ID is the HTTPS URL of its
//! metadata document (fetched, bounded, from public addresses only), or, for development, a
//! loopback client `http://localhost` whose metadata is derived from the ID itself.

use serde::Deserialize;
use serde_json::Value;

/// The largest metadata document read.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A public client (browser app, loopback, native).
    None,
    /// A confidential client: a JWT signed by one of its keys (`jwks` inline or at `jwks_uri`).
    PrivateKeyJwt { jwks: Option<Value>, jwks_uri: Option<String> },
}

/// A client, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// The scopes the client may ask for (its `scope`).
    pub scope: Vec<String>,
    pub auth: Auth,
    pub native: bool,
    /// A loopback development client (no document was fetched).
    pub loopback: bool,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    grant_types: Vec<String>,
    #[serde(default)]
    response_types: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    token_endpoint_auth_signing_alg: Option<String>,
    #[serde(default)]
    application_type: Option<String>,
    #[serde(default)]
    dpop_bound_access_tokens: Option<bool>,
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    jwks_uri: Option<String>,
}

/// What a `client_id` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientId {
    /// A metadata document at this HTTPS URL.
    Document(url::Url),
    /// A loopback client, with the metadata its query gives.
    Loopback(Client),
}

/// Reads a `client_id` (the spec's rules: an HTTPS URL with a path and no fragment, or
/// exactly `http://localhost` with optional `redirect_uri` and `scope` parameters).
pub fn parse_id(id: &str) -> Result<ClientId, String> {
    let url = url::Url::parse(id).map_err(|e| format!("client_id is not a URL: {e}"))?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("client_id may not carry a fragment or credentials".into());
    }
    match url.scheme() {
        "https" => {
            match url.host() {
                Some(url::Host::Domain(d)) if d != "localhost" && !d.ends_with(".localhost") => {}
                _ => return Err("an HTTPS client_id names a domain (not an address, not localhost)".into()),
            }
            Ok(ClientId::Document(url))
        }
        "http" if url.host_str() == Some("localhost") && url.port().is_none() && matches!(url.path(), "" | "/") => {
            let mut redirect_uris = Vec::new();
            let mut scope = None;
            for (k, v) in url.query_pairs() {
                match k.as_ref() {
                    "redirect_uri" => redirect_uris.push(v.into_owned()),
                    "scope" => scope = Some(v.into_owned()),
                    _ => return Err(format!("a loopback client_id takes only redirect_uri and scope, not {k}")),
                }
            }
            if redirect_uris.is_empty() {
                redirect_uris = vec!["http://127.0.0.1/".into(), "http://[::1]/".into()];
            }
            for r in &redirect_uris {
                let u = url::Url::parse(r).map_err(|e| format!("redirect_uri {r}: {e}"))?;
                if u.scheme() != "http" || !matches!(u.host_str(), Some("127.0.0.1") | Some("[::1]")) {
                    return Err(format!("a loopback client redirects to http://127.0.0.1 or http://[::1], not {r}"));
                }
            }
            let scope = scope.unwrap_or_else(|| "atproto".into());
            Ok(ClientId::Loopback(Client {
                id: id.to_owned(),
                name: None,
                redirect_uris,
                scope: scope.split_whitespace().map(str::to_owned).collect(),
                auth: Auth::None,
                native: true,
                loopback: true,
            }))
        }
        _ => Err("client_id must be an https URL (or http://localhost for development)".into()),
    }
}

/// Validates a fetched metadata document for the client `id`.
pub fn validate(id: &url::Url, document: &[u8]) -> Result<Client, String> {
    if document.len() > MAX_METADATA_BYTES {
        return Err(format!("client metadata over {MAX_METADATA_BYTES} bytes"));
    }
    let m: Metadata = serde_json::from_slice(document).map_err(|e| format!("client metadata: {e}"))?;
    if m.client_id != id.as_str() {
        return Err(format!("client metadata names client_id {:?}, not {id}", m.client_id));
    }
    let scope: Vec<String> = m.scope.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
    if !scope.iter().any(|s| s == "atproto") {
        return Err("client metadata's scope must include atproto".into());
    }
    if !m.grant_types.iter().any(|g| g == "authorization_code") {
        return Err("client metadata's grant_types must include authorization_code".into());
    }
    if let Some(other) = m.grant_types.iter().find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token")) {
        return Err(format!("grant type {other} is not supported"));
    }
    if m.response_types != ["code"] {
        return Err("client metadata's response_types must be [\"code\"]".into());
    }
    if m.dpop_bound_access_tokens != Some(true) {
        return Err("client metadata must set dpop_bound_access_tokens: true".into());
    }
    let native = match m.application_type.as_deref() {
        None | Some("web") => false,
        Some("native") => true,
        Some(other) => return Err(format!("application_type {other} is unknown")),
    };
    if m.redirect_uris.is_empty() {
        return Err("client metadata has no redirect_uris".into());
    }
    let host = id.host_str().unwrap_or("");
    for r in &m.redirect_uris {
        let u = url::Url::parse(r).map_err(|e| format!("redirect_uri {r}: {e}"))?;
        if u.fragment().is_some() {
            return Err(format!("redirect_uri {r} has a fragment"));
        }
        let ok = match u.scheme() {
            "https" => true,
            // Native apps: loopback, or a private-use scheme that is the client's domain reversed.
            "http" => native && matches!(u.host_str(), Some("127.0.0.1") | Some("[::1]")),
            scheme => native && scheme.split('.').rev().collect::<Vec<_>>().join(".") == host,
        };
        if !ok {
            return Err(format!("redirect_uri {r} is not allowed for this client"));
        }
    }
    let auth = match m.token_endpoint_auth_method.as_deref() {
        None | Some("none") => Auth::None,
        Some("private_key_jwt") => {
            if m.token_endpoint_auth_signing_alg.as_deref() != Some("ES256") {
                return Err("a private_key_jwt client signs with ES256 (token_endpoint_auth_signing_alg)".into());
            }
            match (&m.jwks, &m.jwks_uri) {
                (Some(jwks), None) if jwks["keys"].as_array().is_some_and(|k| !k.is_empty()) => {}
                (None, Some(uri)) if uri.starts_with("https://") => {}
                _ => {
                    return Err(
                        "a private_key_jwt client gives exactly one of jwks (with keys) or an https jwks_uri".into()
                    );
                }
            }
            if native {
                return Err("a native client cannot keep a secret key: use token_endpoint_auth_method none".into());
            }
            Auth::PrivateKeyJwt { jwks: m.jwks.clone(), jwks_uri: m.jwks_uri.clone() }
        }
        Some(other) => return Err(format!("token_endpoint_auth_method {other} is not supported")),
    };
    Ok(Client {
        id: id.to_string(),
        name: m.client_name,
        redirect_uris: m.redirect_uris,
        scope,
        auth,
        native,
        loopback: false,
    })
}

/// Fetches and validates the document at `id` with `http`, which must be the guarded client
/// (public addresses only, no redirects, bounded in time).
pub async fn fetch(http: &reqwest::Client, id: &url::Url) -> Result<Client, String> {
    let mut res = http
        .get(id.clone())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("fetching client metadata from {id}: {}", crate::service::net::error_chain(&e)))?;
    if !res.status().is_success() {
        return Err(format!("client metadata at {id} answered {}", res.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| format!("reading client metadata: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_METADATA_BYTES {
            return Err(format!("client metadata over {MAX_METADATA_BYTES} bytes"));
        }
    }
    validate(id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(over: Value) -> Vec<u8> {
        let mut m = json!({
            "client_id": "https://app.example/client-metadata.json",
            "client_name": "Example",
            "redirect_uris": ["https://app.example/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "atproto transition:generic",
            "token_endpoint_auth_method": "none",
            "application_type": "web",
            "dpop_bound_access_tokens": true,
        });
        for (k, v) in over.as_object().unwrap() {
            m[k] = v.clone();
        }
        m.to_string().into_bytes()
    }

    #[test]
    fn metadata_documents_are_checked() {
        let id = url::Url::parse("https://app.example/client-metadata.json").unwrap();
        let ok = validate(&id, &doc(json!({}))).unwrap();
        assert_eq!((ok.auth.clone(), ok.native, ok.scope.len()), (Auth::None, false, 2));
        for bad in [
            json!({ "client_id": "https://other.example/m.json" }),
            json!({ "scope": "transition:generic" }),
            json!({ "grant_types": ["implicit"] }),
            json!({ "response_types": ["token"] }),
            json!({ "dpop_bound_access_tokens": false }),
            json!({ "redirect_uris": [] }),
            json!({ "redirect_uris": ["http://app.example/callback"] }),
            json!({ "redirect_uris": ["com.evil:/cb"], "application_type": "native" }),
            json!({ "token_endpoint_auth_method": "client_secret_basic" }),
            json!({ "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256" }),
        ] {
            assert!(validate(&id, &doc(bad.clone())).is_err(), "accepted {bad}");
        }
        let native = validate(
            &id,
            &doc(json!({ "application_type": "native", "redirect_uris": ["example.app:/cb", "http://127.0.0.1/cb"] })),
        );
        assert!(native.unwrap().native);
        let confidential = validate(
            &id,
            &doc(json!({ "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256",
                "jwks": { "keys": [{ "kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "k1" }] } })),
        )
        .unwrap();
        assert!(matches!(confidential.auth, Auth::PrivateKeyJwt { .. }));
        assert!(validate(&id, &vec![b' '; MAX_METADATA_BYTES + 1]).is_err());
    }

    #[test]
    fn client_ids_are_https_documents_or_loopback() {
        assert!(matches!(parse_id("https://app.example/m.json"), Ok(ClientId::Document(_))));
        let ClientId::Loopback(c) = parse_id(
            "http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcb&scope=atproto%20transition%3Ageneric",
        )
        .unwrap() else {
            panic!("a loopback client")
        };
        assert_eq!(c.redirect_uris, vec!["http://127.0.0.1:8080/cb"]);
        assert_eq!(c.scope, vec!["atproto", "transition:generic"]);
        for bad in [
            "http://app.example/m.json",
            "https://127.0.0.1/m.json",
            "https://[::1]/m.json",
            "https://[::ffff:127.0.0.1]/m.json",
            "https://app.example/m.json#x",
            "http://localhost:8080",
            "http://localhost?redirect_uri=https%3A%2F%2Fevil.example%2F",
            "http://localhost?other=1",
            "not a url",
        ] {
            assert!(parse_id(bad).is_err(), "accepted {bad}");
        }
    }
}

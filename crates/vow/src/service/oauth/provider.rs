//! The authorization server: pushed authorization requests, the user's approval, the token
//! endpoint (codes with PKCE, refresh tokens that rotate and end the session when reused),
//! revocation, and the check of DPoP-bound access tokens on every XRPC call.
//!
//! An OAuth session is a row of `sessions`, so it is listed, ended and revoked like any other;
//! its access tokens are the server's ES256 JWTs (`at+jwt`) naming it, bound to the client's
//! DPoP key (`cnf.jkt`, checked against the session's on every use).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::{self, Auth, Client, ClientId};
use super::dpop::{self, DpopError, Nonces, Replays};
use super::requests::Pending;
use crate::service::auth::scope::Grant;
use crate::service::auth::{AccessAuth, jwt, random_code};
use crate::store::db::{self, oauth};

/// How long a pushed request waits for the user.
pub const REQUEST_TTL_SECS: i64 = 5 * 60;
/// How long an authorization code lives.
pub const CODE_TTL_SECS: i64 = 60;
/// Access tokens are short: revocation reaches them through the session check anyway.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
/// Refresh tokens: two weeks for public clients, three months for confidential ones.
pub const PUBLIC_REFRESH_SECS: i64 = 14 * 24 * 60 * 60;
pub const CONFIDENTIAL_REFRESH_SECS: i64 = 90 * 24 * 60 * 60;

/// The transitional scopes (granular permissions, `repo:` and the rest, are offered too; see
/// `service::auth::scope`).
pub const SCOPES: &[&str] = &["atproto", "transition:generic", "transition:chat.bsky", "transition:email"];

/// An OAuth error response (RFC 6749 §5.2): `error`, `error_description`, a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OauthError {
    pub fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self { status, error, description: description.into() }
    }
    fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(400, error, description)
    }
    fn from_dpop(e: DpopError) -> Self {
        match e {
            DpopError::UseNonce => {
                Self::bad("use_dpop_nonce", "Use the server's DPoP nonce (in the DPoP-Nonce header)")
            }
            other => Self::bad("invalid_dpop_proof", other.to_string()),
        }
    }
}

impl From<sqlx::Error> for OauthError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "oauth: database error");
        Self::new(500, "server_error", "database error; see the server log")
    }
}

/// The parameters of an authorization request (pushed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Parameters {
    pub client_id: String,
    #[serde(default)]
    pub response_type: String,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(default)]
    pub code_challenge_method: Option<String>,
    #[serde(default)]
    pub login_hint: Option<String>,
    #[serde(default)]
    pub response_mode: Option<String>,
    #[serde(default)]
    pub client_assertion_type: Option<String>,
    #[serde(default)]
    pub client_assertion: Option<String>,
    /// Whether the client named its redirect URI at PAR (then the token request must too).
    #[serde(default)]
    pub redirect_given: bool,
}

/// The token endpoint's form.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenForm {
    pub grant_type: String,
    pub client_id: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub code_verifier: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub client_assertion_type: Option<String>,
    #[serde(default)]
    pub client_assertion: Option<String>,
}

/// What the request carries for a DPoP check.
pub struct Http<'a> {
    pub method: &'a str,
    /// The full URL, as the client called it (the issuer plus path and query).
    pub url: String,
    pub dpop: Option<&'a str>,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    scope: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    sid: &'a str,
    client_id: &'a str,
    cnf: Value,
}

#[derive(Clone)]
pub struct Provider {
    pub db: sqlx::SqlitePool,
    /// The session tokens' key: it signs access tokens too.
    pub jwk: Arc<atproto::crypto::Keypair>,
    /// This server's public URL: the issuer, and the resource.
    pub issuer: String,
    pub service_did: String,
    pub nonces: Nonces,
    pub replays: Arc<Replays>,
    /// The guarded client (public addresses only, no redirects) for client metadata.
    pub http: reqwest::Client,
    /// Whether client metadata and keys may live on private addresses (development).
    pub allow_private: bool,
    /// Pushed requests and their codes (in memory, bounded).
    requests: super::requests::Requests,
    /// Client assertions seen lately (they live up to five minutes).
    assertions: Arc<Replays>,
    pub clients: moka::sync::Cache<String, Client>,
    /// Challenges handed out for passkey sign-ins, single-use, for five minutes (bounded:
    /// anyone may ask for one).
    login_challenges: moka::sync::Cache<String, ()>,
}

fn hash(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

impl Provider {
    /// `(http, allow_private)`: how client metadata is fetched (the guarded client, and whether
    /// private addresses are allowed). `budget` bounds its caches and replay memories.
    pub fn new(
        db: sqlx::SqlitePool,
        jwk: Arc<atproto::crypto::Keypair>,
        issuer: &str,
        service_did: &str,
        nonce_secret: &[u8],
        (http, allow_private): (reqwest::Client, bool),
        budget: crate::service::bounded::Budget,
    ) -> Self {
        Self {
            db,
            jwk,
            issuer: issuer.trim_end_matches('/').to_owned(),
            service_did: service_did.to_owned(),
            nonces: Nonces::new(nonce_secret),
            replays: Arc::new(Replays::new(budget.of("dpop_replays"))),
            assertions: Arc::new(Replays::with_ttl(
                budget.of("client_assertions"),
                std::time::Duration::from_secs(6 * 60),
            )),
            http,
            allow_private,
            requests: super::requests::Requests::default(),
            clients: moka::sync::Cache::builder()
                .max_capacity(budget.of("oauth_clients"))
                .weigher(|key: &String, c: &Client| {
                    let strings = c.redirect_uris.iter().chain(&c.scope).map(String::len).sum::<usize>();
                    crate::service::bounded::weigh(
                        key.len() + c.id.len() + c.name.as_ref().map_or(0, String::len) + strings + 256,
                    )
                })
                .time_to_live(std::time::Duration::from_secs(10 * 60))
                .build(),
            login_challenges: moka::sync::Cache::builder()
                .max_capacity(budget.of("passkey_challenges"))
                .weigher(|challenge: &String, _: &()| crate::service::bounded::weigh(challenge.len()))
                .time_to_live(std::time::Duration::from_secs(5 * 60))
                .build(),
        }
    }

    /// A fresh challenge for a passkey sign-in (base64url).
    pub fn login_challenge(&self) -> String {
        let challenge = random_code(43);
        self.login_challenges.insert(challenge.clone(), ());
        challenge
    }

    /// Uses up a sign-in challenge; false when it is unknown, used or expired.
    pub fn take_login_challenge(&self, challenge: &str) -> bool {
        self.login_challenges.remove(challenge).is_some()
    }

    /// The nonce to put in every response's `DPoP-Nonce` header.
    pub fn nonce(&self) -> String {
        self.nonces.current(db::unix_now())
    }

    fn check_dpop(&self, http: &Http<'_>, token: Option<&str>) -> Result<dpop::Proof, DpopError> {
        let proof = http.dpop.ok_or(DpopError::Malformed("a DPoP proof is required"))?;
        let req = dpop::Request { method: http.method, url: &http.url, access_token: token };
        let checked = dpop::check(proof, &req, &self.nonces, db::unix_now())?;
        if !self.replays.first_use(&checked.jti) {
            return Err(DpopError::Replayed);
        }
        Ok(checked)
    }

    /// A client by its ID: loopback clients from the ID, others from their (cached) document.
    pub async fn client(&self, id: &str) -> Result<Client, OauthError> {
        match client::parse_id(id).map_err(|e| OauthError::bad("invalid_client", e))? {
            ClientId::Loopback(c) => Ok(c),
            ClientId::Document(url) => {
                if let Some(c) = self.clients.get(id) {
                    return Ok(c);
                }
                crate::service::net::check_url(&url, self.allow_private)
                    .map_err(|e| OauthError::bad("invalid_client", e.to_string()))?;
                let c =
                    client::fetch(&self.http, &url).await.map_err(|e| OauthError::bad("invalid_client_metadata", e))?;
                self.clients.insert(id.to_owned(), c.clone());
                Ok(c)
            }
        }
    }

    /// A confidential client's public keys: inline, or fetched (bounded, through the guarded
    /// client) from its `jwks_uri` and kept as long as its metadata.
    async fn client_keys(&self, client: &Client) -> Result<Value, OauthError> {
        let Auth::PrivateKeyJwt { jwks, jwks_uri } = &client.auth else { return Ok(json!({ "keys": [] })) };
        if let Some(jwks) = jwks {
            return Ok(jwks.clone());
        }
        let uri = jwks_uri.as_deref().unwrap_or("");
        let cache_key = format!("jwks:{uri}");
        if let Some(Client { auth: Auth::PrivateKeyJwt { jwks: Some(keys), .. }, .. }) = self.clients.get(&cache_key) {
            return Ok(keys);
        }
        let refused = |why: String| OauthError::new(401, "invalid_client", format!("the client's jwks_uri: {why}"));
        let url = reqwest::Url::parse(uri).map_err(|e| refused(e.to_string()))?;
        crate::service::net::check_url(&url, self.allow_private).map_err(|e| refused(e.to_string()))?;
        let mut res = self.http.get(url).send().await.map_err(|e| refused(e.to_string()))?;
        if !res.status().is_success() {
            return Err(refused(format!("answered {}", res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| refused(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > client::MAX_METADATA_BYTES {
                return Err(refused("too large".into()));
            }
        }
        let keys: Value = serde_json::from_slice(&body).map_err(|e| refused(e.to_string()))?;
        let mut cached = client.clone();
        cached.auth = Auth::PrivateKeyJwt { jwks: Some(keys.clone()), jwks_uri: None };
        self.clients.insert(cache_key, cached);
        Ok(keys)
    }

    /// Checks a confidential client's `private_key_jwt` assertion.
    async fn authenticate(
        &self,
        client: &Client,
        kind: Option<&str>,
        assertion: Option<&str>,
    ) -> Result<(), OauthError> {
        let Auth::PrivateKeyJwt { .. } = &client.auth else {
            return if assertion.is_some() {
                Err(OauthError::bad("invalid_client", "this client authenticates with none"))
            } else {
                Ok(())
            };
        };
        if kind != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return Err(OauthError::new(401, "invalid_client", "a client assertion (private_key_jwt) is required"));
        }
        let assertion = assertion.ok_or_else(|| OauthError::new(401, "invalid_client", "client_assertion missing"))?;
        let jwks = self.client_keys(client).await?;
        let claims = verify_es256(assertion, &jwks).map_err(|e| OauthError::new(401, "invalid_client", e))?;
        let now = db::unix_now();
        let ok = claims["iss"] == client.id.as_str()
            && claims["sub"] == client.id.as_str()
            && (claims["aud"] == self.issuer.as_str()
                || claims["aud"].as_array().is_some_and(|a| a.iter().any(|v| v == self.issuer.as_str())))
            && claims["exp"].as_i64().is_some_and(|e| e > now && e - now <= 300)
            && claims["iat"].as_i64().is_some_and(|i| (i - now).abs() <= 300);
        if !ok {
            return Err(OauthError::new(
                401,
                "invalid_client",
                "the client assertion's iss, sub, aud or times are wrong",
            ));
        }
        let jti = claims["jti"]
            .as_str()
            .ok_or_else(|| OauthError::new(401, "invalid_client", "client assertion without jti"))?;
        if !self.assertions.first_use(jti) {
            return Err(OauthError::new(401, "invalid_client", "the client assertion was already used"));
        }
        Ok(())
    }

    /// PAR: checks the client, the redirect URI, the scope and PKCE; keeps the request, bound to
    /// the DPoP key that pushed it. Returns `{request_uri, expires_in}`.
    pub async fn par(&self, http: &Http<'_>, p: Parameters) -> Result<Value, OauthError> {
        // Anyone may push requests: each field is bounded, so a stored request is small.
        let too_long = [
            (p.client_id.len(), 2048, "client_id"),
            (p.redirect_uri.as_deref().map_or(0, str::len), 2048, "redirect_uri"),
            (p.scope.as_deref().map_or(0, str::len), 4096, "scope"),
            (p.state.as_deref().map_or(0, str::len), 1024, "state"),
            (p.login_hint.as_deref().map_or(0, str::len), 512, "login_hint"),
            (p.code_challenge.as_deref().map_or(0, str::len), 128, "code_challenge"),
        ];
        if let Some((_, max, name)) = too_long.iter().find(|(len, max, _)| len > max) {
            return Err(OauthError::bad("invalid_request", format!("{name} is longer than {max} bytes")));
        }
        let proof = self.check_dpop(http, None).map_err(OauthError::from_dpop)?;
        let client = self.client(&p.client_id).await?;
        self.authenticate(&client, p.client_assertion_type.as_deref(), p.client_assertion.as_deref()).await?;
        if p.response_type != "code" {
            return Err(OauthError::bad("unsupported_response_type", "response_type must be code"));
        }
        let redirect = match (&p.redirect_uri, client.redirect_uris.as_slice()) {
            (Some(r), uris) if uris.iter().any(|u| u == r) => r.clone(),
            // Loopback clients may use any port on their loopback redirect.
            (Some(r), uris) if client.loopback && uris.iter().any(|u| same_loopback(u, r)) => r.clone(),
            (None, [only]) => only.clone(),
            _ => return Err(OauthError::bad("invalid_request", "redirect_uri is not one the client registered")),
        };
        if p.code_challenge_method.as_deref() != Some("S256") || p.code_challenge.as_deref().is_none_or(str::is_empty) {
            return Err(OauthError::bad("invalid_request", "PKCE with S256 is required"));
        }
        let scope = p.scope.clone().unwrap_or_default();
        let asked: Vec<&str> = scope.split_whitespace().collect();
        if !asked.contains(&"atproto") {
            return Err(OauthError::bad("invalid_scope", "the scope must include atproto"));
        }
        if let Some(bad) = asked.iter().find(|s| !client.scope.iter().any(|c| c == *s)) {
            return Err(OauthError::bad("invalid_scope", format!("the scope {bad} is not in the client's metadata")));
        }
        Grant::parse(&scope).map_err(|e| OauthError::bad("invalid_scope", e))?;
        if matches!(p.response_mode.as_deref(), Some(m) if m != "query" && m != "fragment") {
            return Err(OauthError::bad("invalid_request", "response_mode must be query or fragment"));
        }
        let redirect_given = p.redirect_uri.is_some();
        let stored = Parameters {
            redirect_uri: Some(redirect),
            client_assertion: None,
            client_assertion_type: None,
            redirect_given,
            ..p
        };
        let id = random_code(32);
        let client_id = stored.client_id.clone();
        self.requests.insert(id.clone(), Pending { client_id, params: stored, dpop_jkt: proof.jkt, did: None });
        Ok(json!({ "request_uri": format!("urn:ietf:params:oauth:request_uri:{id}"), "expires_in": REQUEST_TTL_SECS }))
    }

    /// The pending request an authorize page shows, with its client.
    pub async fn pending(
        &self,
        client_id: &str,
        request_uri: &str,
    ) -> Result<(String, Parameters, Client), OauthError> {
        let id = request_uri
            .strip_prefix("urn:ietf:params:oauth:request_uri:")
            .ok_or_else(|| OauthError::bad("invalid_request", "request_uri is not one of this server's"))?;
        let request = self.requests.pending(id).ok_or_else(|| {
            OauthError::bad(
                "invalid_request",
                "the authorization request is unknown, used or expired; start again in the app",
            )
        })?;
        if request.client_id != client_id {
            return Err(OauthError::bad("invalid_request", "the request belongs to another client"));
        }
        let client = self.client(client_id).await?;
        Ok((id.to_owned(), request.params.clone(), client))
    }

    /// Whether `did` already allowed this client this scope.
    pub async fn consented(&self, did: &str, client_id: &str, scope: &str) -> Result<bool, OauthError> {
        let want: std::collections::BTreeSet<&str> = scope.split_whitespace().collect();
        Ok(oauth::consent(&self.db, did, client_id)
            .await?
            .is_some_and(|had| want.iter().all(|s| had.split_whitespace().any(|h| h == *s))))
    }

    /// The user approved: records the consent and returns where to send the browser, with the
    /// code, the state and the issuer.
    pub async fn approve(&self, id: &str, did: &str, params: &Parameters) -> Result<String, OauthError> {
        let code = format!("cod-{}", random_code(40));
        if !self.requests.approve(id, did, hash(&code)) {
            return Err(OauthError::bad("invalid_request", "the authorization request was already answered"));
        }
        oauth::set_consent(&self.db, did, &params.client_id, params.scope.as_deref().unwrap_or("")).await?;
        Ok(self.redirect(params, &[("code", &code)]))
    }

    /// Where to send the browser when the user declines.
    pub fn deny(&self, params: &Parameters) -> String {
        self.redirect(params, &[("error", "access_denied"), ("error_description", "The user declined")])
    }

    fn redirect(&self, params: &Parameters, extra: &[(&str, &str)]) -> String {
        let mut pairs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in extra {
            pairs.append_pair(k, v);
        }
        if let Some(state) = &params.state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("iss", &self.issuer);
        let query = pairs.finish();
        let base = params.redirect_uri.clone().unwrap_or_default();
        let sep = if params.response_mode.as_deref() == Some("fragment") {
            '#'
        } else if base.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{base}{sep}{query}")
    }

    /// The token endpoint: an authorization code (with PKCE, the same client, redirect URI and
    /// DPoP key) or a refresh token (rotated; a reused one ends the whole session).
    pub async fn token(&self, http: &Http<'_>, form: TokenForm) -> Result<Value, OauthError> {
        let proof = self.check_dpop(http, None).map_err(OauthError::from_dpop)?;
        let client = self.client(&form.client_id).await?;
        self.authenticate(&client, form.client_assertion_type.as_deref(), form.client_assertion.as_deref()).await?;
        match form.grant_type.as_str() {
            "authorization_code" => {
                let code = form.code.as_deref().ok_or_else(|| OauthError::bad("invalid_request", "code missing"))?;
                let request = self
                    .requests
                    .take_code(&hash(code))
                    .ok_or_else(|| OauthError::bad("invalid_grant", "the code is unknown, used or expired"))?;
                let params = request.params.clone();
                if request.client_id != client.id {
                    return Err(OauthError::bad("invalid_grant", "the code was issued to another client"));
                }
                // RFC 6749 §4.1.3: required, and equal, when the request named one.
                let wrong = if params.redirect_given {
                    form.redirect_uri != params.redirect_uri
                } else {
                    form.redirect_uri.is_some() && form.redirect_uri != params.redirect_uri
                };
                if wrong {
                    return Err(OauthError::bad(
                        "invalid_grant",
                        "redirect_uri differs from the authorization request's",
                    ));
                }
                if proof.jkt != request.dpop_jkt {
                    return Err(OauthError::bad(
                        "invalid_dpop_proof",
                        "the DPoP key differs from the one that pushed the request",
                    ));
                }
                let verifier = form.code_verifier.as_deref().unwrap_or("");
                if !super::pkce_matches(verifier, params.code_challenge.as_deref().unwrap_or("")) {
                    return Err(OauthError::bad("invalid_grant", "the PKCE code_verifier does not match"));
                }
                let did = request
                    .did
                    .clone()
                    .ok_or_else(|| OauthError::bad("invalid_grant", "the request was not approved"))?;
                let scope = params.scope.unwrap_or_default();
                let sid = random_code(26);
                let refresh_jti = random_code(32);
                let ttl = if matches!(client.auth, Auth::PrivateKeyJwt { .. }) {
                    CONFIDENTIAL_REFRESH_SECS
                } else {
                    PUBLIC_REFRESH_SECS
                };
                let made = oauth::insert_session(
                    &self.db,
                    &sid,
                    &did,
                    &refresh_jti,
                    db::unix_now() + ttl,
                    &client.id,
                    &scope,
                    &proof.jkt,
                )
                .await?;
                if !made {
                    // Taken down or deleted after it approved (codes live in memory).
                    return Err(OauthError::bad(
                        "invalid_grant",
                        "the account that approved the request is taken down or gone",
                    ));
                }
                tracing::info!(%did, client = %client.id, "oauth session started");
                Ok(self.tokens(&did, &sid, &refresh_jti, &scope, &client.id, &proof.jkt))
            }
            "refresh_token" => {
                let token = form
                    .refresh_token
                    .as_deref()
                    .ok_or_else(|| OauthError::bad("invalid_request", "refresh_token missing"))?;
                let (sid, jti) =
                    token.split_once('.').ok_or_else(|| OauthError::bad("invalid_grant", "unknown refresh token"))?;
                let session = oauth::session(&self.db, sid)
                    .await?
                    .ok_or_else(|| OauthError::bad("invalid_grant", "the session has ended"))?;
                if session.oauth_client != client.id {
                    return Err(OauthError::bad("invalid_grant", "the refresh token belongs to another client"));
                }
                if session.dpop_jkt != proof.jkt {
                    return Err(OauthError::bad("invalid_dpop_proof", "the DPoP key differs from the session's"));
                }
                let next = random_code(32);
                if session.refresh_jti != jti || !db::sessions::rotate_refresh(&self.db, sid, jti, &next).await? {
                    // An old refresh token again: someone else may hold it. The session ends.
                    db::sessions::delete(&self.db, sid).await?;
                    tracing::warn!(did = %session.did, client = %client.id, "oauth refresh token reused; session ended");
                    return Err(OauthError::bad(
                        "invalid_grant",
                        "the refresh token was already used; the session has ended",
                    ));
                }
                Ok(self.tokens(&session.did, sid, &next, &session.oauth_scope, &client.id, &proof.jkt))
            }
            other => Err(OauthError::bad("unsupported_grant_type", format!("grant_type {other} is not supported"))),
        }
    }

    fn tokens(&self, did: &str, sid: &str, refresh_jti: &str, scope: &str, client_id: &str, jkt: &str) -> Value {
        let now = db::unix_now();
        let claims = AccessClaims {
            iss: &self.issuer,
            aud: &self.service_did,
            sub: did,
            scope,
            iat: now,
            exp: now + ACCESS_TTL_SECS,
            jti: random_code(26),
            sid,
            client_id,
            cnf: json!({ "jkt": jkt }),
        };
        json!({
            "access_token": jwt::sign(&self.jwk, "at+jwt", &claims),
            "token_type": "DPoP",
            "expires_in": ACCESS_TTL_SECS,
            "refresh_token": format!("{sid}.{refresh_jti}"),
            "scope": scope,
            "sub": did,
        })
    }

    /// Revocation (RFC 7009): a refresh token ends its session; an access token its session
    /// too. Unknown tokens are not an error.
    pub async fn revoke(&self, token: &str, client_id: &str) -> Result<(), OauthError> {
        use subtle::ConstantTimeEq;
        // A refresh token (`sid.jti`, the current one) or an access token of this client.
        let (sid, jti) = match token.split_once('.') {
            Some((sid, jti)) if !token.contains("eyJ") => (Some(sid.to_owned()), Some(jti.to_owned())),
            _ => (jwt::verify(&self.jwk.public_key(), token, db::unix_now()).ok().map(|c| c.sid), None),
        };
        let Some(sid) = sid else { return Ok(()) };
        let Some(session) = oauth::session(&self.db, &sid).await? else { return Ok(()) };
        let own = session.oauth_client == client_id
            && jti.is_none_or(|j| bool::from(j.as_bytes().ct_eq(session.refresh_jti.as_bytes())));
        if own {
            db::sessions::delete(&self.db, &sid).await?;
            tracing::info!(did = %session.did, client = %client_id, "oauth session revoked by its client");
        }
        Ok(())
    }

    /// Forgets a pending request the user declined.
    pub async fn forget(&self, id: &str) -> Result<(), OauthError> {
        self.requests.forget(id);
        Ok(())
    }

    /// Checks a DPoP-bound access token on an XRPC call: the token, its live OAuth session, and
    /// a proof for this request by the session's key.
    pub async fn access(&self, token: &str, http: &Http<'_>) -> Result<AccessAuth, crate::error::XrpcError> {
        use crate::error::XrpcError;
        // Failures are 401 `invalid_token` with the DPoP challenge, which tells the client to
        // refresh (RFC 9449 §7.1).
        let unauthorized = |m: String| XrpcError::new(axum::http::StatusCode::UNAUTHORIZED, "invalid_token", m);
        let claims = jwt::verify(&self.jwk.public_key(), token, db::unix_now()).map_err(|e| match e {
            jwt::JwtError::Expired => unauthorized("The access token has expired".into()),
            other => unauthorized(format!("The access token could not be verified: {other}")),
        })?;
        if claims.aud != self.service_did {
            return Err(XrpcError::invalid_token("Token was issued for another service"));
        }
        let session = oauth::session(&self.db, &claims.sid)
            .await?
            .filter(|s| s.did == claims.sub)
            .ok_or_else(|| unauthorized("The access token's session has ended".into()))?;
        let proof = self.check_dpop(http, Some(token)).map_err(|e| match e {
            DpopError::UseNonce => {
                XrpcError::new(axum::http::StatusCode::UNAUTHORIZED, "use_dpop_nonce", "Use the server's DPoP nonce")
            }
            other => XrpcError::new(axum::http::StatusCode::UNAUTHORIZED, "invalid_dpop_proof", other.to_string()),
        })?;
        if proof.jkt != session.dpop_jkt {
            return Err(XrpcError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "invalid_dpop_proof",
                "The DPoP key is not the token's",
            ));
        }
        // An OAuth session acts as an app password (a privileged one with transition:chat.bsky),
        // narrowed further by its grant's permissions where it has no transition:generic.
        let grant = Grant::parse(&session.oauth_scope)
            .map_err(|e| XrpcError::internal("a stored OAuth scope does not parse", e))?;
        let scope = if grant.chat { jwt::APP_PASS_PRIVILEGED_SCOPE } else { jwt::APP_PASS_SCOPE };
        Ok(AccessAuth { did: claims.sub, session_id: claims.sid, scope: scope.into(), grant: Some(Arc::new(grant)) })
    }

    /// `/.well-known/oauth-protected-resource`.
    pub fn resource_metadata(&self) -> Value {
        json!({
            "resource": self.issuer,
            "authorization_servers": [self.issuer],
            "scopes_supported": SCOPES,
            "bearer_methods_supported": ["header"],
            "resource_documentation": "https://atproto.com",
        })
    }

    /// `/.well-known/oauth-authorization-server`.
    pub fn server_metadata(&self) -> Value {
        let at = |p: &str| format!("{}{p}", self.issuer);
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": at("/oauth/authorize"),
            "token_endpoint": at("/oauth/token"),
            "pushed_authorization_request_endpoint": at("/oauth/par"),
            "revocation_endpoint": at("/oauth/revoke"),
            "require_pushed_authorization_requests": true,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "dpop_signing_alg_values_supported": ["ES256"],
            "scopes_supported": SCOPES,
            "subject_types_supported": ["public"],
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": true,
            "require_request_uri_registration": true,
            "protected_resources": [self.issuer],
        })
    }
}

/// Whether `given` is the loopback redirect `registered` on another port.
fn same_loopback(registered: &str, given: &str) -> bool {
    match (url::Url::parse(registered), url::Url::parse(given)) {
        (Ok(a), Ok(b)) => a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.path() == b.path(),
        _ => false,
    }
}

/// Verifies an ES256 JWT against a JWKS (by `kid`, or the only key); returns its claims.
fn verify_es256(token: &str, jwks: &Value) -> Result<Value, String> {
    use p256::ecdsa::signature::Verifier;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("the client assertion is not a JWT".into());
    };
    let json = |part: &str| -> Result<Value, String> {
        let b = URL_SAFE_NO_PAD.decode(part).map_err(|_| "not base64url".to_owned())?;
        serde_json::from_slice(&b).map_err(|_| "not JSON".to_owned())
    };
    let header = json(h)?;
    if header["alg"] != "ES256" {
        return Err("the client assertion must be ES256".into());
    }
    let keys = jwks["keys"].as_array().ok_or("the client has no keys")?;
    let key = match header["kid"].as_str() {
        Some(kid) => keys.iter().find(|k| k["kid"] == kid),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .ok_or("no key of the client matches the assertion's kid")?;
    let coord = |k: &str| URL_SAFE_NO_PAD.decode(key[k].as_str().unwrap_or("")).map_err(|_| "bad key".to_owned());
    let mut sec1 = vec![0x04];
    sec1.extend(coord("x")?);
    sec1.extend(coord("y")?);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "bad key".to_owned())?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| "bad signature".to_owned())?;
    let sig = p256::ecdsa::Signature::from_slice(&sig).map_err(|_| "bad signature".to_owned())?;
    vk.verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| "the client assertion's signature does not verify".to_owned())?;
    json(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;

    fn provider() -> Provider {
        let db = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
        let jwk = Arc::new(atproto::crypto::Keypair::generate(atproto::crypto::Algorithm::P256));
        let budget = crate::service::bounded::Budget::new(crate::config::DEFAULT_MEMORY_CACHE_BYTES);
        Provider::new(
            db,
            jwk,
            "https://pds.test",
            "did:web:pds.test",
            b"secret",
            (reqwest::Client::new(), false),
            budget,
        )
    }

    fn jwk(key: &SigningKey, kid: &str) -> Value {
        let p = key.verifying_key().to_sec1_point(false);
        let b = p.as_bytes();
        json!({ "kty": "EC", "crv": "P-256", "kid": kid, "x": URL_SAFE_NO_PAD.encode(&b[1..33]), "y": URL_SAFE_NO_PAD.encode(&b[33..65]) })
    }

    fn assertion(key: &SigningKey, kid: &str, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({ "alg": "ES256", "kid": kid }).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig: p256::ecdsa::Signature = key.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[tokio::test]
    async fn confidential_clients_prove_their_key_once_per_assertion() {
        let p = provider();
        let key = SigningKey::from_slice(&[5u8; 32]).unwrap();
        let id = "https://app.example/client-metadata.json";
        let client = Client {
            id: id.into(),
            name: None,
            redirect_uris: vec!["https://app.example/cb".into()],
            scope: vec!["atproto".into()],
            auth: Auth::PrivateKeyJwt { jwks: Some(json!({ "keys": [jwk(&key, "k1")] })), jwks_uri: None },
            native: false,
            loopback: false,
        };
        let kind = Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        let now = db::unix_now();
        let claims = |jti: &str| json!({ "iss": id, "sub": id, "aud": "https://pds.test", "iat": now, "exp": now + 60, "jti": jti });
        let good = assertion(&key, "k1", claims("a1"));
        assert_eq!(p.authenticate(&client, kind, Some(&good)).await, Ok(()));
        let again = p.authenticate(&client, kind, Some(&good)).await.unwrap_err();
        assert_eq!(again.description, "the client assertion was already used");
        let other = SigningKey::from_slice(&[6u8; 32]).unwrap();
        assert!(p.authenticate(&client, kind, Some(&assertion(&other, "k1", claims("a2")))).await.is_err());
        let mut wrong_aud = claims("a3");
        wrong_aud["aud"] = json!("https://elsewhere.test");
        assert!(p.authenticate(&client, kind, Some(&assertion(&key, "k1", wrong_aud))).await.is_err());
        let mut expired = claims("a4");
        expired["exp"] = json!(now - 1);
        assert!(p.authenticate(&client, kind, Some(&assertion(&key, "k1", expired))).await.is_err());
        // Long-lived or undated assertions would outlive the replay memory.
        let mut long = claims("a5");
        long["exp"] = json!(now + 3600);
        assert!(p.authenticate(&client, kind, Some(&assertion(&key, "k1", long))).await.is_err());
        let mut undated = claims("a6");
        undated.as_object_mut().unwrap().remove("iat");
        assert!(p.authenticate(&client, kind, Some(&assertion(&key, "k1", undated))).await.is_err());
        assert!(p.authenticate(&client, None, None).await.is_err(), "a confidential client must authenticate");
        let public = Client { auth: Auth::None, ..client };
        assert!(p.authenticate(&public, None, None).await.is_ok());
    }

    #[tokio::test]
    async fn metadata_documents_name_the_profile() {
        let p = provider();
        let m = p.server_metadata();
        assert_eq!(m["issuer"], "https://pds.test");
        assert_eq!(m["require_pushed_authorization_requests"], true);
        assert_eq!(m["dpop_signing_alg_values_supported"], json!(["ES256"]));
        assert_eq!(p.resource_metadata()["authorization_servers"], json!(["https://pds.test"]));
    }
}

//! Authentication: passwords and session tokens, issued and verified. The extractors handlers
//! use to require them belong to the HTTP edge (`xrpc/extract.rs`).

pub mod codes;
pub mod inbound;
pub mod jwt;
pub mod password;
pub mod scope;

use axum::http::request::Parts;

use crate::error::XrpcError;

/// Refresh lifetime.
pub const REFRESH_TTL_SECS: i64 = 90 * 24 * 60 * 60;

/// A random code from the base32 alphabet the original uses (session ids, token ids, invite
/// codes, app passwords).
pub fn random_code(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..len).map(|_| ALPHABET[(rand::random::<u8>() % 32) as usize] as char).collect()
}

/// The bearer token of a request's `Authorization` header.
pub fn bearer(parts: &Parts) -> Result<&str, XrpcError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| XrpcError::auth_required("Authentication required: send 'Authorization: Bearer <accessJwt>'"))?;
    let value = header.to_str().map_err(|_| XrpcError::invalid_token("Authorization header is not valid text"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| XrpcError::invalid_token("Authorization header must be 'Bearer <token>'"))
}

/// Issues session tokens, and verifies them: signature (once per token, then remembered),
/// scope, audience, expiry, and that the session still exists.
#[derive(Clone)]
pub struct Tokens {
    db: sqlx::SqlitePool,
    /// Signs the tokens (P-256, never a user's key).
    jwk: std::sync::Arc<atproto::crypto::Keypair>,
    key: atproto::crypto::PublicKey,
    service_did: String,
    /// Access token lifetime, in seconds.
    access_ttl: i64,
    /// Tokens whose signature has been verified, by their exact text.
    verified: moka::sync::Cache<String, jwt::Claims>,
    /// Sessions found live, by id: their account and the count of session endings
    /// ([`crate::store::db::sessions::endings`]) read before the database was asked. An
    /// entry holds while no session has ended since, and for [`LIVE_FOR`] at most.
    live: moka::sync::Cache<String, (std::sync::Arc<str>, u64)>,
}

/// How long a session found live is believed without asking again, whatever happens: a
/// bound on staleness should a way of ending sessions ever not be counted. (The reference
/// PDS never revokes an access token before it expires.)
const LIVE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

impl Tokens {
    pub fn new(
        db: sqlx::SqlitePool,
        jwk: std::sync::Arc<atproto::crypto::Keypair>,
        service_did: String,
        access_ttl: i64,
        cache_bytes: u64,
        live_bytes: u64,
    ) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(cache_bytes)
            // The claims are a few short strings.
            .weigher(|token: &String, _: &jwt::Claims| crate::service::bounded::weigh(token.len() + 256))
            .time_to_live(std::time::Duration::from_secs(15 * 60))
            .build();
        let live = moka::sync::Cache::builder()
            .max_capacity(live_bytes)
            .weigher(|id: &String, (did, _): &(std::sync::Arc<str>, u64)| {
                crate::service::bounded::weigh(id.len() + did.len() + 8)
            })
            .time_to_live(LIVE_FOR)
            .build();
        Self { db, key: jwk.public_key(), jwk, service_did, access_ttl, verified, live }
    }

    /// Whether the session `id` of `did` still exists: remembered when nothing has ended
    /// since it was last found, else asked of the database (one query per request was a
    /// tenth of the server's work on a write).
    async fn session_is_live(&self, id: &str, did: &str) -> Result<bool, sqlx::Error> {
        use crate::store::db::sessions;
        // Read before the database is asked: an ending after this read moves the count and
        // voids what the answer is remembered as.
        let endings = sessions::endings();
        // (The account is shared, not copied, on every hit.)
        if let Some((known, at)) = self.live.get(id)
            && &*known == did
            && at == endings
        {
            return Ok(true);
        }
        let live = sessions::is_live(&self.db, id, did).await?;
        if live {
            self.live.insert(id.to_owned(), (did.into(), endings));
        }
        Ok(live)
    }

    /// Starts a session for an account: its row (through `executor`, so it can join the
    /// caller's transaction) and its access and refresh tokens. `app_password` names the app
    /// password it was opened with, and whether that one is privileged. Refused with
    /// `AccountTakedown` when the account has been taken down (or deleted) meanwhile.
    pub async fn issue(
        &self,
        executor: impl sqlx::SqliteExecutor<'_>,
        did: &str,
        app_password: Option<(&str, bool)>,
    ) -> Result<(String, String), XrpcError> {
        let session_id = random_code(26);
        let refresh_jti = random_code(26);
        let expires = crate::store::db::unix_now() + REFRESH_TTL_SECS;
        let name = app_password.map(|(name, _)| name);
        if !crate::store::db::sessions::insert(executor, &session_id, did, name, &refresh_jti, expires).await? {
            // Taken down (or deleted) after the caller read the account.
            return Err(XrpcError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "AccountTakedown",
                "Account has been taken down",
            ));
        }
        Ok(self.mint(did, &session_id, &refresh_jti, app_password.map(|(_, privileged)| privileged)))
    }

    /// A new pair of tokens for an existing session, the refresh token with id `refresh_jti`.
    /// `app_password` is `Some(privileged)` for app-password sessions.
    pub fn mint(&self, did: &str, session_id: &str, refresh_jti: &str, app_password: Option<bool>) -> (String, String) {
        let now = crate::store::db::unix_now();
        let scope = match app_password {
            None => jwt::ACCESS_SCOPE,
            Some(true) => jwt::APP_PASS_PRIVILEGED_SCOPE,
            Some(false) => jwt::APP_PASS_SCOPE,
        };
        let access = jwt::Claims {
            scope: scope.into(),
            sub: did.into(),
            aud: self.service_did.clone(),
            iat: now,
            exp: now + self.access_ttl,
            jti: random_code(26),
            sid: session_id.into(),
        };
        let refresh = jwt::Claims {
            scope: jwt::REFRESH_SCOPE.into(),
            exp: now + REFRESH_TTL_SECS,
            jti: refresh_jti.into(),
            ..access.clone()
        };
        (jwt::sign(&self.jwk, "at+jwt", &access), jwt::sign(&self.jwk, "refresh+jwt", &refresh))
    }

    /// Checks a token of the given scopes and that its session still exists.
    pub async fn check(&self, token: &str, scopes: &[&str]) -> Result<jwt::Claims, XrpcError> {
        let now = crate::store::db::unix_now();
        // A P-256 verification costs more than the rest of a small request; a token whose
        // signature was checked before is recognised by its exact bytes. Expiry and the
        // session are still checked every time.
        let claims = match self.verified.get(token) {
            Some(claims) if claims.exp > now => claims,
            Some(_) => return Err(XrpcError::expired_token("Token has expired")),
            None => {
                let claims = jwt::verify(&self.key, token, now).map_err(|e| match e {
                    jwt::JwtError::Expired => XrpcError::expired_token("Token has expired"),
                    other => XrpcError::invalid_token(format!("Token could not be verified: {other}")),
                })?;
                self.verified.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        if !scopes.contains(&claims.scope.as_str()) {
            return Err(XrpcError::invalid_token("Token has the wrong scope for this endpoint"));
        }
        if claims.aud != self.service_did {
            return Err(XrpcError::invalid_token("Token was issued for another service"));
        }
        if !self.session_is_live(&claims.sid, &claims.sub).await? {
            return Err(XrpcError::expired_token("Token has been revoked"));
        }
        Ok(claims)
    }

    /// Checks an access token (full or app password); returns the account and when the
    /// token expires (unix seconds).
    pub async fn access(&self, token: &str) -> Result<(AccessAuth, i64), XrpcError> {
        let claims =
            self.check(token, &[jwt::ACCESS_SCOPE, jwt::APP_PASS_SCOPE, jwt::APP_PASS_PRIVILEGED_SCOPE]).await?;
        let exp = claims.exp;
        Ok((AccessAuth { did: claims.sub, session_id: claims.sid, scope: claims.scope, grant: None }, exp))
    }
}

/// A request authenticated with an access token (full or app password).
#[derive(Debug, Clone)]
pub struct AccessAuth {
    pub did: String,
    pub session_id: String,
    /// The scope the token carries.
    pub scope: String,
    /// For an OAuth session, what its grant allows (checked on top of the app-password rules
    /// its scope implies).
    pub grant: Option<std::sync::Arc<scope::Grant>>,
}

fn scope_missing(needed: String) -> XrpcError {
    XrpcError::new(
        axum::http::StatusCode::FORBIDDEN,
        "ScopeMissingError",
        format!("Missing required scope \"{needed}\": this app was not given that permission"),
    )
}

impl AccessAuth {
    /// A record write the grant must allow (`action` create, update or delete).
    pub fn require_write(&self, collection: &str, action: &str) -> Result<(), XrpcError> {
        match &self.grant {
            Some(g) if !g.allows_write(collection, action) => {
                Err(scope_missing(format!("repo:{collection}?action={action}")))
            }
            _ => Ok(()),
        }
    }

    /// A blob upload of type `mime`.
    pub fn require_blob(&self, mime: &str) -> Result<(), XrpcError> {
        match &self.grant {
            Some(g) if !g.allows_blob(mime) => Err(scope_missing(format!("blob:{mime}"))),
            _ => Ok(()),
        }
    }

    /// A call of `lxm` at the service `aud` (`did#service`).
    pub fn require_rpc(&self, lxm: &str, aud: &str) -> Result<(), XrpcError> {
        match &self.grant {
            Some(g) if !g.allows_rpc(lxm, aud) => Err(scope_missing(format!("rpc:{lxm}?aud={aud}"))),
            _ => Ok(()),
        }
    }

    /// An identity change (`handle`).
    pub fn require_identity(&self, attr: &str) -> Result<(), XrpcError> {
        match &self.grant {
            Some(g) if !g.allows_identity(attr) => Err(scope_missing(format!("identity:{attr}"))),
            _ => Ok(()),
        }
    }

    /// Account management (invite codes, app passwords, migration status, the signer): for the
    /// account's own sessions and app passwords, never for an OAuth app.
    pub fn require_not_oauth(&self) -> Result<(), XrpcError> {
        match &self.grant {
            Some(_) => Err(scope_missing("transition:generic (without OAuth: sign in with the password)".into())),
            None => Ok(()),
        }
    }

    /// Whether the session may see the account's email address.
    pub fn shows_email(&self) -> bool {
        self.grant.as_ref().is_none_or(|g| g.shows_email())
    }

    /// App-password sessions may not manage app passwords or the account.
    pub fn require_full_access(&self) -> Result<(), XrpcError> {
        if self.scope == jwt::ACCESS_SCOPE {
            Ok(())
        } else {
            Err(XrpcError::forbidden("This action needs a session from the account password, not an app password"))
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer(parts).ok()
}

/// A request authenticated with a refresh token.
#[derive(Debug, Clone)]
pub struct RefreshAuth {
    pub claims: jwt::Claims,
}

/// A request authenticated as the administrator (HTTP basic auth, user `admin`).
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

//! Configuration: command-line flags, the original's `VOW_*` environment variables and a
//! `.env` file in the working directory (loaded before parsing; real env vars win).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// The settings of `vow run`.
/// `VOW_DB_CACHE_BYTES` unless set: SQLite's page caches, all connections together.
pub const DEFAULT_DB_CACHE_BYTES: u64 = 8 << 20;
/// `VOW_MEMORY_CACHE_BYTES` unless set: the in-memory caches, all together.
pub const DEFAULT_MEMORY_CACHE_BYTES: u64 = 32 << 20;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Listen address; `:8080` means every interface, as in the original.
    #[arg(long, env = "VOW_ADDR", default_value = ":8080")]
    pub addr: String,
    /// SQLite database file.
    #[arg(long, env = "VOW_DB_NAME", default_value = "vow.db")]
    pub db_name: PathBuf,
    /// Bytes SQLite may keep in page caches, for all the pool's connections together.
    #[arg(long, env = "VOW_DB_CACHE_BYTES", default_value_t = DEFAULT_DB_CACHE_BYTES)]
    pub db_cache_bytes: u64,
    /// Bytes the in-memory caches may hold, all together (tokens, DID documents, OAuth clients,
    /// replay memories, repo blocks between writes, firehose replay pages); each has a fixed share.
    #[arg(long, env = "VOW_MEMORY_CACHE_BYTES", default_value_t = DEFAULT_MEMORY_CACHE_BYTES)]
    pub memory_cache_bytes: u64,
    /// DID of this PDS (normally `did:web:<hostname>`).
    #[arg(long, env = "VOW_DID")]
    pub did: Option<String>,
    /// Public hostname, no scheme. Also the handle domain suffix.
    #[arg(long, env = "VOW_HOSTNAME")]
    pub hostname: Option<String>,
    /// Public base URL when it is not `https://<hostname>` (e.g. `http://localhost:2583` locally).
    #[arg(long, env = "VOW_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// secp256k1 rotation key (raw 32 bytes); generated if the file does not exist.
    #[arg(long, env = "VOW_ROTATION_KEY_PATH")]
    pub rotation_key_path: Option<PathBuf>,
    /// P-256 private JWK for session tokens; generated if the file does not exist.
    #[arg(long, env = "VOW_JWK_PATH")]
    pub jwk_path: Option<PathBuf>,
    #[arg(long, env = "VOW_CONTACT_EMAIL")]
    pub contact_email: Option<String>,
    /// Password for admin endpoints (HTTP basic auth, user `admin`).
    #[arg(long, env = "VOW_ADMIN_PASSWORD")]
    pub admin_password: Option<String>,
    /// Secret for signing web session cookies.
    #[arg(long, env = "VOW_SESSION_SECRET")]
    pub session_secret: Option<String>,
    #[arg(long, env = "VOW_REQUIRE_INVITE", default_value_t = true, action = clap::ArgAction::Set)]
    pub require_invite: bool,
    /// Relays to ask for crawls (comma or whitespace separated).
    #[arg(long, env = "VOW_RELAYS", default_value = "")]
    pub relays: String,
    /// PLC directory.
    #[arg(long, env = "VOW_PLC_URL", default_value = "https://plc.directory")]
    pub plc_url: String,
    /// Largest accepted request body for JSON endpoints, in bytes.
    #[arg(long, env = "VOW_MAX_JSON_BODY", default_value_t = 1024 * 1024)]
    pub max_json_body: usize,
    /// Largest blob upload accepted, in bytes.
    #[arg(long, env = "VOW_BLOB_UPLOAD_LIMIT", default_value_t = 100 * 1024 * 1024)]
    pub blob_upload_limit: u64,
    /// Directory of the embedded blob store (default: `blobs` next to the database).
    #[arg(long, env = "VOW_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Hours of firehose events kept for cursor replay.
    #[arg(long, env = "VOW_FIREHOSE_RETENTION_HOURS", default_value_t = 72)]
    pub firehose_retention_hours: u64,
    /// Events a firehose subscriber may fall behind before it is cut off with ConsumerTooSlow.
    #[arg(long, env = "VOW_FIREHOSE_BACKLOG", default_value_t = 16_384)]
    pub firehose_backlog: usize,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "VOW_ACCESS_TOKEN_TTL", default_value_t = 2 * 60 * 60)]
    pub access_token_ttl: i64,
    /// Seconds a write waits for the user's signer before failing with SigningTimeout.
    #[arg(long, env = "VOW_SIGNER_TIMEOUT", default_value_t = 30)]
    pub signer_timeout: u64,
    /// Kubo RPC address of an IPFS node for repo blocks and blobs (e.g. `http://127.0.0.1:5001`).
    /// Unset: everything stays in the embedded store (SQLite and the blob directory).
    #[arg(long, env = "VOW_IPFS_NODE_URL")]
    pub ipfs_node_url: Option<String>,
    /// Public IPFS gateway; when set with an IPFS node, getBlob redirects to `<gateway>/ipfs/<cid>`.
    #[arg(long, env = "VOW_IPFS_GATEWAY_URL")]
    pub ipfs_gateway_url: Option<String>,
    /// Seconds any one call to the IPFS node may take (reads pass it on as the node's `timeout`).
    #[arg(long, env = "VOW_IPFS_TIMEOUT", default_value_t = 10)]
    pub ipfs_timeout: u64,
    /// Megabytes of repo blocks cached in memory in front of the IPFS node.
    #[arg(long, env = "VOW_IPFS_CACHE_MB", default_value_t = 64)]
    pub ipfs_cache_mb: u64,
    /// Seconds an uploaded blob may stay unreferenced by any record before it is removed.
    #[arg(long, env = "VOW_BLOB_GRACE_SECS", default_value_t = 6 * 60 * 60)]
    pub blob_grace_secs: u64,
    /// Seconds between two sweeps for such blobs (default: a tenth of the grace period, between
    /// a second and ten minutes).
    #[arg(long, env = "VOW_BLOB_SWEEP_SECS")]
    pub blob_sweep_secs: Option<u64>,
    /// Largest repo CAR `importRepo` accepts, in megabytes.
    #[arg(long, env = "VOW_IMPORT_MAX_MB", default_value_t = 1024)]
    pub import_max_mb: u64,
    /// The AppView `app.bsky.*` calls go to when a request names no service.
    #[arg(long, env = "VOW_BSKY_APP_VIEW_URL", default_value = "https://api.bsky.app")]
    pub bsky_app_view_url: String,
    #[arg(long, env = "VOW_BSKY_APP_VIEW_DID", default_value = "did:web:api.bsky.app")]
    pub bsky_app_view_did: String,
    /// The chat service `chat.bsky.*` calls go to when a request names no service.
    #[arg(long, env = "VOW_BSKY_CHAT_URL", default_value = "https://api.bsky.chat")]
    pub bsky_chat_url: String,
    #[arg(long, env = "VOW_BSKY_CHAT_DID", default_value = "did:web:api.bsky.chat")]
    pub bsky_chat_did: String,
    /// The moderation service `com.atproto.moderation.createReport` goes to.
    #[arg(long, env = "VOW_MOD_SERVICE_URL", default_value = "https://mod.bsky.app")]
    pub mod_service_url: String,
    #[arg(long, env = "VOW_MOD_SERVICE_DID", default_value = "did:plc:ar7c4by46qjdydhdevvrndac")]
    pub mod_service_did: String,
    /// Let proxied calls and service resolution reach private and loopback addresses (local
    /// development and tests only; a `did:web:localhost…` service then resolves over HTTP).
    #[arg(long, env = "VOW_PROXY_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub proxy_allow_private: bool,
    /// Seconds any one proxied call may take, response body included.
    #[arg(long, env = "VOW_PROXY_TIMEOUT", default_value_t = 30)]
    pub proxy_timeout: u64,
    /// Lifetime, in seconds, of the service tokens a connected signer signs in advance for the
    /// AppView's and chat service's read methods, so reading keeps working while no signer is
    /// open (at most 7 days; 0 turns them off and leaves only on-demand tokens).
    #[arg(long, env = "VOW_SERVICE_TOKEN_TTL", default_value_t = 3 * 24 * 60 * 60)]
    pub service_token_ttl: u64,
    /// Until SMTP is set up: a directory each outgoing mail is written to as a file (local
    /// development and tests). Without it, and without SMTP, mail is written to the log.
    #[arg(long, env = "VOW_MAIL_DIR")]
    pub mail_dir: Option<PathBuf>,
    /// The SMTP server mail goes through (the original's settings). Without it, mail is
    /// written to VOW_MAIL_DIR or the log: development only.
    #[arg(long, env = "VOW_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// 465 means implicit TLS, 587 STARTTLS (required), 25 STARTTLS when offered.
    #[arg(long, env = "VOW_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    #[arg(long, env = "VOW_SMTP_USER")]
    pub smtp_user: Option<String>,
    #[arg(long, env = "VOW_SMTP_PASS")]
    pub smtp_pass: Option<String>,
    /// The sender address (default: VOW_CONTACT_EMAIL).
    #[arg(long, env = "VOW_SMTP_EMAIL")]
    pub smtp_email: Option<String>,
    /// The sender name.
    #[arg(long, env = "VOW_SMTP_NAME", default_value = "Vow")]
    pub smtp_name: String,
    /// Overrides what the port implies: implicit, starttls, opportunistic, or none (a relay
    /// on loopback only).
    #[arg(long, env = "VOW_SMTP_TLS")]
    pub smtp_tls: Option<String>,
    /// The SMTP server as one URL instead (`smtp://user:pass@host:587?tls=required`, or
    /// `smtps://…:465`); wins over VOW_SMTP_HOST.
    #[arg(long, env = "VOW_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Serve the OAuth provider and its discovery documents (`false` turns OAuth off: apps then
    /// sign in with passwords and app passwords only).
    #[arg(long, env = "VOW_OAUTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub oauth: bool,
    /// The DNS server handle lookups (`_atproto.<handle>` TXT) and the names of OAuth clients'
    /// metadata hosts ask first, as `ip:port`, instead of the system's resolvers.
    #[arg(long, env = "VOW_DNS_SERVER")]
    pub dns_server: Option<String>,
    /// Rate limits (each `N/WINDOW`, the window in s, m, h or d). Requests with the admin's
    /// credentials are not limited.
    #[arg(long, env = "VOW_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limits: bool,
    /// Every request, per client address.
    #[arg(long, env = "VOW_RATE_LIMIT_GLOBAL", default_value = "3000/5m")]
    pub rate_limit_global: String,
    /// `createSession` per client address.
    #[arg(long, env = "VOW_RATE_LIMIT_SESSION_IP", default_value = "100/5m")]
    pub rate_limit_session_ip: String,
    /// `createSession` per identifier (handle, email or DID), over five minutes and a day.
    #[arg(long, env = "VOW_RATE_LIMIT_SESSION", default_value = "30/5m")]
    pub rate_limit_session: String,
    #[arg(long, env = "VOW_RATE_LIMIT_SESSION_DAY", default_value = "300/1d")]
    pub rate_limit_session_day: String,
    /// `createAccount` per client address.
    #[arg(long, env = "VOW_RATE_LIMIT_SIGNUP", default_value = "100/5m")]
    pub rate_limit_signup: String,
    /// Requests that send mail or check a mailed code (password reset, email confirmation and
    /// update, deletion and PLC operation codes) per client address.
    #[arg(long, env = "VOW_RATE_LIMIT_MAIL", default_value = "30/1h")]
    pub rate_limit_mail: String,
    /// Repo write points per account (a create costs 3, an update 2, a delete 1).
    #[arg(long, env = "VOW_RATE_LIMIT_WRITES_HOUR", default_value = "5000/1h")]
    pub rate_limit_writes_hour: String,
    #[arg(long, env = "VOW_RATE_LIMIT_WRITES_DAY", default_value = "35000/1d")]
    pub rate_limit_writes_day: String,
    /// A separate address serving `/metrics` without credentials (e.g. 127.0.0.1:9090, for a
    /// scraper on a private network); on the main address `/metrics` needs the admin's.
    #[arg(long, env = "VOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Start even though VOW_HOSTNAME is not the hostname existing passkeys were registered
    /// under (their WebAuthn RP ID): those passkeys stop working, and their owners must sign in
    /// with a password and register new ones.
    #[arg(long, env = "VOW_ALLOW_HOSTNAME_CHANGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_hostname_change: bool,
    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For or
    /// X-Real-IP names the client; from anyone else those headers are ignored.
    #[arg(long, env = "VOW_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
}

/// Settings `run` needs, all present and checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    pub db_cache_bytes: u64,
    pub memory_cache_bytes: u64,
    pub service_did: String,
    pub hostname: String,
    pub public_url: String,
    pub rotation_key_path: PathBuf,
    pub jwk_path: PathBuf,
    pub contact_email: String,
    pub admin_password: String,
    pub session_secret: String,
    pub require_invite: bool,
    pub relays: Vec<String>,
    pub plc_url: String,
    pub max_json_body: usize,
    pub signer_timeout: std::time::Duration,
    pub access_token_ttl: i64,
    pub firehose_retention: std::time::Duration,
    pub firehose_backlog: usize,
    pub blob_upload_limit: u64,
    pub blob_dir: PathBuf,
    pub ipfs: Option<IpfsConfig>,
    pub blob_grace: std::time::Duration,
    pub blob_sweep_every: std::time::Duration,
    pub proxy: ProxyConfig,
    /// Largest repo CAR `importRepo` accepts, in bytes.
    pub import_max_bytes: u64,
    /// Outgoing mail.
    pub mail: MailConfig,
    /// Whether the OAuth provider is served.
    pub oauth: bool,
    /// The DNS server for handle lookups, if not the system's.
    pub dns_server: Option<SocketAddr>,
    pub rate_limits: LimitsConfig,
    pub allow_hostname_change: bool,
    pub metrics_addr: Option<SocketAddr>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A service the PDS calls for its users: where it is and the DID its tokens are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    pub url: String,
    pub did: String,
}

/// Proxying to the AppView, the chat and moderation services, and their tokens.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub appview: ServiceTarget,
    pub chat: ServiceTarget,
    pub moderation: ServiceTarget,
    pub allow_private: bool,
    pub timeout: std::time::Duration,
    /// Lifetime of the stored read tokens; zero when they are off.
    pub stored_token_ttl: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct IpfsConfig {
    pub node_url: String,
    pub gateway_url: Option<String>,
    pub timeout: std::time::Duration,
    pub cache_bytes: u64,
}

/// A setting that `run` cannot start without.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required setting {env} (flag --{flag})")]
    Missing { env: &'static str, flag: &'static str },
    #[error("invalid setting {env}: {reason}")]
    Invalid { env: &'static str, reason: String },
}

/// A secret setting; on a public (https) server it must be strong: at least 24 characters and
/// not the example file's placeholder.
fn secret(
    value: &Option<String>,
    env: &'static str,
    flag: &'static str,
    public_url: &str,
) -> Result<String, ConfigError> {
    let value = required(value, env, flag)?;
    if public_url.starts_with("https://") && (value.chars().count() < 24 || value.contains("change-me")) {
        return Err(ConfigError::Invalid {
            env,
            reason: "a public server needs a strong secret: 24 characters or more, not the example's \
                     (e.g. `openssl rand -hex 32`)"
                .into(),
        });
    }
    Ok(value)
}

fn required<T: Clone>(value: &Option<T>, env: &'static str, flag: &'static str) -> Result<T, ConfigError> {
    value.clone().ok_or(ConfigError::Missing { env, flag })
}

impl Config {
    fn limits_config(&self) -> Result<LimitsConfig, ConfigError> {
        let rate =
            |value: &str, env: &'static str| Rate::parse(value).map_err(|reason| ConfigError::Invalid { env, reason });
        Ok(LimitsConfig {
            enabled: self.rate_limits,
            global: rate(&self.rate_limit_global, "VOW_RATE_LIMIT_GLOBAL")?,
            session_ip: rate(&self.rate_limit_session_ip, "VOW_RATE_LIMIT_SESSION_IP")?,
            session_identifier: rate(&self.rate_limit_session, "VOW_RATE_LIMIT_SESSION")?,
            session_identifier_day: rate(&self.rate_limit_session_day, "VOW_RATE_LIMIT_SESSION_DAY")?,
            signup: rate(&self.rate_limit_signup, "VOW_RATE_LIMIT_SIGNUP")?,
            mail: rate(&self.rate_limit_mail, "VOW_RATE_LIMIT_MAIL")?,
            writes_hour: rate(&self.rate_limit_writes_hour, "VOW_RATE_LIMIT_WRITES_HOUR")?,
            writes_day: rate(&self.rate_limit_writes_day, "VOW_RATE_LIMIT_WRITES_DAY")?,
        })
    }

    fn mail_config(&self) -> Result<MailConfig, ConfigError> {
        let some = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let smtp = match (some(&self.smtp_url), some(&self.smtp_host)) {
            (Some(url), _) => Some(SmtpConfig::Url(url)),
            (None, Some(host)) => {
                let tls = match some(&self.smtp_tls).as_deref() {
                    None | Some("auto") => SmtpTls::for_port(self.smtp_port),
                    Some("implicit") => SmtpTls::Implicit,
                    Some("starttls") => SmtpTls::StartTls,
                    Some("opportunistic") => SmtpTls::Opportunistic,
                    Some("none") => SmtpTls::None,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            env: "VOW_SMTP_TLS",
                            reason: format!("{other:?} is not one of implicit, starttls, opportunistic, none"),
                        });
                    }
                };
                Some(SmtpConfig::Parts {
                    host,
                    port: self.smtp_port,
                    user: some(&self.smtp_user),
                    pass: some(&self.smtp_pass),
                    tls,
                })
            }
            (None, None) => None,
        };
        let from_email = some(&self.smtp_email)
            .or_else(|| some(&self.contact_email))
            .ok_or(ConfigError::Missing { env: "VOW_SMTP_EMAIL", flag: "smtp-email" })?;
        // Mail written to the log is for a developer on this machine only.
        let local = self.public_url.as_deref().is_some_and(|u| u.starts_with("http://"));
        Ok(MailConfig {
            smtp,
            dir: self.mail_dir.clone(),
            from_email,
            from_name: self.smtp_name.clone(),
            log_when_unset: local,
        })
    }

    /// Checks that everything `run` needs is set.
    pub fn server(&self) -> Result<ServerConfig, ConfigError> {
        let hostname = required(&self.hostname, "VOW_HOSTNAME", "hostname")?;
        let addr = parse_addr(&self.addr).map_err(|reason| ConfigError::Invalid { env: "VOW_ADDR", reason })?;
        let public_url = self.public_url.clone().unwrap_or_else(|| format!("https://{hostname}"));
        Ok(ServerConfig {
            addr,
            db_path: self.db_name.clone(),
            db_cache_bytes: self.db_cache_bytes,
            memory_cache_bytes: self.memory_cache_bytes,
            service_did: required(&self.did, "VOW_DID", "did")?,
            public_url: public_url.trim_end_matches('/').to_owned(),
            rotation_key_path: required(&self.rotation_key_path, "VOW_ROTATION_KEY_PATH", "rotation-key-path")?,
            jwk_path: required(&self.jwk_path, "VOW_JWK_PATH", "jwk-path")?,
            contact_email: required(&self.contact_email, "VOW_CONTACT_EMAIL", "contact-email")?,
            admin_password: secret(&self.admin_password, "VOW_ADMIN_PASSWORD", "admin-password", &public_url)?,
            session_secret: secret(&self.session_secret, "VOW_SESSION_SECRET", "session-secret", &public_url)?,
            require_invite: self.require_invite,
            relays: self.relays.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            plc_url: self.plc_url.trim_end_matches('/').to_owned(),
            max_json_body: self.max_json_body,
            signer_timeout: std::time::Duration::from_secs(self.signer_timeout.clamp(1, 600)),
            access_token_ttl: self.access_token_ttl.clamp(1, 24 * 60 * 60),
            firehose_retention: std::time::Duration::from_secs(self.firehose_retention_hours.max(1) * 3600),
            firehose_backlog: self.firehose_backlog.clamp(1, 1 << 20),
            blob_upload_limit: self.blob_upload_limit,
            blob_dir: self.blob_dir.clone().unwrap_or_else(|| {
                self.db_name.parent().map(|p| p.join("blobs")).unwrap_or_else(|| PathBuf::from("blobs"))
            }),
            ipfs: self.ipfs_node_url.as_deref().filter(|u| !u.is_empty()).map(|url| IpfsConfig {
                node_url: url.trim_end_matches('/').to_owned(),
                gateway_url: self
                    .ipfs_gateway_url
                    .as_deref()
                    .filter(|u| !u.is_empty())
                    .map(|u| u.trim_end_matches('/').to_owned()),
                timeout: std::time::Duration::from_secs(self.ipfs_timeout.clamp(1, 600)),
                cache_bytes: self.ipfs_cache_mb * 1024 * 1024,
            }),
            blob_grace: std::time::Duration::from_secs(self.blob_grace_secs.max(1)),
            blob_sweep_every: std::time::Duration::from_secs(
                self.blob_sweep_secs.unwrap_or(self.blob_grace_secs / 10).clamp(1, 600),
            ),
            import_max_bytes: self.import_max_mb.max(1) * 1024 * 1024,
            mail: self.mail_config()?,
            oauth: self.oauth,
            dns_server: match self.dns_server.as_deref().filter(|d| !d.is_empty()) {
                None => None,
                Some(d) => Some(d.parse().map_err(|e| ConfigError::Invalid {
                    env: "VOW_DNS_SERVER",
                    reason: format!("{d:?} is not ip:port ({e})"),
                })?),
            },
            rate_limits: self.limits_config()?,
            allow_hostname_change: self.allow_hostname_change,
            metrics_addr: match self.metrics_addr.as_deref().filter(|a| !a.is_empty()) {
                None => None,
                Some(a) => {
                    Some(parse_addr(a).map_err(|reason| ConfigError::Invalid { env: "VOW_METRICS_ADDR", reason })?)
                }
            },
            trusted_proxies: self
                .trusted_proxies
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| ConfigError::Invalid {
                            env: "VOW_TRUSTED_PROXIES",
                            reason: format!("{p:?} is not an address or CIDR range"),
                        })
                })
                .collect::<Result<_, _>>()?,
            proxy: ProxyConfig {
                appview: target(&self.bsky_app_view_url, &self.bsky_app_view_did, "VOW_BSKY_APP_VIEW")?,
                chat: target(&self.bsky_chat_url, &self.bsky_chat_did, "VOW_BSKY_CHAT")?,
                moderation: target(&self.mod_service_url, &self.mod_service_did, "VOW_MOD_SERVICE")?,
                allow_private: self.proxy_allow_private,
                timeout: std::time::Duration::from_secs(self.proxy_timeout.clamp(1, 600)),
                stored_token_ttl: std::time::Duration::from_secs(self.service_token_ttl.min(7 * 24 * 60 * 60)),
            },
            hostname,
        })
    }
}

fn target(url: &str, did: &str, env: &'static str) -> Result<ServiceTarget, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { env, reason };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("_URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("_URL {url:?} is not an http(s) URL")));
    }
    atproto::syntax::Did::new(did).map_err(|e| invalid(format!("_DID {did:?}: {e}")))?;
    Ok(ServiceTarget { url: url.trim_end_matches('/').to_owned(), did: did.to_owned() })
}

fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_owned() };
    full.parse().map_err(|e| format!("'{addr}': {e}"))
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// TLS from the first byte (port 465).
    Implicit,
    /// STARTTLS, required (port 587, and any other port unless told otherwise).
    StartTls,
    /// STARTTLS when the server offers it (port 25).
    Opportunistic,
    /// None: for a relay on loopback only.
    None,
}

impl SmtpTls {
    /// The mode a port implies.
    pub fn for_port(port: u16) -> Self {
        match port {
            465 => Self::Implicit,
            25 => Self::Opportunistic,
            _ => Self::StartTls,
        }
    }
}

/// Where the SMTP server is and how to log in.
#[derive(Debug, Clone)]
pub enum SmtpConfig {
    Parts {
        host: String,
        port: u16,
        user: Option<String>,
        pass: Option<String>,
        tls: SmtpTls,
    },
    /// `smtp://user:pass@host:port` (STARTTLS when offered; `?tls=required` to insist) or
    /// `smtps://…` (implicit TLS).
    Url(String),
}

/// Mail settings, checked.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub smtp: Option<SmtpConfig>,
    /// Without SMTP: a directory for the messages (development, tests).
    pub dir: Option<PathBuf>,
    pub from_email: String,
    pub from_name: String,
    /// Without SMTP or a directory, write mail to the log (a local, plain-HTTP server) rather
    /// than refuse what needs mail.
    pub log_when_unset: bool,
}

#[cfg(test)]
mod mail_tests {
    use super::SmtpTls;

    #[test]
    fn ports_imply_their_tls() {
        assert_eq!(SmtpTls::for_port(465), SmtpTls::Implicit);
        assert_eq!(SmtpTls::for_port(587), SmtpTls::StartTls);
        assert_eq!(SmtpTls::for_port(25), SmtpTls::Opportunistic);
        assert_eq!(SmtpTls::for_port(2525), SmtpTls::StartTls);
    }
}

/// A limit: `limit` units per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub window: std::time::Duration,
}

impl Rate {
    /// Reads `N/WINDOW` with the window in seconds, minutes, hours or days (`3000/5m`).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let (n, w) = s.split_once('/').ok_or_else(|| format!("{s:?} is not N/WINDOW (e.g. 100/5m)"))?;
        let limit: u32 = n.trim().parse().map_err(|_| format!("{n:?} is not a count"))?;
        let w = w.trim();
        let (num, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
        let num: u64 = if num.is_empty() { 1 } else { num.parse().map_err(|_| format!("{w:?} is not a window"))? };
        let secs = match unit {
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => return Err(format!("unknown window unit {other:?} (s, m, h or d)")),
        };
        if limit == 0 || num == 0 {
            return Err(format!("{s:?}: the count and the window must be above zero"));
        }
        Ok(Rate { limit, window: std::time::Duration::from_secs(num * secs) })
    }
}

/// The configured policies.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub enabled: bool,
    /// Every request, per address.
    pub global: Rate,
    /// `createSession` per address, and per identifier (short and daily).
    pub session_ip: Rate,
    pub session_identifier: Rate,
    pub session_identifier_day: Rate,
    /// `createAccount` per address.
    pub signup: Rate,
    /// Requests that send mail (password reset, email confirmation and update, deletion and
    /// PLC operation codes) per address.
    pub mail: Rate,
    /// Repo write points per account.
    pub writes_hour: Rate,
    pub writes_day: Rate,
}

#[cfg(test)]
mod env_example_tests {
    /// `.env.example` names every setting `vow run` reads, and nothing else (besides the two
    /// the command line reads): the file cannot drift from the code.
    #[test]
    fn the_env_example_documents_every_setting() {
        use clap::Args;
        let text = include_str!("../../../.env.example");
        let documented: std::collections::BTreeSet<String> = text
            .lines()
            .map(|l| l.trim_start_matches('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| k.starts_with("VOW_") && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .map(str::to_owned)
            .collect();
        let cmd = super::Config::augment_args(clap::Command::new("run"));
        let settings: std::collections::BTreeSet<String> =
            cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
        assert!(settings.len() > 40 && settings.contains("VOW_SMTP_HOST"), "the settings were not read: {settings:?}");
        let missing: Vec<_> = settings.difference(&documented).collect();
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
        let extra: Vec<_> = documented
            .difference(&settings)
            .filter(|k| !["VOW_LOG_LEVEL", "VOW_LOG_FORMAT", "VOW_ADMIN_URL"].contains(&k.as_str()))
            .collect();
        assert!(extra.is_empty(), ".env.example names settings the code does not read: {extra:?}");
    }
}

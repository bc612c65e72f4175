//! The application's composition: every service, built once from the configuration and
//! shared by the HTTP edge. Only the edge (router, XRPC handlers, web pages, well-known
//! routes, the CLI that starts it) knows this type; services take their own parts.

use std::sync::Arc;

use atproto::crypto::Keypair;
use atproto::syntax::TidGenerator;
use sqlx::SqlitePool;

use crate::config::ServerConfig;
use crate::service::identity::plc::PlcClient;
use crate::service::repo::writer::RepoLocks;
use crate::service::signer::SignerHub;
use crate::store::blocks::{Blocks, EmbeddedStore, IpfsStore};

/// Everything handlers share, behind one `Arc`: the router clones the state for every request
/// and every middleware that takes it, and one reference count is all a clone should cost.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services and shared parts, built once.
pub struct Services {
    pub config: Arc<ServerConfig>,
    pub db: SqlitePool,
    pub rotation_key: Arc<Keypair>,
    pub plc: PlcClient,
    pub http: reqwest::Client,
    pub tids: Arc<TidGenerator>,
    pub blocks: Blocks,
    pub signers: Arc<SignerHub>,
    pub repo_locks: Arc<RepoLocks>,
    pub lexicons: &'static atproto::lexicon::Catalog,
    pub firehose: Arc<crate::service::firehose::Firehose>,
    pub blob_store: crate::service::blobs::BlobStore,
    /// Verifies session tokens.
    pub tokens: crate::service::auth::Tokens,
    /// The clean-up of unreferenced blobs, which uploads hold off.
    pub blob_sweep: crate::service::blobs::BlobSweep,
    /// The write pipeline, built from the parts above.
    pub writer: crate::service::repo::writer::RepoWriter,
    /// Key registration and identity operations, built from the parts above.
    pub handover: crate::service::identity::handover::Handover,
    /// Calls to the AppView and other services, with tokens from the user's signer.
    pub proxy: crate::service::proxy::Proxy,
    /// Outgoing mail.
    pub mailer: crate::service::mail::Mailer,
    /// The OAuth authorization server (routed unless `VOW_OAUTH=false`).
    pub oauth: crate::service::oauth::provider::Provider,
    /// Deactivation, takedown, deletion.
    pub lifecycle: crate::service::lifecycle::Lifecycle,
    /// Handle-to-DID resolution (DNS, HTTPS).
    pub handles: crate::service::identity::handle::HandleResolver,
    /// Rate limits per client address, identifier and account.
    pub limits: crate::service::ratelimit::RateLimits,
    /// What `/metrics` renders.
    pub metrics: crate::service::metrics::Metrics,
}

impl AppState {
    /// Builds every service (inside the runtime: some start workers).
    pub fn new(config: ServerConfig, db: SqlitePool, rotation_key: Keypair, jwk: Keypair) -> Result<Self, String> {
        Ok(Self(Arc::new(Services::new(config, db, rotation_key, jwk)?)))
    }
}

impl Services {
    fn new(config: ServerConfig, db: SqlitePool, rotation_key: Keypair, jwk: Keypair) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vow/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .expect("HTTP client builds");
        let plc = PlcClient::new(&config.plc_url, http.clone());
        let files = crate::service::blobs::BlobFiles::new(config.blob_dir.clone());
        let (blocks, blob_store) = match &config.ipfs {
            None => (Blocks::Embedded(EmbeddedStore::new(db.clone())), crate::service::blobs::BlobStore::Files(files)),
            Some(ipfs) => {
                let kubo = crate::store::ipfs::Kubo::new(&ipfs.node_url, ipfs.timeout);
                (
                    Blocks::Ipfs(IpfsStore::new(kubo.clone(), ipfs.cache_bytes)),
                    crate::service::blobs::BlobStore::Ipfs { kubo, staging: files, gateway: ipfs.gateway_url.clone() },
                )
            }
        };
        let budget = crate::service::bounded::Budget::new(config.memory_cache_bytes);
        let firehose = crate::service::firehose::Firehose::start(
            db.clone(),
            config.firehose_retention,
            config.firehose_backlog,
            budget.of("firehose_pages"),
        );
        let signers = Arc::new(SignerHub::default());
        let repo_locks = Arc::new(RepoLocks::new(budget.of("repo_blocks")));
        let tids = Arc::new(TidGenerator::with_random_clock_id());
        let lexicons = atproto::lexicon::Catalog::bundled();
        let writer = crate::service::repo::writer::RepoWriter {
            db: db.clone(),
            blocks: blocks.clone(),
            signers: signers.clone(),
            firehose: firehose.clone(),
            locks: repo_locks.clone(),
            lexicons,
            tids: tids.clone(),
            signer_timeout: config.signer_timeout,
            stores: Default::default(),
            commits: Arc::new(crate::store::db::commits::CommitStore::open(
                &config.db_path,
                crate::store::db::cache_kib_per_connection(config.db_cache_bytes),
            )?),
        };
        let rotation_key = Arc::new(rotation_key);
        let jwk = Arc::new(jwk); // the session tokens' key: `tokens` owns it
        let handover = crate::service::identity::handover::Handover {
            db: db.clone(),
            plc: plc.clone(),
            rotation_key: rotation_key.clone(),
            firehose: firehose.clone(),
            signers: signers.clone(),
            locks: repo_locks.clone(),
            signer_timeout: config.signer_timeout,
        };
        let service_tokens = crate::service::proxy::tokens::ServiceTokens::new(
            db.clone(),
            signers.clone(),
            config.signer_timeout,
            config.proxy.stored_token_ttl,
            &config.proxy.appview.did,
            &config.proxy.chat.did,
            budget,
        );
        let proxy = crate::service::proxy::Proxy::new(config.proxy.clone(), plc.clone(), service_tokens, budget);
        let blob_sweep = crate::service::blobs::BlobSweep::new(db.clone(), blob_store.clone(), config.blob_grace);
        let mailer = crate::service::mail::Mailer::start(&config.mail)?;
        crate::service::signer::set_account_page(format!("{}/account", config.public_url.trim_end_matches('/')));
        // Outbound calls users' requests cause (client metadata, handles over HTTPS) resolve with
        // the configured DNS server, if any.
        let guarded = crate::service::net::client(
            config.proxy.allow_private,
            std::time::Duration::from_secs(5),
            config.dns_server.and_then(|server| crate::service::net::dns_resolver(Some(server))),
        );
        let oauth = crate::service::oauth::provider::Provider::new(
            db.clone(),
            jwk.clone(),
            &config.public_url,
            &config.service_did,
            format!("oauth-nonce:{}", config.session_secret).as_bytes(),
            (guarded.clone(), config.proxy.allow_private),
            budget,
        );
        let handles = crate::service::identity::handle::HandleResolver::new(config.dns_server, guarded);
        let lifecycle = crate::service::lifecycle::Lifecycle {
            db: db.clone(),
            blocks: blocks.clone(),
            blob_sweep: blob_sweep.clone(),
            firehose: firehose.clone(),
            locks: repo_locks.clone(),
        };
        let limits = crate::service::ratelimit::RateLimits::new(&config.rate_limits);
        limits.start_sweeper();
        Ok(Self {
            metrics: crate::service::metrics::Metrics::install(),
            limits,
            oauth,
            lifecycle,
            mailer,
            handles,
            firehose,
            writer,
            handover,
            proxy,
            blob_store,
            blob_sweep,
            tokens: crate::service::auth::Tokens::new(
                db.clone(),
                jwk.clone(),
                config.service_did.clone(),
                config.access_token_ttl,
                budget.of("verified_tokens"),
                budget.of("live_sessions"),
            ),
            config: Arc::new(config),
            blocks,
            db,
            rotation_key,
            plc,
            http,
            tids,
            signers,
            repo_locks,
            lexicons,
        })
    }
}

impl AppState {
    /// What a new signer connection of `did` (whose key is `signing_key`) starts once it is
    /// registered: re-signing the head if another key signed it, and the read tokens for when
    /// no signer is open, signed now and kept fresh while it is.
    pub fn on_signer_ready(&self, did: &str, signing_key: Option<&str>) -> impl FnOnce() + Send + 'static {
        let resign = crate::service::repo::writer::resign_when_ready(self.writer.clone(), did.to_owned());
        let key = signing_key.and_then(|k| atproto::crypto::PublicKey::from_did_key(k).ok());
        let (tokens, did) = (self.proxy.tokens.clone(), did.to_owned());
        move || {
            resign();
            if let Some(key) = key {
                tokens.keep_fresh(did, key);
            }
        }
    }

    /// The WebAuthn relying party: the hostname as RP ID, the public URL as origin.
    pub fn relying_party(&self) -> crate::service::webauthn::RelyingParty {
        crate::service::webauthn::RelyingParty {
            id: self.config.hostname.clone(),
            origin: self.config.public_url.trim_end_matches('/').to_owned(),
        }
    }
}

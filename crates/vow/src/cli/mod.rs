//! The `vow` command line.

mod admin;
mod backup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "vow", version, about = "A Bring-Your-Own-Key Personal Data Server for the AT Protocol")]
struct Cli {
    /// Log filter (`info`, `debug`, `vow=debug,warn`, ...).
    #[arg(long, env = "VOW_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    /// Log lines as `text` (for people) or `json` (one object per line, for log collectors).
    #[arg(long, env = "VOW_LOG_FORMAT", default_value = "text", global = true, value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

/// The database of a PDS that already exists: the commands that change one never make one.
#[derive(Debug, clap::Args)]
struct ExistingDb {
    /// The running server's SQLite database file (its `VOW_DB_NAME`).
    #[arg(long, env = "VOW_DB_NAME", default_value = "vow.db")]
    db_name: PathBuf,
}

impl ExistingDb {
    async fn open(&self) -> Result<sqlx::SqlitePool, String> {
        let path = &self.db_name;
        if !path.is_file() {
            return Err(format!(
                "no database at {}: point VOW_DB_NAME (or --db-name) at the running server's database",
                std::path::absolute(path).unwrap_or_else(|_| path.clone()).display()
            ));
        }
        crate::store::db::open(path).await.map_err(|e| format!("database {}: {e}", path.display()))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the PDS.
    Run(Box<Config>),
    /// Create an invite code.
    CreateInviteCode {
        #[command(flatten)]
        db: ExistingDb,
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Account the code belongs to.
        #[arg(long = "for")]
        for_account: Option<String>,
    },
    /// Set a new random password for an account and print it; its sessions end (within 2 s on
    /// a running server).
    ResetPassword {
        #[command(flatten)]
        db: ExistingDb,
        #[arg(long)]
        did: String,
    },
    /// Write a new secp256k1 rotation key.
    CreateRotationKey {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write a new P-256 private JWK.
    CreatePrivateJwk {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Sign an account's commits from a key file (created if missing): for bots and tests.
    Signer {
        /// The PDS URL, e.g. https://pds.example.
        #[arg(long)]
        pds: String,
        /// Handle, email or DID of the account.
        #[arg(long)]
        identifier: String,
        /// The account password (needed to register the key the first time).
        #[arg(long, env = "VOW_SIGNER_PASSWORD")]
        password: String,
        /// File holding the raw 32-byte secp256k1 private key.
        #[arg(long)]
        key_file: PathBuf,
        /// Optional did:key to add as a second rotation key when registering.
        #[arg(long)]
        recovery_key: Option<String>,
        /// The PLC directory, asked directly for the DID's state before a PLC operation is signed.
        #[arg(long, env = "VOW_PLC_URL", default_value = "https://plc.directory")]
        plc: String,
        /// Sign PLC operations that change the DID's signing key or rotation keys, or tombstone it,
        /// and service tokens that can move the account. Without it they are refused.
        #[arg(long)]
        approve_identity: bool,
        /// With --approve-identity: also sign operations that remove this signer's own key, after
        /// which it can no longer undo anything.
        #[arg(long, requires = "approve_identity")]
        approve_key_removal: bool,
    },
    /// Change your DID with only your key, without any PDS (Vow need not be running).
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Manage accounts on the running server (through its admin API).
    #[command(subcommand)]
    Account(admin::AccountCommand),
    /// Check what Vow depends on (configuration, database, disk, DNS, the public URL, the PLC
    /// directory, the IPFS node, SMTP, relays): one line per check, and what to change.
    Doctor {
        #[command(flatten)]
        config: Box<Config>,
        /// Also send a test mail to this address.
        #[arg(long)]
        mail_to: Option<String>,
    },
    /// Take a consistent backup into DIR (a new directory) while Vow runs: the database, the
    /// embedded store's blob files, the key files, and on IPFS the CIDs to pin again.
    Backup {
        dir: PathBuf,
        #[command(flatten)]
        paths: backup::Paths,
    },
    /// Bring a backup back, with Vow stopped; on IPFS the node must hold the blocks (back it
    /// up with the node), and they are pinned again.
    Restore {
        dir: PathBuf,
        #[command(flatten)]
        paths: backup::Paths,
        /// Replace an existing database and key files.
        #[arg(long)]
        force: bool,
    },
    /// Write the leave page (move or recover a DID with your own key, talking only to the PLC
    /// directory) as static files into DIR, to serve from any web server on this hostname.
    LeavePage {
        dir: PathBuf,
        #[arg(long, env = "VOW_PLC_URL", default_value = "https://plc.directory")]
        plc: String,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Point the DID at another PDS, signed by the key in `--key-file` (the `vow signer` key
    /// file, a rotation key of the DID). The PDS endpoint is all that changes.
    SetPds {
        /// File holding the raw 32-byte secp256k1 private key.
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        did: String,
        /// The new PDS, e.g. https://pds.example.
        #[arg(long)]
        pds: String,
        /// For a PDS that signs with a key of its own: its key for the account, as a did:key
        /// (from its getRecommendedDidCredentials). The rotation keys stay yours.
        #[arg(long)]
        signing_key: Option<String>,
        /// The new PDS's rotation key, if it asks for one (the reference PDS does), as a
        /// did:key: added after yours, which keeps the first rank.
        #[arg(long)]
        add_rotation_key: Option<String>,
        #[arg(long, env = "VOW_PLC_URL", default_value = "https://plc.directory")]
        plc: String,
    },
    /// Print a service-auth token signed by the key in `--key-file` (the DID's #atproto key),
    /// e.g. for another PDS's createAccount while your old PDS is gone.
    ServiceAuth {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        did: String,
        /// The service's DID (describeServer's `did`).
        #[arg(long)]
        aud: String,
        #[arg(long, default_value = "com.atproto.server.createAccount")]
        lxm: String,
        /// Lifetime in seconds (at most an hour).
        #[arg(long, default_value_t = 300)]
        secs: i64,
    },
    /// Install a new signing key (the did:key of a new passkey's key, or of a new `vow signer`
    /// key file), signed by the key in `--key-file`: your recovery key, after a lost passkey or
    /// a misused key. Register the new key on your PDS afterwards.
    SetKey {
        /// File holding the raw 32-byte secp256k1 private key (the recovery key).
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        did: String,
        /// The new key, as a did:key.
        #[arg(long)]
        new_key: String,
        #[arg(long, env = "VOW_PLC_URL", default_value = "https://plc.directory")]
        plc: String,
    },
}

pub fn main() -> ExitCode {
    crate::service::bounded::tune_allocators();
    // `.env` first, so real environment variables and flags override it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    install_logging(&cli.log_level, &cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(|| {
            crate::service::bounded::on_worker_park();
        })
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The log (text or JSON on stderr, filtered by the level) and, beside it and unfiltered by
/// that level, the layer that turns the pool's acquire events into metrics.
fn install_logging(level: &str, format: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},tower_http=info"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        logs.json().with_current_span(true).with_span_list(false).with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let pool_waits = crate::service::metrics::PoolWaits.with_filter(crate::service::metrics::pool_wait_filter());
    tracing_subscriber::registry().with(logs).with(pool_waits).init();
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run(config) => serve(*config).await,
        Command::Signer {
            pds,
            identifier,
            password,
            key_file,
            recovery_key,
            plc,
            approve_identity,
            approve_key_removal,
        } => {
            crate::service::signer::client::run(crate::service::signer::client::Options {
                pds: &pds,
                identifier: &identifier,
                password: &password,
                key_file: &key_file,
                recovery_key: recovery_key.as_deref(),
                plc: &plc,
                approve_identity,
                approve_key_removal,
            })
            .await
        }
        Command::Account(command) => admin::run(command).await,
        Command::LeavePage { dir, plc } => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            for (name, text) in crate::http::web::leave_page_files(&plc) {
                let path = dir.join(name);
                std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            println!(
                "wrote {} (open leave.html through a web server; passkeys work on this PDS's hostname)",
                dir.display()
            );
            Ok(())
        }
        Command::Identity(IdentityCommand::ServiceAuth { key_file, did, aud, lxm, secs }) => {
            let (key, _) = identity_tools(&key_file, "https://plc.directory")?;
            println!("{}", crate::service::identity::leave::service_token(&key, &did, &aud, &lxm, secs.clamp(1, 3600)));
            Ok(())
        }
        Command::Identity(IdentityCommand::SetPds { key_file, did, pds, signing_key, add_rotation_key, plc }) => {
            let (key, plc) = identity_tools(&key_file, &plc)?;
            let keys = crate::service::identity::leave::PdsKeys {
                signing_key: signing_key.as_deref(),
                rotation_key: add_rotation_key.as_deref(),
            };
            let op = crate::service::identity::leave::set_pds(&plc, &key, &did, &pds, keys).await?;
            println!("{did} now names {pds} as its PDS (operation {})", op.cid());
            Ok(())
        }
        Command::Identity(IdentityCommand::SetKey { key_file, did, new_key, plc }) => {
            let (key, plc) = identity_tools(&key_file, &plc)?;
            let op = crate::service::identity::leave::set_key(&plc, &key, &did, &new_key).await?;
            println!(
                "{did} now has {new_key} as its signing key; rotation keys {} (operation {})",
                op.rotation_keys.join(", "),
                op.cid()
            );
            Ok(())
        }
        Command::Doctor { config, mail_to } => doctor(*config, mail_to.as_deref()).await,
        Command::Backup { dir, paths } => backup::backup(&dir, &paths).await,
        Command::Restore { dir, paths, force } => backup::restore(&dir, &paths, force).await,
        Command::CreateRotationKey { out } => {
            let key = crate::service::keys::create_rotation_key(&out).map_err(|e| e.to_string())?;
            println!("{}", out.display());
            println!("{}", key.public_key().to_did_key());
            Ok(())
        }
        Command::CreatePrivateJwk { out } => {
            crate::service::keys::create_private_jwk(&out).map_err(|e| e.to_string())?;
            println!("{}", out.display());
            Ok(())
        }
        Command::CreateInviteCode { db, uses, for_account } => {
            if uses < 1 {
                return Err("--uses must be at least 1".into());
            }
            if let Some(account) = &for_account {
                atproto::syntax::Did::new(account.as_str()).map_err(|e| format!("--for {account}: {e}"))?;
            }
            let db = db.open().await?;
            let code = crate::http::xrpc::new_invite_code();
            crate::store::db::invites::insert(&db, &code, for_account.as_deref().unwrap_or("admin"), uses)
                .await
                .map_err(|e| format!("database: {e}"))?;
            println!("New invite code created with {uses} uses: {code}");
            Ok(())
        }
        Command::ResetPassword { db, did } => {
            let db = db.open().await?;
            let password: String =
                format!("{}-{}", crate::service::auth::random_code(12), crate::service::auth::random_code(12));
            let hash = crate::service::auth::password::hash_async(password.clone()).await.map_err(|e| e.message)?;
            if !crate::store::db::accounts::set_password(&db, &did, &hash)
                .await
                .map_err(|e| format!("database: {e}"))?
            {
                return Err(format!("no account with DID {did}"));
            }
            // Existing sessions end with the old password (a running server believes a session it
            // saw live in the last 2 s a little longer: this process cannot tell it).
            crate::store::db::sessions::delete_all(&db, &did).await.map_err(|e| format!("database: {e}"))?;
            println!("New password for {did}: {password}");
            Ok(())
        }
    }
}

async fn doctor(config: Config, mail_to: Option<&str>) -> Result<(), String> {
    let config = match config.server() {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL configuration: {e}");
            println!("     fix: see .env.example for every setting");
            return Err("1 check failed".into());
        }
    };
    let checks = crate::service::doctor::run(&config, mail_to).await;
    for c in &checks {
        println!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("     fix: {fix}");
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        Ok(())
    } else {
        Err(format!("{failed} of {} checks failed", checks.len()))
    }
}

/// Passkeys are bound to the hostname they were registered under (their WebAuthn RP ID): a
/// server whose VOW_HOSTNAME changed under registered passkeys would strand them all, so it
/// does not start unless told to. The hostname is remembered at each start.
async fn check_hostname(db: &sqlx::SqlitePool, hostname: &str, allow_change: bool) -> Result<(), String> {
    use crate::store::db::meta;
    let database = |e: sqlx::Error| format!("database: {e}");
    let previous = meta::get(db, "hostname").await.map_err(database)?;
    if let Some(previous) = previous.filter(|p| p != hostname) {
        let passkeys = meta::passkey_accounts(db).await.map_err(database)?;
        if passkeys > 0 && !allow_change {
            return Err(format!(
                "VOW_HOSTNAME is {hostname}, but {passkeys} account(s) registered their passkeys under {previous}: \
                 those passkeys only work there. Set VOW_HOSTNAME back to {previous}, or set \
                 VOW_ALLOW_HOSTNAME_CHANGE=true to start anyway (their owners then sign in with a password \
                 and register new passkeys)."
            ));
        }
        tracing::warn!(%previous, %hostname, passkeys, "the hostname changed");
    }
    meta::set(db, "hostname", hostname).await.map_err(database)
}

async fn serve(config: Config) -> Result<(), String> {
    let config = config.server().map_err(|e| e.to_string())?;
    let rotation_key =
        crate::service::keys::load_or_create_rotation_key(&config.rotation_key_path).map_err(|e| e.to_string())?;
    let jwk = crate::service::keys::load_or_create_jwk(&config.jwk_path).map_err(|e| e.to_string())?;
    let db = crate::store::db::open_with(&config.db_path, config.db_cache_bytes)
        .await
        .map_err(|e| format!("database {}: {e}", config.db_path.display()))?;
    check_hostname(&db, &config.hostname, config.allow_hostname_change).await?;
    let addr = config.addr;
    let state = crate::state::AppState::new(config, db, rotation_key, jwk)?;
    crate::service::repo::backfill::backfill(&state.db, &state.blocks)
        .await
        .map_err(|e| format!("indexing existing repos: {e:?}"))?;
    state.blob_sweep.clone().start(state.config.blob_sweep_every);
    crate::service::crawl::start(crate::service::crawl::Crawl {
        db: state.db.clone(),
        http: state.http.clone(),
        relays: state.config.relays.clone(),
        hostname: state.config.hostname.clone(),
    });
    let public_url = state.config.public_url.clone();
    if let Some(metrics_addr) = state.config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| format!("cannot listen on {metrics_addr} (VOW_METRICS_ADDR): {e}"))?;
        let router = crate::http::metrics::own_router(state.clone());
        tracing::info!(%metrics_addr, "metrics listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let app = crate::http::router(state);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, "vow listening");
    println!("vow listening on http://{local} (public URL {public_url})");
    axum::serve(
        crate::http::edge::Listener(listener),
        app.into_make_service_with_connect_info::<crate::http::edge::PeerAddr>(),
    )
    .with_graceful_shutdown(async {
        // Ctrl-C, or SIGTERM from docker, systemd and the like.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async move {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        tracing::info!("shutting down");
    })
    .await
    .map_err(|e| e.to_string())
}

/// The key in an existing key file, and a PLC client: what `vow identity` needs.
fn identity_tools(
    key_file: &std::path::Path,
    plc: &str,
) -> Result<(atproto::crypto::Keypair, crate::service::identity::plc::PlcClient), String> {
    if !key_file.exists() {
        return Err(format!("{} does not exist", key_file.display()));
    }
    let key = crate::service::keys::load_or_create_k256(key_file, "signing key").map_err(|e| e.to_string())?;
    let http =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
    Ok((key, crate::service::identity::plc::PlcClient::new(plc, http)))
}

//! `vow doctor`: checks what a running PDS depends on, one result per check, each failure
//! with what to change. It reads the same settings as `vow run` and talks to the same
//! services (database, DNS, the public URL, the PLC directory, the IPFS node, the SMTP server,
//! the relays), so it can be run next to the server, or before it is started.

use std::time::Duration;

use crate::config::ServerConfig;

/// One check's outcome.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// For a failure: what to change.
    pub fix: Option<String>,
}

fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check { name: name.into(), ok: true, detail: detail.into(), fix: None }
}

fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name: name.into(), ok: false, detail: detail.into(), fix: Some(fix.into()) }
}

/// A name of this machine, for which DNS checks mean nothing.
fn is_local(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs every check; `mail_to`: also send a test mail there.
pub async fn run(config: &ServerConfig, mail_to: Option<&str>) -> Vec<Check> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("vow-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client builds");
    let mut out = vec![pass("configuration", format!("{} at {}", config.hostname, config.public_url))];
    out.push(database(config).await);
    out.push(disk(config));
    out.extend(dns(config).await);
    out.push(public_url(&http, config).await);
    out.push(plc(&http, config).await);
    out.extend(ipfs(config).await);
    out.extend(smtp(config, mail_to).await);
    out.extend(relays(&http, config).await);
    out
}

async fn database(config: &ServerConfig) -> Check {
    const NAME: &str = "database";
    let path = &config.db_path;
    if !path.exists() {
        return pass(NAME, format!("{} does not exist yet: `vow run` creates it", path.display()));
    }
    let db = match crate::store::db::open(path).await {
        Ok(db) => db,
        Err(e) => {
            return fail(
                NAME,
                format!("{} cannot be opened: {e}", path.display()),
                "check VOW_DB_NAME, the file's owner and permissions, and that the disk is not full",
            );
        }
    };
    let result = crate::store::db::meta::quick_check(&db).await;
    db.close().await;
    match result {
        Ok(answer) if answer == "ok" => pass(NAME, format!("{}: integrity ok", path.display())),
        Ok(answer) => fail(
            NAME,
            format!("{}: {answer}", path.display()),
            "restore the latest backup (`vow restore DIR`) with Vow stopped",
        ),
        Err(e) => fail(NAME, format!("{}: {e}", path.display()), "check the file and the disk"),
    }
}

fn disk(config: &ServerConfig) -> Check {
    const NAME: &str = "disk space";
    let dir = config.db_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    match free_space(dir) {
        Some((free, total)) => {
            let detail = format!("{} free of {} where the database lives", human(free), human(total));
            if free < 1 << 30 || free * 20 < total {
                fail(
                    NAME,
                    detail,
                    "free some space or move VOW_DB_NAME and VOW_BLOB_DIR to a larger disk: SQLite stops writing when the disk is full",
                )
            } else {
                pass(NAME, detail)
            }
        }
        None => pass(NAME, format!("not measured on this system ({})", dir.display())),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(std::path::absolute(dir).ok()?.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a properly sized out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_space(_: &std::path::Path) -> Option<(u64, u64)> {
    None
}

fn human(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 { format!("{gib:.1} GiB") } else { format!("{} MiB", bytes >> 20) }
}

async fn dns(config: &ServerConfig) -> Vec<Check> {
    let host = &config.hostname;
    if is_local(host) {
        return vec![pass("DNS", format!("{host} is this machine (development): no records needed"))];
    }
    let Some(resolver) = crate::service::net::dns_resolver(config.dns_server) else {
        return vec![fail("DNS", "no DNS resolver could be set up", "check /etc/resolv.conf or VOW_DNS_SERVER")];
    };
    let lookup = |name: String| {
        let resolver = resolver.clone();
        async move {
            resolver
                .lookup_ip(format!("{name}."))
                .await
                .map(|ips| ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>())
        }
    };
    let mut out = Vec::new();
    match lookup(host.clone()).await {
        Ok(ips) if !ips.is_empty() => out.push(pass("DNS for the hostname", format!("{host} → {}", ips.join(", ")))),
        _ => out.push(fail(
            "DNS for the hostname",
            format!("{host} does not resolve"),
            format!("add an A (and AAAA) record for {host} pointing at this server"),
        )),
    }
    // Handles are subdomains: a name nobody registered must resolve too.
    let probe = format!("vow-doctor-{}.{host}", crate::service::auth::random_code(6).to_lowercase());
    match lookup(probe.clone()).await {
        Ok(ips) if !ips.is_empty() => {
            out.push(pass("DNS for handles", format!("*.{host} resolves ({probe} → {})", ips.join(", "))))
        }
        _ => out.push(fail(
            "DNS for handles",
            format!("{probe} does not resolve"),
            format!("add a wildcard record *.{host} (A/AAAA) so users' handles (alice.{host}) reach this server"),
        )),
    }
    out
}

async fn public_url(http: &reqwest::Client, config: &ServerConfig) -> Check {
    const NAME: &str = "public URL";
    let url = format!("{}/xrpc/_health", config.public_url);
    let plain = config.public_url.starts_with("http://");
    let host =
        url::Url::parse(&config.public_url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    if plain && !is_local(&host) {
        return fail(
            NAME,
            format!("{} is plain HTTP", config.public_url),
            "serve Vow behind a TLS proxy (docs/operating.md: Caddy or nginx) and set VOW_PUBLIC_URL to https://…",
        );
    }
    let how = if plain { "plain HTTP (development)" } else { "TLS verified" };
    match http.get(&url).send().await {
        Ok(res) if res.status().is_success() => pass(NAME, format!("{url} answers ({how})")),
        // Vow answers, and says a dependency is down: reachable; the other checks say which.
        Ok(res) if res.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
            let body = res.text().await.unwrap_or_default();
            pass(NAME, format!("{url} answers ({how}), reporting itself unhealthy: {}", body.trim()))
        }
        Ok(res) => fail(
            NAME,
            format!("{url} answered {}", res.status()),
            "is Vow running, and does the reverse proxy pass requests to it (VOW_ADDR)?",
        ),
        Err(e) => fail(
            NAME,
            format!("{url}: {}", crate::service::net::error_chain(&e)),
            "start Vow, check the reverse proxy and its TLS certificate, and that VOW_PUBLIC_URL is the address users reach",
        ),
    }
}

async fn plc(http: &reqwest::Client, config: &ServerConfig) -> Check {
    const NAME: &str = "PLC directory";
    let url = format!("{}/_health", config.plc_url.trim_end_matches('/'));
    match http.get(&url).send().await {
        Ok(res) if res.status().is_success() => pass(NAME, format!("{} answers", config.plc_url)),
        Ok(res) => {
            fail(NAME, format!("{url} answered {}", res.status()), "check VOW_PLC_URL (normally https://plc.directory)")
        }
        Err(e) => fail(
            NAME,
            format!("{}: {}", config.plc_url, crate::service::net::error_chain(&e)),
            "check VOW_PLC_URL and this server's outbound network: accounts cannot be created or moved without it",
        ),
    }
}

async fn ipfs(config: &ServerConfig) -> Vec<Check> {
    let Some(ipfs) = &config.ipfs else {
        return vec![pass(
            "storage",
            format!("embedded: blocks in the database, blobs in {}", config.blob_dir.display()),
        )];
    };
    let kubo = crate::store::ipfs::Kubo::new(&ipfs.node_url, ipfs.timeout);
    let fix = "start the IPFS node, or correct VOW_IPFS_NODE_URL (its RPC API, e.g. http://127.0.0.1:5001)";
    let version = match kubo.version().await {
        Ok(v) => v,
        Err(e) => return vec![fail("IPFS node", format!("{}: {e}", ipfs.node_url), fix)],
    };
    let mut out = vec![pass("IPFS node", format!("{} answers, version {version}", ipfs.node_url))];
    let mut probe = b"vow doctor ".to_vec();
    probe.extend(crate::service::auth::random_code(16).into_bytes());
    let cid = atproto::cid::raw_cid(&probe);
    let round_trip = async {
        kubo.block_put(&cid, probe.clone()).await?;
        kubo.pin_direct(&[cid]).await?;
        let back = kubo.block_get(&cid).await?;
        kubo.unpin(&cid, false).await?;
        Ok::<_, crate::store::ipfs::IpfsError>(back)
    };
    match round_trip.await {
        Ok(back) if back == probe => {
            out.push(pass("IPFS blocks and pins", "a block was stored, pinned, read back and unpinned"))
        }
        Ok(_) => out.push(fail("IPFS blocks and pins", "the block read back differs", "check the node's datastore")),
        Err(e) => out.push(fail("IPFS blocks and pins", e.to_string(), "check the node's datastore and disk space")),
    }
    out
}

async fn smtp(config: &ServerConfig, mail_to: Option<&str>) -> Vec<Check> {
    let Some(smtp) = &config.mail.smtp else {
        let public = config.public_url.starts_with("https://");
        let detail = match &config.mail.dir {
            Some(dir) => format!("no SMTP server: mail is written to {}", dir.display()),
            None => "no SMTP server: mail is written to the log".to_owned(),
        };
        return vec![if public {
            fail(
                "mail",
                detail,
                "set VOW_SMTP_HOST, VOW_SMTP_PORT, VOW_SMTP_USER, VOW_SMTP_PASS (or VOW_SMTP_URL): sign-up confirmation, password resets and PLC codes need mail",
            )
        } else {
            pass("mail", format!("{detail} (development)"))
        }];
    };
    let mut out = Vec::new();
    match crate::service::mail::check_connection(smtp).await {
        Ok(detail) => out.push(pass("SMTP", detail)),
        Err(e) => {
            out.push(fail(
                "SMTP",
                e,
                "check VOW_SMTP_HOST and VOW_SMTP_PORT (465 implicit TLS, 587 STARTTLS), VOW_SMTP_TLS, and VOW_SMTP_USER/PASS",
            ));
            return out;
        }
    }
    if let Some(to) = mail_to {
        match crate::service::mail::send_test(&config.mail, to).await {
            Ok(()) => out.push(pass("test mail", format!("sent to {to}: check that it arrives (and not as spam)"))),
            Err(e) => {
                out.push(fail("test mail", e, "check the sender address (VOW_SMTP_EMAIL) and the server's relay rules"))
            }
        }
    }
    out
}

async fn relays(http: &reqwest::Client, config: &ServerConfig) -> Vec<Check> {
    if config.relays.is_empty() {
        return vec![pass("relays", "none configured: no relay is asked to crawl this server (VOW_RELAYS)")];
    }
    let mut out = Vec::new();
    for relay in &config.relays {
        let url = format!("{}/xrpc/_health", relay.trim_end_matches('/'));
        out.push(match http.get(&url).send().await {
            Ok(res) if res.status().is_success() => pass("relay", format!("{relay} answers")),
            Ok(res) => fail("relay", format!("{url} answered {}", res.status()), "check the relay's URL in VOW_RELAYS"),
            Err(e) => fail(
                "relay",
                format!("{relay}: {}", crate::service::net::error_chain(&e)),
                "check the relay's URL in VOW_RELAYS and outbound network",
            ),
        });
    }
    out
}

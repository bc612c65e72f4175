//! `vow account …`: the operator's account management from a terminal, through the running
//! server's `com.atproto.admin.*` methods (so every change goes through the same code, with its
//! `#account` events and logs, as it would from an admin tool).

use clap::Subcommand;
use serde_json::{Value, json};

/// How to reach the running server as its administrator.
#[derive(Debug, clap::Args)]
pub struct AdminApi {
    /// The running server, as this machine reaches it.
    #[arg(long, env = "VOW_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    pds: String,
    /// The server's VOW_ADMIN_PASSWORD.
    #[arg(long, env = "VOW_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// List accounts (optionally those whose email starts with --email).
    List {
        #[command(flatten)]
        api: AdminApi,
        #[arg(long)]
        email: Option<String>,
    },
    /// Show one account: handle, email, status, invite codes.
    Info {
        #[command(flatten)]
        api: AdminApi,
        did: String,
    },
    /// Records, blocks and blobs stored, per account (largest first) or for one, and in all.
    Storage {
        #[command(flatten)]
        api: AdminApi,
        did: Option<String>,
    },
    /// Take an account down: it can no longer sign in, and its repo is not served.
    Takedown {
        #[command(flatten)]
        api: AdminApi,
        did: String,
        /// A reference for the record (a case number).
        #[arg(long = "ref", default_value = "takedown")]
        reference: String,
    },
    /// Lift a takedown.
    Restore {
        #[command(flatten)]
        api: AdminApi,
        did: String,
    },
    /// Delete an account and everything this server holds for it.
    Delete {
        #[command(flatten)]
        api: AdminApi,
        did: String,
        /// Required: deletion cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Change an account's email address.
    SetEmail {
        #[command(flatten)]
        api: AdminApi,
        did: String,
        email: String,
    },
    /// Change an account's handle (its PLC operation is signed by the user's signer).
    SetHandle {
        #[command(flatten)]
        api: AdminApi,
        did: String,
        handle: String,
    },
}

impl AdminApi {
    async fn call(
        &self,
        method: &str,
        nsid: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}/xrpc/{nsid}", self.pds.trim_end_matches('/'));
        let req =
            if method == "GET" { http.get(url).query(query) } else { http.post(url).json(&body.unwrap_or(json!({}))) };
        let res = req
            .basic_auth("admin", Some(&self.admin_password))
            .send()
            .await
            .map_err(|e| format!("{}: {e} (is the server running? set --pds or VOW_ADMIN_URL)", self.pds))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!(
                "{nsid}: {} {}",
                body["error"].as_str().unwrap_or(status.as_str()),
                body["message"].as_str().unwrap_or("")
            ));
        }
        Ok(body)
    }
}

fn line(a: &Value) -> String {
    let status = if a["deactivatedAt"].is_string() { " (deactivated)" } else { "" };
    format!(
        "{}  {}  {}{}{}",
        a["did"].as_str().unwrap_or("?"),
        a["handle"].as_str().unwrap_or("?"),
        a["email"].as_str().unwrap_or("-"),
        if a["emailConfirmedAt"].is_string() { " (confirmed)" } else { "" },
        status
    )
}

pub async fn run(command: AccountCommand) -> Result<(), String> {
    match command {
        AccountCommand::List { api, email } => {
            let mut cursor = String::new();
            loop {
                let mut q = vec![("limit", "100")];
                if let Some(e) = &email {
                    q.push(("email", e));
                }
                if !cursor.is_empty() {
                    q.push(("cursor", &cursor));
                }
                let page = api.call("GET", "com.atproto.admin.searchAccounts", &q, None).await?;
                for a in page["accounts"].as_array().into_iter().flatten() {
                    println!("{}", line(a));
                }
                match page["cursor"].as_str() {
                    Some(c) => cursor = c.to_owned(),
                    None => return Ok(()),
                }
            }
        }
        AccountCommand::Info { api, did } => {
            let a = api.call("GET", "com.atproto.admin.getAccountInfo", &[("did", &did)], None).await?;
            let s = api.call("GET", "com.atproto.admin.getSubjectStatus", &[("did", &did)], None).await?;
            println!("{}", line(&a));
            println!("created {}", a["indexedAt"].as_str().unwrap_or("?"));
            match s["takedown"]["applied"].as_bool() {
                Some(true) => println!("taken down ({})", s["takedown"]["ref"].as_str().unwrap_or("")),
                _ => println!("not taken down"),
            }
            for c in a["invites"].as_array().into_iter().flatten() {
                println!(
                    "invite {} ({} uses left{})",
                    c["code"].as_str().unwrap_or("?"),
                    c["available"],
                    if c["disabled"] == true { ", disabled" } else { "" }
                );
            }
            Ok(())
        }
        AccountCommand::Storage { api, did } => {
            let q: Vec<(&str, &str)> = did.as_deref().map(|d| vec![("did", d)]).unwrap_or_default();
            let out = api.call("GET", "app.vow.admin.getStorage", &q, None).await?;
            let row = |label: &str, v: &Value| {
                format!(
                    "{label}  {} records, {} blocks ({} bytes), {} blobs ({} bytes)",
                    v["records"], v["blocks"], v["blockBytes"], v["blobs"], v["blobBytes"]
                )
            };
            for a in out["accounts"].as_array().into_iter().flatten() {
                let label = format!("{}  {}", a["did"].as_str().unwrap_or("?"), a["handle"].as_str().unwrap_or("?"));
                println!("{}", row(&label, a));
            }
            println!("{}", row("total", &out["total"]));
            Ok(())
        }
        AccountCommand::Takedown { api, did, reference } => {
            let subject = json!({ "$type": "com.atproto.admin.defs#repoRef", "did": did });
            let body = json!({ "subject": subject, "takedown": { "applied": true, "ref": reference } });
            api.call("POST", "com.atproto.admin.updateSubjectStatus", &[], Some(body)).await?;
            println!("{did} taken down");
            Ok(())
        }
        AccountCommand::Restore { api, did } => {
            let subject = json!({ "$type": "com.atproto.admin.defs#repoRef", "did": did });
            let body = json!({ "subject": subject, "takedown": { "applied": false } });
            api.call("POST", "com.atproto.admin.updateSubjectStatus", &[], Some(body)).await?;
            println!("{did} restored");
            Ok(())
        }
        AccountCommand::Delete { api, did, yes } => {
            if !yes {
                return Err(format!("deleting {did} cannot be undone; run again with --yes"));
            }
            api.call("POST", "com.atproto.admin.deleteAccount", &[], Some(json!({ "did": did }))).await?;
            println!("{did} deleted");
            Ok(())
        }
        AccountCommand::SetEmail { api, did, email } => {
            api.call(
                "POST",
                "com.atproto.admin.updateAccountEmail",
                &[],
                Some(json!({ "account": did, "email": email })),
            )
            .await?;
            println!("{did} now has the email address {email} (unconfirmed)");
            Ok(())
        }
        AccountCommand::SetHandle { api, did, handle } => {
            api.call(
                "POST",
                "com.atproto.admin.updateAccountHandle",
                &[],
                Some(json!({ "did": did, "handle": handle })),
            )
            .await?;
            println!("{did} is now {handle}");
            Ok(())
        }
    }
}

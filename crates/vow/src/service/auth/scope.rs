//! What an OAuth grant allows: the transitional scopes (`transition:generic` acts as an app
//! password, `transition:chat.bsky` adds direct messages, `transition:email` shows the email
//! address) and the granular permissions of the ATProto permission spec:
//!
//! - `repo:<collection>[?action=create|update|delete…]` (or `repo?collection=…`; `*` for all);
//! - `rpc:<method>?aud=<did#service>` (or `rpc?lxm=…&aud=…`; `*` for either);
//! - `blob:<mime>` (or `blob?accept=…`; `image/*`, `*/*`);
//! - `account:<email|repo|status>[?action=read|manage]`;
//! - `identity:<handle|*>`.
//!
//! and permission sets, `include:<nsid>[?aud=<did#service>]`, resolved from the lexicons this
//! server carries (the `app.bsky.auth*` sets): each set grants only within its own namespace,
//! and its `rpc` permissions marked `inheritAud` take the `aud` of the include.

/// Why a scope string was refused.
pub type ScopeError = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Repo { collections: Vec<String>, actions: Vec<String> },
    Rpc { lxms: Vec<String>, aud: String },
    Blob { accept: Vec<String> },
    Account { attr: String, actions: Vec<String> },
    Identity { attr: String },
}

/// A parsed grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub atproto: bool,
    pub generic: bool,
    pub chat: bool,
    pub email: bool,
    pub permissions: Vec<Permission>,
}

const ACTIONS: [&str; 3] = ["create", "update", "delete"];

/// `prefix:positional?k=v&k=v` or `prefix?k=v…`: the positional value belongs to `main`.
fn params(rest: &str, main: &str) -> Result<Vec<(String, String)>, ScopeError> {
    let (positional, query) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    let mut out = Vec::new();
    if let Some(value) = positional.strip_prefix(':') {
        if value.is_empty() {
            return Err("an empty value".into());
        }
        out.push((main.to_owned(), percent_decode(value)));
    } else if !positional.is_empty() {
        return Err(format!("unexpected {positional:?}"));
    }
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

fn values(params: &[(String, String)], key: &str) -> Vec<String> {
    params.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
}

fn only(params: &[(String, String)], allowed: &[&str]) -> Result<(), ScopeError> {
    match params.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(format!("unknown parameter {k}")),
        None => Ok(()),
    }
}

fn nsid_or_star(v: &str) -> bool {
    v == "*" || atproto::syntax::Nsid::new(v).is_ok()
}

/// Parses one scope token (other than the transitional ones).
pub fn parse_permission(token: &str) -> Result<Permission, ScopeError> {
    let refuse = |why: String| format!("scope {token:?}: {why}");
    let (prefix, rest) = match token.find([':', '?']) {
        Some(i) => (&token[..i], &token[i..]),
        None => (token, ""),
    };
    match prefix {
        "repo" => {
            let p = params(rest, "collection").map_err(refuse)?;
            only(&p, &["collection", "action"]).map_err(refuse)?;
            let collections = values(&p, "collection");
            if collections.is_empty() || !collections.iter().all(|c| nsid_or_star(c)) {
                return Err(refuse("needs collections (NSIDs or *)".into()));
            }
            let mut actions = values(&p, "action");
            if actions.is_empty() {
                actions = ACTIONS.iter().map(|a| a.to_string()).collect();
            }
            if let Some(a) = actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
                return Err(refuse(format!("unknown action {a}")));
            }
            Ok(Permission::Repo { collections, actions })
        }
        "rpc" => {
            let p = params(rest, "lxm").map_err(refuse)?;
            only(&p, &["lxm", "aud"]).map_err(refuse)?;
            let lxms = values(&p, "lxm");
            if lxms.is_empty() || !lxms.iter().all(|l| nsid_or_star(l)) {
                return Err(refuse("needs methods (NSIDs or *)".into()));
            }
            let aud = match values(&p, "aud").as_slice() {
                [one] if one == "*" || one.starts_with("did:") => one.clone(),
                _ => return Err(refuse("needs one aud (a service DID, or *)".into())),
            };
            if aud == "*" && lxms.iter().any(|l| l == "*") {
                return Err(refuse("any method at any service is not a permission".into()));
            }
            Ok(Permission::Rpc { lxms, aud })
        }
        "blob" => {
            let p = params(rest, "accept").map_err(refuse)?;
            only(&p, &["accept"]).map_err(refuse)?;
            let accept = values(&p, "accept");
            if accept.is_empty()
                || !accept.iter().all(|m| m.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty()))
            {
                return Err(refuse("needs MIME types".into()));
            }
            Ok(Permission::Blob { accept })
        }
        "account" => {
            let p = params(rest, "attr").map_err(refuse)?;
            only(&p, &["attr", "action"]).map_err(refuse)?;
            let attr = match values(&p, "attr").as_slice() {
                [a] if matches!(a.as_str(), "email" | "repo" | "status") => a.clone(),
                _ => return Err(refuse("needs one of email, repo, status".into())),
            };
            let mut actions = values(&p, "action");
            if actions.is_empty() {
                actions = vec!["read".into()];
            }
            if !actions.iter().all(|a| a == "read" || a == "manage") {
                return Err(refuse("actions are read and manage".into()));
            }
            Ok(Permission::Account { attr, actions })
        }
        "identity" => {
            let p = params(rest, "attr").map_err(refuse)?;
            only(&p, &["attr"]).map_err(refuse)?;
            match values(&p, "attr").as_slice() {
                [a] if a == "handle" || a == "*" => Ok(Permission::Identity { attr: a.clone() }),
                _ => Err(refuse("needs handle or *".into())),
            }
        }
        "include" => Err(refuse("a permission set must be expanded (Grant::parse)".into())),
        _ => Err(refuse("unknown".into())),
    }
}

/// Expands `include:<nsid>[?aud=…]` with the permission set the bundled lexicons define.
pub fn expand_include(token: &str) -> Result<Vec<Permission>, ScopeError> {
    let refuse = |why: String| format!("scope {token:?}: {why}");
    let rest = token.strip_prefix("include").unwrap_or("");
    let p = params(rest, "nsid").map_err(refuse)?;
    only(&p, &["nsid", "aud"]).map_err(refuse)?;
    let nsid = match values(&p, "nsid").as_slice() {
        [n] if atproto::syntax::Nsid::new(n.as_str()).is_ok() => n.clone(),
        _ => return Err(refuse("needs the NSID of a permission set".into())),
    };
    let aud = values(&p, "aud").into_iter().next();
    let catalog = atproto::lexicon::Catalog::bundled();
    let Some(atproto::lexicon::TypeDef::PermissionSet(set)) = catalog.doc(&nsid).and_then(|d| d.defs.get("main"))
    else {
        return Err(refuse(format!("{nsid} is not a permission set this server knows")));
    };
    // A set speaks only for its own namespace: app.bsky.authFullApp for app.bsky.*.
    let authority = nsid.rsplit_once('.').map(|(a, _)| format!("{a}.")).unwrap_or_default();
    let within = |n: &str| n.starts_with(&authority);
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let mut out = Vec::new();
    for perm in set.get("permissions").and_then(|v| v.as_array()).into_iter().flatten() {
        match perm["resource"].as_str() {
            Some("repo") => {
                let collections: Vec<String> = strings(&perm["collection"]).into_iter().filter(|c| within(c)).collect();
                let mut actions = strings(&perm["action"]);
                if actions.is_empty() {
                    actions = ACTIONS.iter().map(|a| a.to_string()).collect();
                }
                if !collections.is_empty() {
                    out.push(Permission::Repo { collections, actions });
                }
            }
            Some("rpc") => {
                let lxms: Vec<String> = strings(&perm["lxm"]).into_iter().filter(|l| within(l)).collect();
                let aud =
                    if perm["inheritAud"] == true { aud.clone() } else { perm["aud"].as_str().map(str::to_owned) };
                if let (false, Some(aud)) = (lxms.is_empty(), aud) {
                    out.push(Permission::Rpc { lxms, aud });
                }
            }
            Some("blob") => {
                let accept = strings(&perm["accept"]);
                if !accept.is_empty() {
                    out.push(Permission::Blob { accept });
                }
            }
            // Account and identity permissions are not the business of an app's set.
            _ => {}
        }
    }
    Ok(out)
}

impl Grant {
    /// Parses a whole scope string.
    pub fn parse(scope: &str) -> Result<Grant, ScopeError> {
        let mut g = Grant::default();
        for token in scope.split_whitespace() {
            match token {
                "atproto" => g.atproto = true,
                "transition:generic" => g.generic = true,
                "transition:chat.bsky" => g.chat = true,
                "transition:email" => g.email = true,
                other if other.starts_with("include:") || other.starts_with("include?") => {
                    g.permissions.extend(expand_include(other)?)
                }
                other => g.permissions.push(parse_permission(other)?),
            }
        }
        Ok(g)
    }

    /// A write of `action` to `collection`.
    pub fn allows_write(&self, collection: &str, action: &str) -> bool {
        self.generic
            || self.permissions.iter().any(|p| match p {
                Permission::Repo { collections, actions } => {
                    actions.iter().any(|a| a == action) && collections.iter().any(|c| c == "*" || c == collection)
                }
                _ => false,
            })
    }

    /// An upload of a blob of type `mime`.
    pub fn allows_blob(&self, mime: &str) -> bool {
        let mime = mime.to_ascii_lowercase();
        self.generic
            || self.permissions.iter().any(|p| match p {
                Permission::Blob { accept } => accept.iter().any(|a| {
                    a == "*/*" || *a == mime || a.strip_suffix("/*").is_some_and(|t| mime.split('/').next() == Some(t))
                }),
                _ => false,
            })
    }

    /// A call to `lxm` at the service `aud` (`did#service`), proxied or by service token.
    pub fn allows_rpc(&self, lxm: &str, aud: &str) -> bool {
        let chat = lxm.starts_with("chat.bsky.");
        // A service named with its `#id` must match exactly; a bare DID (a default service)
        // matches a permission for any of its services.
        let aud_matches = |a: &str| a == "*" || a == aud || (!aud.contains('#') && a.split('#').next() == Some(aud));
        (if chat { self.chat } else { self.generic })
            || self.permissions.iter().any(|p| match p {
                Permission::Rpc { lxms, aud: a } => lxms.iter().any(|l| l == "*" || l == lxm) && aud_matches(a),
                _ => false,
            })
    }

    /// A change of the identity's `attr` (`handle`, or anything for `*`).
    pub fn allows_identity(&self, attr: &str) -> bool {
        self.permissions.iter().any(|p| matches!(p, Permission::Identity { attr: a } if a == "*" || a == attr))
    }

    /// Seeing the account's email address.
    pub fn shows_email(&self) -> bool {
        self.email || self.permissions.iter().any(|p| matches!(p, Permission::Account { attr, .. } if attr == "email"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granular_permissions_parse_and_decide() {
        let g = Grant::parse(
            "atproto repo:app.bsky.feed.post?action=create repo?collection=app.bsky.feed.like&collection=app.bsky.graph.follow \
             blob:image/* rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview identity:handle account:email",
        )
        .unwrap();
        assert!(g.atproto && !g.generic);
        assert!(g.allows_write("app.bsky.feed.post", "create"));
        assert!(!g.allows_write("app.bsky.feed.post", "delete"));
        assert!(g.allows_write("app.bsky.feed.like", "delete"));
        assert!(!g.allows_write("app.bsky.actor.profile", "update"));
        assert!(g.allows_blob("image/png") && !g.allows_blob("video/mp4"));
        assert!(g.allows_rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#bsky_appview"));
        assert!(!g.allows_rpc("app.bsky.feed.getTimeline", "did:web:other.example#bsky_appview"));
        assert!(!g.allows_rpc("app.bsky.feed.getAuthorFeed", "did:web:api.bsky.app#bsky_appview"));
        assert!(g.allows_identity("handle") && g.shows_email());

        let generic = Grant::parse("atproto transition:generic").unwrap();
        assert!(generic.allows_write("x.y.z", "delete") && generic.allows_blob("video/mp4"));
        assert!(!generic.allows_rpc("chat.bsky.convo.sendMessage", "did:web:api.bsky.chat#bsky_chat"));
        assert!(
            Grant::parse("atproto transition:generic transition:chat.bsky")
                .unwrap()
                .allows_rpc("chat.bsky.convo.sendMessage", "did:web:x")
        );
        assert!(!generic.allows_identity("handle") && !generic.shows_email());
        assert!(
            Grant::parse("atproto transition:chat.bsky")
                .unwrap()
                .allows_rpc("chat.bsky.convo.sendMessage", "did:web:x")
        );
        assert!(!g.allows_rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#other_service"));

        // A permission set from the bundled lexicons, its rpc permissions at the include's aud.
        let app =
            Grant::parse("atproto include:app.bsky.authCreatePosts?aud=did:web:api.bsky.app%23bsky_appview").unwrap();
        assert!(app.allows_write("app.bsky.feed.post", "create"));
        assert!(!app.allows_write("app.bsky.feed.post", "delete") && !app.allows_write("com.example.thing", "create"));
        assert!(app.allows_rpc("app.bsky.video.uploadVideo", "did:web:api.bsky.app#bsky_appview"));
        assert!(!app.allows_rpc("app.bsky.video.uploadVideo", "did:web:evil.example#bsky_appview"));
        let full =
            Grant::parse("atproto include:app.bsky.authFullApp?aud=did:web:api.bsky.app%23bsky_appview").unwrap();
        assert!(full.allows_rpc("app.bsky.feed.getTimeline", "did:web:api.bsky.app#bsky_appview"));

        for bad in [
            "repo",
            "repo:not_an_nsid",
            "repo:a.b.c?action=destroy",
            "rpc:a.b.c",
            "rpc:*?aud=*",
            "blob:png",
            "account:password",
            "identity:keys",
            "include:com.example.set",
            "include:app.bsky.feed.post",
            "teleport:now",
            "repo:a.b.c?color=red",
        ] {
            assert!(Grant::parse(bad).is_err(), "accepted {bad}");
        }
    }
}

//! Read-after-write: the AppView learns of a user's new records from the firehose a moment
//! after the write, so a person who just posted would not see the post. When the AppView's
//! answer says (`atproto-repo-rev`) it has seen an older revision of the requester's repo than
//! this PDS holds, the user's own newer posts and profile are put into the answer of
//! `getProfile`, `getAuthorFeed`, `getTimeline` and `getPostThread`, as the reference PDS does.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::proxy::{call, relay};
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::AccessAuth;
use crate::state::AppState;

/// Most local posts put into one answer.
const MAX_LOCAL: i64 = 50;
/// Largest AppView answer read to be amended.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Profile,
    AuthorFeed,
    Timeline,
    Thread,
}

pub async fn get_profile(state: State<AppState>, auth: AccessAuth, request: Request) -> Response {
    amended(state, auth, request, Kind::Profile).await
}

pub async fn get_author_feed(state: State<AppState>, auth: AccessAuth, request: Request) -> Response {
    amended(state, auth, request, Kind::AuthorFeed).await
}

pub async fn get_timeline(state: State<AppState>, auth: AccessAuth, request: Request) -> Response {
    amended(state, auth, request, Kind::Timeline).await
}

pub async fn get_post_thread(state: State<AppState>, auth: AccessAuth, request: Request) -> Response {
    amended(state, auth, request, Kind::Thread).await
}

async fn amended(State(state): State<AppState>, auth: AccessAuth, request: Request, kind: Kind) -> Response {
    match amend(&state, &auth, request, kind).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

async fn amend(state: &AppState, auth: &AccessAuth, request: Request, kind: Kind) -> XrpcResult<Response> {
    let (parts, _) = request.into_parts();
    let nsid = parts.uri.path().trim_start_matches("/xrpc/").to_owned();
    let header = parts.headers.get("atproto-proxy").and_then(|h| h.to_str().ok());
    let Some(target) = state.proxy.target(header, &nsid).await? else {
        return Err(XrpcError::internal("no AppView for", &nsid));
    };
    // The answer may be amended, so it comes uncompressed.
    let mut headers = parts.headers.clone();
    headers.remove("accept-encoding");
    let query = parts.uri.query();
    let response =
        call(state, auth, &Method::GET, &target, &target.did.clone(), &nsid, &nsid, query, &headers, None).await?;
    let status = response.status().as_u16();
    let seen_rev = response.headers().get("atproto-repo-rev").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let amendable = status == 200 || (kind == Kind::Thread && (status == 400 || status == 404));
    let Some(account) = crate::store::db::accounts::by_did(&state.db, &auth.did).await? else {
        return Ok(relay(response));
    };
    let local_rev = account.repo_rev.clone().unwrap_or_default();
    // Without the header the AppView has not seen the repo at all.
    let behind = seen_rev.as_deref().is_none_or(|seen| seen < local_rev.as_str());
    let about_me = match kind {
        Kind::Profile | Kind::AuthorFeed => {
            query_param(query, "actor").is_some_and(|a| a == account.did || a == account.handle)
        }
        Kind::Timeline => true,
        Kind::Thread => query_param(query, "uri").is_some_and(|u| u.starts_with(&format!("at://{}/", account.did))),
    };
    if !amendable || !behind || !about_me {
        return Ok(relay(response));
    }
    let out_headers = crate::service::proxy::response_headers(response.headers());
    let body = crate::service::proxy::resolve::read_bounded(response, MAX_ANSWER)
        .await
        .map_err(|e| XrpcError::new(StatusCode::BAD_GATEWAY, "UpstreamFailure", e))?;
    let Ok(mut answer) = serde_json::from_slice::<Value>(&body) else {
        return Ok(raw(status, out_headers, body));
    };
    let seen = seen_rev.unwrap_or_default();
    let local = Local::read(state, &account, &seen).await?;
    let status = match kind {
        Kind::Profile => {
            local.apply_profile(&mut answer);
            status
        }
        Kind::AuthorFeed | Kind::Timeline => {
            local.prepend_posts(&mut answer);
            status
        }
        Kind::Thread => {
            let uri = query_param(query, "uri").unwrap_or_default();
            match local.thread(&mut answer, &uri, status == 200) {
                true => 200,
                false => status,
            }
        }
    };
    let mut headers = out_headers;
    headers.remove("content-length");
    Ok(raw(status, headers, serde_json::to_vec(&answer).expect("JSON encodes")))
}

fn raw(status: u16, headers: HeaderMap, body: Vec<u8>) -> Response {
    let mut out = Response::new(axum::body::Body::from(body));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    *out.headers_mut() = headers;
    out
}

/// The requester's records the AppView has not seen.
struct Local {
    did: String,
    handle: String,
    /// The profile record, if it changed since.
    profile: Option<Value>,
    /// New posts, newest first: (uri, cid, record, indexedAt).
    posts: Vec<(String, String, Value, String)>,
}

impl Local {
    async fn read(state: &AppState, account: &crate::store::db::accounts::Account, since: &str) -> XrpcResult<Self> {
        use crate::store::db::refs::records_since;
        let mut posts = Vec::new();
        for (rkey, cid, _, indexed_at) in
            records_since(&state.db, &account.did, "app.bsky.feed.post", since, MAX_LOCAL).await?
        {
            let record = super::repo::record_value(state, &cid).await?;
            posts.push((format!("at://{}/app.bsky.feed.post/{rkey}", account.did), cid, record, indexed_at));
        }
        let profile = match records_since(&state.db, &account.did, "app.bsky.actor.profile", since, 1).await?.first() {
            Some((_, cid, _, _)) => Some(super::repo::record_value(state, cid).await?),
            None => None,
        };
        Ok(Self { did: account.did.clone(), handle: account.handle.clone(), profile, posts })
    }

    /// The author view of the requester, from what the AppView said (`known`) and the newer
    /// profile record.
    fn author(&self, known: Option<&Value>) -> Value {
        let mut author = known.cloned().unwrap_or_else(|| json!({ "did": self.did, "handle": self.handle }));
        if let Some(profile) = &self.profile {
            for field in ["displayName", "description"] {
                match profile.get(field) {
                    Some(v) => author[field] = v.clone(),
                    None => {
                        if let Some(obj) = author.as_object_mut() {
                            obj.remove(field);
                        }
                    }
                }
            }
        }
        author
    }

    fn post_view(&self, author: &Value, (uri, cid, record, indexed_at): &(String, String, Value, String)) -> Value {
        let mut author = author.clone();
        if let Some(obj) = author.as_object_mut() {
            // A basic profile view: no counts, no description.
            for field in ["description", "followersCount", "followsCount", "postsCount", "indexedAt", "banner"] {
                obj.remove(field);
            }
        }
        json!({
            "$type": "app.bsky.feed.defs#postView",
            "uri": uri, "cid": cid, "author": author, "record": record,
            "replyCount": 0, "repostCount": 0, "likeCount": 0, "quoteCount": 0,
            "indexedAt": indexed_at, "labels": [],
        })
    }

    fn apply_profile(&self, answer: &mut Value) {
        if self.profile.is_some() {
            *answer = self.author(Some(answer));
        }
    }

    /// Puts the posts the AppView has not seen at the top of a feed (first page only).
    fn prepend_posts(&self, answer: &mut Value) {
        let Some(feed) = answer["feed"].as_array_mut() else { return };
        let known_author =
            feed.iter().map(|item| &item["post"]["author"]).find(|a| a["did"] == self.did.as_str()).cloned();
        let author = self.author(known_author.as_ref());
        let present: std::collections::HashSet<String> =
            feed.iter().filter_map(|item| item["post"]["uri"].as_str().map(str::to_owned)).collect();
        let newer: Vec<Value> = self
            .posts
            .iter()
            .filter(|p| !present.contains(&p.0))
            .map(|p| json!({ "post": self.post_view(&author, p) }))
            .collect();
        feed.splice(0..0, newer);
    }

    /// A thread of the requester's own post the AppView does not know yet (`found` false), or
    /// the requester's new replies added to one it knows. Returns whether the answer is a thread.
    fn thread(&self, answer: &mut Value, uri: &str, found: bool) -> bool {
        let author = self.author(None);
        if !found {
            let Some(post) = self.posts.iter().find(|p| p.0 == uri) else { return false };
            *answer = json!({ "thread": {
                "$type": "app.bsky.feed.defs#threadViewPost", "post": self.post_view(&author, post), "replies": [],
            }});
            return true;
        }
        let Some(replies) = answer["thread"]["replies"].as_array_mut() else { return true };
        for post in self.posts.iter().rev() {
            if post.2["reply"]["parent"]["uri"].as_str() == Some(uri) {
                replies.push(json!({
                    "$type": "app.bsky.feed.defs#threadViewPost", "post": self.post_view(&author, post), "replies": [],
                }));
            }
        }
        true
    }
}

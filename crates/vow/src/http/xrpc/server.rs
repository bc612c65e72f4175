//! `com.atproto.server.*`: describeServer, accounts, sessions, invite codes, app passwords.

use atproto::syntax::{Did, Handle};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{XrpcJson, XrpcQuery};
use crate::error::{XrpcError, XrpcResult};
use crate::service::auth::{AccessAuth, AdminAuth, RefreshAuth, password, random_code};
use crate::service::events::Event;
use crate::service::identity::plc::Operation;
use crate::state::AppState;
use crate::store::blocks::BlockStore;
use crate::store::db::{self, accounts};

/// 200 with the version when everything the server depends on answers; 503 naming what does
/// not otherwise (the database, the IPFS node).
pub async fn health(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = db::ping(&state.db).await {
        problems.push(format!("database: {e}"));
    }
    if let crate::store::blocks::Blocks::Ipfs(ipfs) = &state.blocks {
        let check = tokio::time::timeout(std::time::Duration::from_secs(3), ipfs.kubo().version()).await;
        match check {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(e.to_string()),
            Err(_) => problems.push("IPFS node did not answer within 3 s".into()),
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    if problems.is_empty() {
        Json(json!({ "version": version })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "version": version, "error": problems.join("; ") })))
            .into_response()
    }
}

pub async fn describe_server(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "did": state.config.service_did,
        "availableUserDomains": [format!(".{}", state.config.hostname)],
        "inviteCodeRequired": state.config.require_invite,
        "phoneVerificationRequired": false,
        "links": {},
        "contact": { "email": state.config.contact_email },
    }))
}

/// An invite code: `XXXXXXXX-XXXXXXXX`.
pub fn new_invite_code() -> String {
    format!("{}-{}", random_code(8), random_code(8))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountInput {
    pub(crate) email: Option<String>,
    pub(crate) handle: String,
    pub(crate) did: Option<String>,
    pub(crate) invite_code: Option<String>,
    pub(crate) password: Option<String>,
}

pub(crate) fn check_email(email: &str) -> XrpcResult<String> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.contains(char::is_whitespace);
    if valid { Ok(email) } else { Err(XrpcError::named("InvalidEmail", "That email address is not valid")) }
}

/// Checks that a handle is free to take on this server (syntax, domain, not taken).
pub(crate) async fn check_new_handle(state: &AppState, raw: &str) -> XrpcResult<Handle> {
    let handle =
        Handle::new(raw.trim().to_ascii_lowercase()).map_err(|e| XrpcError::named("InvalidHandle", e.to_string()))?;
    let suffix = format!(".{}", state.config.hostname);
    let Some(name) = handle.as_str().strip_suffix(&suffix) else {
        return Err(XrpcError::named("UnsupportedDomain", format!("Handles on this server must end with {suffix}")));
    };
    if name.contains('.') || name.len() < 3 || name.len() > 18 {
        return Err(XrpcError::named(
            "InvalidHandle",
            format!("Choose a single name of 3 to 18 characters before {suffix}"),
        ));
    }
    if accounts::by_handle(&state.db, handle.as_str()).await?.is_some() {
        return Err(XrpcError::named("HandleNotAvailable", format!("The handle {handle} is already taken")));
    }
    Ok(handle)
}

/// Checks the service token an account's current PDS gave it for moving here: issued by the
/// DID, for this PDS and createAccount, live, and signed by the `#atproto` key of the DID's
/// current document.
async fn check_migration_token(state: &AppState, headers: &axum::http::HeaderMap, did: &Did) -> XrpcResult<()> {
    use crate::service::auth::inbound;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| {
            XrpcError::auth_required(
                "Bring an existing DID with a service token from its current PDS (getServiceAuth with this PDS's DID \
                 as aud and lxm com.atproto.server.createAccount)",
            )
        })?;
    let lxm = "com.atproto.server.createAccount";
    let refused = |e: inbound::Refused| XrpcError::new(StatusCode::UNAUTHORIZED, "InvalidToken", e.to_string());
    let unverified = inbound::inspect(token.trim(), did.as_str(), &state.config.service_did, lxm, db::unix_now())
        .map_err(refused)?;
    let key = current_atproto_key(state, did).await?;
    unverified.verify(&key).map_err(refused)
}

/// The `#atproto` key the DID's document names now.
async fn current_atproto_key(state: &AppState, did: &Did) -> XrpcResult<atproto::crypto::PublicKey> {
    state
        .proxy
        .resolver
        .current_atproto_key(did.as_str())
        .await
        .map_err(|e| XrpcError::upstream("Could not resolve the DID", e))?
        .ok_or_else(|| XrpcError::invalid_request(format!("The DID document of {did} has no usable #atproto key")))
}

pub async fn create_account(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    XrpcJson(input): XrpcJson<CreateAccountInput>,
) -> XrpcResult<Json<Value>> {
    create(&state, &headers, input).await.map(Json)
}

/// `createAccount`, for the XRPC method and the sign-up page.
pub(crate) async fn create(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    input: CreateAccountInput,
) -> XrpcResult<Value> {
    let state = state.clone();
    let migrating = match &input.did {
        None => None,
        Some(did) => {
            let did = super::did_param(did, "did")?;
            if accounts::by_did(&state.db, did.as_str()).await?.is_some() {
                return Err(XrpcError::named("AlreadyExists", format!("{did} already has an account here")));
            }
            check_migration_token(&state, headers, &did).await?;
            Some(did)
        }
    };
    let handle = check_new_handle(&state, &input.handle).await?;
    let email = check_email(input.email.as_deref().unwrap_or(""))?;
    let password = input
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| XrpcError::named("InvalidPassword", "A password is required"))?;
    // An account moving here keeps the password it had (the reference PDS sets no minimum).
    if migrating.is_none() {
        password::check_new(&password)?;
    } else if password.len() > 256 {
        return Err(XrpcError::named("InvalidPassword", "Password is too long"));
    }
    if accounts::by_email(&state.db, &email).await?.is_some() {
        return Err(XrpcError::named("EmailNotAvailable", "That email address is already in use"));
    }
    let invite = match (&input.invite_code, state.config.require_invite) {
        (None, true) => return Err(XrpcError::named("InvalidInviteCode", "An invite code is required")),
        (code, _) => code.clone(),
    };
    if let Some(code) = &invite
        && !db::invites::is_usable(&state.db, code).await?
    {
        return Err(XrpcError::named("InvalidInviteCode", "That invite code is not valid or has been used up"));
    }

    if let Some(did) = migrating {
        return create_migrating(&state, did, handle, &email, password, invite).await.map(|Json(v)| v);
    }

    // The DID: a genesis operation signed by this server's rotation key, which stays the
    // account's key until the user registers a passkey and takes over.
    let rotation = state.rotation_key.public_key().to_did_key();
    let op = Operation::genesis(vec![rotation.clone()], rotation, handle.as_str(), &state.config.public_url)
        .sign(&state.rotation_key);
    let did = op.did();
    state
        .plc
        .submit(&did, &op)
        .await
        .map_err(|e| XrpcError::upstream("Could not register the DID with the PLC directory", e))?;
    let did_typed = Did::new(did.as_str()).map_err(|e| XrpcError::internal("PLC produced an invalid DID", e))?;

    let password_hash = password::hash_async(password).await?;
    let commit = crate::service::repo::genesis_commit(&did_typed, &state.rotation_key, &state.tids);

    // Blocks first: if the transaction below fails they are merely unreferenced.
    let _protected = state.blocks.protect(commit.blocks.iter().map(|(cid, _)| *cid).collect()).await;
    state.blocks.put_many(&commit.blocks).await?;
    let mut events = state.firehose.sequencer().await?;
    let mut tx = state.db.begin().await?;
    if let Some(code) = &invite
        && !db::invites::take_use(&mut tx, code, &did).await?
    {
        return Err(XrpcError::named("InvalidInviteCode", "That invite code is not valid or has been used up"));
    }
    let inserted =
        accounts::insert(&mut tx, &did, handle.as_str(), &email, &password_hash, &commit.cid.to_string(), &commit.rev)
            .await;
    if let Err(sqlx::Error::Database(e)) = &inserted
        && e.is_unique_violation()
    {
        // Lost a race with another sign-up for the same handle or email.
        return Err(if e.message().contains("email") {
            XrpcError::named("EmailNotAvailable", "That email address is already in use")
        } else {
            XrpcError::named("HandleNotAvailable", format!("The handle {handle} is already taken"))
        });
    }
    inserted?;
    let cids: Vec<_> = commit.blocks.iter().map(|(cid, _)| *cid).collect();
    crate::store::db::refs::add_blocks(&mut tx, &did, &commit.rev, &cids).await?;
    // The genesis commit is not announced: it is signed by the PDS key, which stops being the
    // account's key at the handover, so a consumer replaying later could not verify it. The
    // first user-signed #commit carries prevData, which is all a consumer needs.
    events.append(&mut tx, Event::Identity { did: &did, handle: Some(handle.as_str()) }).await?;
    events.append(&mut tx, Event::Account { did: &did, active: true, status: None }).await?;
    let (access, refresh) = state.tokens.issue(&mut *tx, &did, None).await?;
    tx.commit().await?;
    events.publish();
    tracing::info!(%did, %handle, "account created");
    Ok(json!({ "accessJwt": access, "refreshJwt": refresh, "handle": handle.as_str(), "did": did }))
}

/// The first step of a migration here: the account, deactivated and without a repo, for a DID
/// that stays where it is (on its current PDS, with its current keys) until the user moves it.
async fn create_migrating(
    state: &AppState,
    did: Did,
    handle: Handle,
    email: &str,
    password: String,
    invite: Option<String>,
) -> XrpcResult<Json<Value>> {
    let did = did.as_str();
    let password_hash = password::hash_async(password).await?;
    let mut events = state.firehose.sequencer().await?;
    let mut tx = state.db.begin().await?;
    if let Some(code) = &invite
        && !db::invites::take_use(&mut tx, code, did).await?
    {
        return Err(XrpcError::named("InvalidInviteCode", "That invite code is not valid or has been used up"));
    }
    match accounts::insert_migrating(&mut tx, did, handle.as_str(), email, &password_hash).await {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(if e.message().contains("email") {
                XrpcError::named("EmailNotAvailable", "That email address is already in use")
            } else if e.message().contains("handle") {
                XrpcError::named("HandleNotAvailable", format!("The handle {handle} is already taken"))
            } else {
                XrpcError::named("AlreadyExists", format!("{did} already has an account here"))
            });
        }
        other => other?,
    }
    events.append(&mut tx, Event::Account { did, active: false, status: Some("deactivated") }).await?;
    let (access, refresh) = state.tokens.issue(&mut *tx, did, None).await?;
    tx.commit().await?;
    events.publish();
    tracing::info!(%did, %handle, "account created for a DID moving here; deactivated until its repo arrives");
    Ok(Json(json!({ "accessJwt": access, "refreshJwt": refresh, "handle": handle.as_str(), "did": did })))
}

/// Whether a DID document makes `account` live here: this PDS as its endpoint and the
/// account's key as `#atproto`. Says why not.
fn lives_here(state: &AppState, doc: &Value, account: &accounts::Account) -> Result<(), String> {
    use crate::service::proxy::resolve::{service_entry, signing_key};
    let endpoint = service_entry(doc, &account.did, "atproto_pds").unwrap_or_default();
    if endpoint.trim_end_matches('/') != state.config.public_url {
        return Err(format!(
            "The DID document names {endpoint:?} as the PDS, not {}: submit the PLC operation first",
            state.config.public_url
        ));
    }
    let key = signing_key(doc, &account.did);
    if key.is_none() || key != account.signing_key {
        return Err(
            "The DID document's #atproto key is not this account's key (see getRecommendedDidCredentials)".into()
        );
    }
    Ok(())
}

/// `com.atproto.server.checkAccountStatus`, as the reference reports it.
pub async fn check_account_status(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_not_oauth()?;
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))?;
    let counts = db::refs::repo_counts(&state.db, &auth.did).await?;
    // The DID is valid here when its document names this PDS and the account's key.
    let doc = state.proxy.resolver.fresh_document(&auth.did).await.ok();
    let valid_did = doc.is_some_and(|d| lives_here(&state, &d, &account).is_ok());
    // The lexicon requires both. Before its repo is imported an arriving account has none: it
    // reports an empty tree and the zero revision, older than any real one, as the reference
    // PDS's freshly created (empty) repo would look to a migration tool.
    let commit = account.repo_root.clone().unwrap_or_else(|| atproto::mst::Mst::new().root_cid().to_string());
    let rev = account.repo_rev.clone().unwrap_or_else(|| "2222222222222".to_owned());
    Ok(Json(json!({
        "activated": account.active(),
        "validDid": valid_did,
        "repoCommit": commit,
        "repoRev": rev,
        "repoBlocks": counts.blocks,
        "indexedRecords": counts.records,
        "privateStateValues": 0,
        "expectedBlobs": counts.expected_blobs,
        "importedBlobs": counts.imported_blobs,
    })))
}

#[derive(Deserialize)]
pub struct CreateSessionInput {
    identifier: String,
    password: String,
}

fn session_view(account: &accounts::Account) -> Value {
    let mut view = json!({
        "did": account.did,
        "handle": account.handle,
        "active": account.active(),
    });
    // Both left out when there is no address, or it is not shown (the lexicon has no null).
    if let Some(email) = &account.email {
        view["email"] = json!(email);
        view["emailConfirmed"] = json!(account.email_confirmed_at.is_some());
    }
    if let Some(status) = account.status() {
        view["status"] = json!(status);
    }
    view
}

pub async fn create_session(
    State(state): State<AppState>,
    XrpcJson(input): XrpcJson<CreateSessionInput>,
) -> XrpcResult<Json<Value>> {
    let denied = || XrpcError::auth_required("Invalid identifier or password");
    // Per identifier, before any password is checked: guessing one account's password from
    // many addresses is slowed down too.
    // No identifier is longer than a handle (253 bytes): a longer one is counted by its start,
    // so the limiter's memory stays small whatever is sent.
    let mut key = input.identifier.trim().to_lowercase();
    if key.len() > 256 {
        let cut = (0..=256).rev().find(|&i| key.is_char_boundary(i)).unwrap_or(0);
        key.truncate(cut);
    }
    state.limits.check(crate::service::ratelimit::Policy::SessionIdentifier, &key, 1)?;
    state.limits.check(crate::service::ratelimit::Policy::SessionIdentifierDay, &key, 1)?;
    let account = accounts::by_identifier(&state.db, &input.identifier).await?;
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let matched = password::verify_sign_in(input.password.clone(), stored).await?;
    let account = account.ok_or_else(denied)?;
    let app_password = if matched {
        None
    } else {
        let mut found = None;
        for app in db::app_passwords::of(&state.db, &account.did).await? {
            if password::verify_async(input.password.clone(), app.password_hash).await? {
                found = Some((app.name, app.privileged));
                break;
            }
        }
        Some(found.ok_or_else(denied)?)
    };
    if account.takedown_ref.is_some() {
        return Err(XrpcError::new(StatusCode::UNAUTHORIZED, "AccountTakedown", "Account has been taken down"));
    }
    let (access, refresh) =
        state.tokens.issue(&state.db, &account.did, app_password.as_ref().map(|(n, p)| (n.as_str(), *p))).await?;
    let mut view = session_view(&account);
    view["accessJwt"] = json!(access);
    view["refreshJwt"] = json!(refresh);
    Ok(Json(view))
}

pub async fn get_session(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    let mut account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))?;
    // An OAuth app sees the email address only when granted it (transition:email, account:email).
    if !auth.shows_email() {
        account.email = None;
        account.email_confirmed_at = None;
    }
    Ok(Json(session_view(&account)))
}

pub async fn refresh_session(State(state): State<AppState>, auth: RefreshAuth) -> XrpcResult<Json<Value>> {
    let claims = auth.claims;
    let next_jti = random_code(26);
    if !db::sessions::rotate_refresh(&state.db, &claims.sid, &claims.jti, &next_jti).await? {
        // A refresh token used twice means it leaked: end the whole session.
        db::sessions::delete(&state.db, &claims.sid).await?;
        tracing::warn!(did = %claims.sub, "refresh token replayed; session revoked");
        return Err(XrpcError::expired_token(
            "This refresh token was already used; the session has been ended. Log in again.",
        ));
    }
    let account = accounts::by_did(&state.db, &claims.sub)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))?;
    let app = db::sessions::app_password_of(&state.db, &claims.sid).await?;
    let (access, refresh) = state.tokens.mint(&claims.sub, &claims.sid, &next_jti, app);
    let mut view = session_view(&account);
    view["accessJwt"] = json!(access);
    view["refreshJwt"] = json!(refresh);
    Ok(Json(view))
}

pub async fn delete_session(State(state): State<AppState>, auth: RefreshAuth) -> XrpcResult<Json<Value>> {
    db::sessions::delete(&state.db, &auth.claims.sid).await?;
    // Signed out everywhere: the tokens signed in advance go too.
    if db::sessions::count(&state.db, &auth.claims.sub).await? == 0 {
        state.proxy.tokens.discard(&auth.claims.sub).await?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInviteCodeInput {
    use_count: i64,
    for_account: Option<String>,
}

async fn insert_invite(state: &AppState, uses: i64, for_account: &str) -> XrpcResult<String> {
    if !(1..=1_000_000).contains(&uses) {
        return Err(XrpcError::invalid_request("useCount must be between 1 and 1000000"));
    }
    let code = new_invite_code();
    db::invites::insert(&state.db, &code, for_account, uses).await?;
    Ok(code)
}

pub async fn create_invite_code(
    State(state): State<AppState>,
    _admin: AdminAuth,
    XrpcJson(input): XrpcJson<CreateInviteCodeInput>,
) -> XrpcResult<Json<Value>> {
    if let Some(account) = &input.for_account {
        super::did_param(account, "forAccount")?;
    }
    let code = insert_invite(&state, input.use_count, input.for_account.as_deref().unwrap_or("admin")).await?;
    Ok(Json(json!({ "code": code })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInviteCodesInput {
    code_count: Option<i64>,
    use_count: i64,
    for_accounts: Option<Vec<String>>,
}

pub async fn create_invite_codes(
    State(state): State<AppState>,
    _admin: AdminAuth,
    XrpcJson(input): XrpcJson<CreateInviteCodesInput>,
) -> XrpcResult<Json<Value>> {
    let count = input.code_count.unwrap_or(1);
    if !(1..=1000).contains(&count) {
        return Err(XrpcError::invalid_request("codeCount must be between 1 and 1000"));
    }
    let accounts = input.for_accounts.unwrap_or_else(|| vec!["admin".into()]);
    for (i, account) in accounts.iter().enumerate() {
        if account != "admin" {
            super::did_param(account, &format!("forAccounts[{i}]"))?;
        }
    }
    if accounts.len() as i64 * count > 1000 {
        return Err(XrpcError::invalid_request("At most 1000 codes per request"));
    }
    let mut out = Vec::new();
    for account in accounts {
        let mut codes = Vec::new();
        for _ in 0..count {
            codes.push(insert_invite(&state, input.use_count, &account).await?);
        }
        out.push(json!({ "account": account, "codes": codes }));
    }
    Ok(Json(json!({ "codes": out })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetInviteCodesParams {
    include_used: Option<bool>,
}

pub async fn get_account_invite_codes(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcQuery(params): XrpcQuery<GetInviteCodesParams>,
) -> XrpcResult<Json<Value>> {
    auth.require_not_oauth()?;
    let mut codes = Vec::new();
    for c in db::invites::of_account(&state.db, &auth.did).await? {
        if !params.include_used.unwrap_or(true) && c.available <= 0 {
            continue;
        }
        let uses = db::invites::uses_of(&state.db, &c.code).await?;
        codes.push(json!({
            "code": c.code, "available": c.available, "disabled": c.disabled, "forAccount": c.for_account,
            "createdBy": c.created_by, "createdAt": c.created_at,
            "uses": uses.into_iter().map(|(by, at)| json!({ "usedBy": by, "usedAt": at })).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({ "codes": codes })))
}

#[derive(Deserialize)]
pub struct CreateAppPasswordInput {
    name: String,
    privileged: Option<bool>,
}

pub async fn create_app_password(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<CreateAppPasswordInput>,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.len() > 64 {
        return Err(XrpcError::invalid_request("App password names must be 1 to 64 characters"));
    }
    let secret = random_code(16).to_ascii_lowercase();
    let secret = format!("{}-{}-{}-{}", &secret[0..4], &secret[4..8], &secret[8..12], &secret[12..16]);
    let hash = password::hash_async(secret.clone()).await?;
    let created_at = db::now();
    let privileged = input.privileged.unwrap_or(false);
    if !db::app_passwords::insert(&state.db, &auth.did, &name, &hash, privileged, &created_at).await? {
        return Err(XrpcError::named("DuplicateName", format!("An app password named '{name}' already exists")));
    }
    Ok(Json(json!({ "name": name, "password": secret, "createdAt": created_at, "privileged": privileged })))
}

pub async fn list_app_passwords(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_not_oauth()?;
    let passwords: Vec<Value> = db::app_passwords::of(&state.db, &auth.did)
        .await?
        .into_iter()
        .map(|a| json!({ "name": a.name, "createdAt": a.created_at, "privileged": a.privileged }))
        .collect();
    Ok(Json(json!({ "passwords": passwords })))
}

#[derive(Deserialize)]
pub struct RevokeAppPasswordInput {
    name: String,
}

pub async fn revoke_app_password(
    State(state): State<AppState>,
    auth: AccessAuth,
    XrpcJson(input): XrpcJson<RevokeAppPasswordInput>,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let mut tx = state.db.begin().await?;
    db::app_passwords::delete(&mut *tx, &auth.did, &input.name).await?;
    // Sessions opened with it end too.
    let ended_any = db::sessions::delete_for_app_password(&mut tx, &auth.did, &input.name).await?;
    db::sessions::commit_ending(tx, ended_any).await?;
    Ok(Json(json!({})))
}

/// `com.atproto.repo.importRepo`: the repo of an account moving here, streamed (see
/// `service::repo::import`). Only while the account is deactivated: an active repo changes
/// only through signed writes.
pub async fn import_repo(
    State(state): State<AppState>,
    auth: AccessAuth,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let limit = state.config.import_max_bytes;
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))?;
    if account.active() {
        return Err(XrpcError::invalid_request(
            "importRepo is for an account moving here, before activateAccount; this account is active",
        ));
    }
    if declared.is_some_and(|n| n > limit) {
        return Err(XrpcError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("Repos up to {} MB can be imported here (VOW_IMPORT_MAX_MB)", limit / (1024 * 1024)),
        ));
    }
    let did = Did::new(auth.did.as_str()).map_err(|e| XrpcError::internal("session for an invalid DID", e))?;
    // The commit must be signed by the key the DID's document names now.
    let key = current_atproto_key(&state, &did).await?;
    let mut guard = state.repo_locks.lock(did.as_str()).await;
    let imported = crate::service::repo::import::import(&state.writer, &did, &key, body, limit).await;
    guard.forget_account();
    let imported = imported?;
    Ok(Json(json!({ "commit": imported.commit.to_string(), "rev": imported.rev, "records": imported.records })))
}

/// `com.atproto.identity.getRecommendedDidCredentials`: what the DID document should say for
/// the account to live here. The user's key is the `#atproto` key and the only rotation key,
/// never this PDS's: once the old PDS signs this, only the user controls the DID.
pub async fn get_recommended_did_credentials(
    State(state): State<AppState>,
    auth: AccessAuth,
) -> XrpcResult<Json<Value>> {
    auth.require_not_oauth()?;
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))?;
    let key = account.signing_key.ok_or_else(|| {
        XrpcError::named(
            "SigningKeyRequired",
            "Register a passkey on your account page (or run `vow signer`) first: your key becomes the DID's key",
        )
    })?;
    // An account that lives here keeps the rotation keys it added beside its own (a recovery
    // key); one arriving gets its own key alone, never its old PDS's.
    let mut rotation_keys = vec![key.clone()];
    if account.did.starts_with("did:plc:") {
        let last = state
            .plc
            .last_operation(&account.did)
            .await
            .map_err(|e| XrpcError::upstream("Could not read the DID's PLC log", e))?;
        let here = last.services.get("atproto_pds").is_some_and(|s| s.endpoint == state.config.public_url);
        if here {
            let ours = state.rotation_key.public_key().to_did_key();
            let others = last.rotation_keys.iter().filter(|k| **k != key && **k != ours).cloned();
            rotation_keys = others.chain(std::iter::once(key.clone())).collect();
        }
    }
    Ok(Json(json!({
        "rotationKeys": rotation_keys,
        "alsoKnownAs": [format!("at://{}", account.handle)],
        "verificationMethods": { "atproto": key },
        "services": { "atproto_pds": { "type": "AtprotoPersonalDataServer", "endpoint": state.config.public_url } },
    })))
}

/// `com.atproto.server.activateAccount`: once the DID document names this PDS and the
/// account's key, the account goes live: `#identity` and `#account`, then the head re-signed
/// by the user's key (`#sync`), now if the signer is connected or when it next connects.
pub async fn activate_account(State(state): State<AppState>, auth: AccessAuth) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    let account = accounts::by_did(&state.db, &auth.did)
        .await?
        .ok_or_else(|| XrpcError::invalid_token("Account no longer exists"))?;
    if account.active() {
        return Ok(Json(json!({})));
    }
    if account.takedown_ref.is_some() {
        return Err(XrpcError::named("AccountTakedown", "This account has been taken down"));
    }
    if account.repo_root.is_none() {
        return Err(XrpcError::invalid_request("Import the repo (importRepo) before activating the account"));
    }
    let doc = state
        .proxy
        .resolver
        .fresh_document(&auth.did)
        .await
        .map_err(|e| XrpcError::upstream("Could not resolve the DID", e))?;
    lives_here(&state, &doc, &account).map_err(XrpcError::invalid_request)?;
    let mut events = state.firehose.sequencer().await?;
    let mut tx = state.db.begin().await?;
    accounts::activate(&mut tx, &auth.did).await?;
    events.append(&mut tx, Event::Identity { did: &auth.did, handle: Some(&account.handle) }).await?;
    events.append(&mut tx, Event::Account { did: &auth.did, active: true, status: None }).await?;
    tx.commit().await?;
    events.publish();
    state.repo_locks.lock(&auth.did).await.forget_account();
    let did = Did::new(auth.did.as_str()).map_err(|e| XrpcError::internal("session for an invalid DID", e))?;
    if state.signers.is_connected(did.as_str())
        && let Err(e) = crate::service::repo::writer::resign_head(&state.writer, &did).await
    {
        tracing::warn!(%did, error = ?e, "the head will be re-signed when the signer next connects");
    }
    tracing::info!(%did, "account activated");
    Ok(Json(json!({})))
}

/// `com.atproto.server.deactivateAccount`: the repo stops being served and written, relays
/// hear `#account` (deactivated), and stored service tokens are dropped; `activateAccount`
/// undoes it. (`deleteAfter` is accepted and not acted on: deletion is the user's own call.)
pub async fn deactivate_account(
    State(state): State<AppState>,
    auth: AccessAuth,
    body: axum::body::Bytes,
) -> XrpcResult<Json<Value>> {
    auth.require_full_access()?;
    if !body.is_empty() {
        serde_json::from_slice::<serde_json::Map<String, Value>>(&body)
            .map_err(|e| XrpcError::invalid_request(format!("Invalid request body: {e}")))?;
    }
    state.lifecycle.deactivate(&auth.did).await?;
    Ok(Json(json!({})))
}

//! XRPC endpoints: thin handlers that parse typed input, call the services, map errors.
//! One module per namespace.

pub(crate) mod account;
mod actor;
mod admin;
pub mod blobs;
pub mod extract;
mod identity;
pub mod proxy;
mod read_after_write;
mod repo;
mod repo_write;
mod server;
mod signer;
mod sync;

pub use server::new_invite_code;
pub(crate) use server::{CreateAccountInput, check_new_handle, create as create_account};

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::error::{XrpcError, XrpcResult};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/xrpc/_health", get(server::health))
        .route("/xrpc/com.atproto.server.describeServer", get(server::describe_server))
        .route("/xrpc/com.atproto.server.createAccount", post(server::create_account))
        .route("/xrpc/com.atproto.server.createSession", post(server::create_session))
        .route("/xrpc/com.atproto.server.getSession", get(server::get_session))
        .route("/xrpc/com.atproto.server.refreshSession", post(server::refresh_session))
        .route("/xrpc/com.atproto.server.deleteSession", post(server::delete_session))
        .route("/xrpc/com.atproto.server.createInviteCode", post(server::create_invite_code))
        .route("/xrpc/com.atproto.server.createInviteCodes", post(server::create_invite_codes))
        .route("/xrpc/com.atproto.server.getAccountInviteCodes", get(server::get_account_invite_codes))
        .route("/xrpc/com.atproto.server.createAppPassword", post(server::create_app_password))
        .route("/xrpc/com.atproto.server.listAppPasswords", get(server::list_app_passwords))
        .route("/xrpc/com.atproto.server.revokeAppPassword", post(server::revoke_app_password))
        .route("/xrpc/com.atproto.identity.resolveHandle", get(identity::resolve_handle))
        .route("/xrpc/com.atproto.identity.updateHandle", post(identity::update_handle))
        .route("/xrpc/com.atproto.identity.requestPlcOperationSignature", post(identity::request_plc_token))
        .route("/xrpc/com.atproto.identity.signPlcOperation", post(identity::sign_plc_operation))
        .route("/xrpc/com.atproto.identity.submitPlcOperation", post(identity::submit_plc_operation))
        .route("/xrpc/com.atproto.repo.describeRepo", get(repo::describe_repo))
        .route("/xrpc/com.atproto.repo.getRecord", get(repo::get_record))
        .route("/xrpc/com.atproto.repo.listRecords", get(repo::list_records))
        .route("/xrpc/com.atproto.repo.createRecord", post(repo_write::create_record))
        .route("/xrpc/com.atproto.repo.putRecord", post(repo_write::put_record))
        .route("/xrpc/com.atproto.repo.deleteRecord", post(repo_write::delete_record))
        .route("/xrpc/com.atproto.repo.applyWrites", post(repo_write::apply_writes))
        .route("/xrpc/com.atproto.sync.getRepo", get(sync::get_repo))
        .route("/xrpc/com.atproto.sync.getLatestCommit", get(sync::get_latest_commit))
        .route("/xrpc/com.atproto.sync.getHead", get(sync::get_head))
        .route("/xrpc/com.atproto.sync.getCheckout", get(sync::get_checkout))
        .route("/xrpc/com.atproto.sync.getRecord", get(sync::get_record))
        .route("/xrpc/com.atproto.sync.getBlocks", get(sync::get_blocks))
        .route("/xrpc/com.atproto.sync.getRepoStatus", get(sync::get_repo_status))
        .route("/xrpc/com.atproto.sync.listRepos", get(sync::list_repos))
        .route("/xrpc/com.atproto.sync.subscribeRepos", get(sync::subscribe_repos))
        .route("/xrpc/com.atproto.repo.uploadBlob", post(blobs::upload_blob))
        .route("/xrpc/com.atproto.sync.getBlob", get(blobs::get_blob))
        .route("/xrpc/com.atproto.sync.listBlobs", get(blobs::list_blobs))
        .route("/xrpc/com.atproto.repo.listMissingBlobs", get(blobs::list_missing_blobs))
        .route("/xrpc/com.atproto.server.signerConnect", get(signer::signer_connect))
        .route("/xrpc/app.vow.signer.getKeyChallenge", get(signer::get_key_challenge))
        .route("/xrpc/app.vow.signer.registerKey", post(signer::register_key))
        .route("/xrpc/app.vow.signer.getStatus", get(signer::get_status))
        .route("/xrpc/com.atproto.server.getServiceAuth", get(proxy::get_service_auth))
        .route("/xrpc/com.atproto.server.checkAccountStatus", get(server::check_account_status))
        .route("/xrpc/com.atproto.repo.importRepo", post(server::import_repo))
        .route("/xrpc/com.atproto.identity.getRecommendedDidCredentials", get(server::get_recommended_did_credentials))
        .route("/xrpc/com.atproto.server.deactivateAccount", post(server::deactivate_account))
        .route("/xrpc/com.atproto.server.requestEmailConfirmation", post(account::request_email_confirmation))
        .route("/xrpc/com.atproto.server.confirmEmail", post(account::confirm_email))
        .route("/xrpc/com.atproto.server.requestEmailUpdate", post(account::request_email_update))
        .route("/xrpc/com.atproto.server.updateEmail", post(account::update_email))
        .route("/xrpc/com.atproto.server.requestPasswordReset", post(account::request_password_reset))
        .route("/xrpc/com.atproto.server.resetPassword", post(account::reset_password))
        .route("/xrpc/com.atproto.server.requestAccountDelete", post(account::request_account_delete))
        .route("/xrpc/com.atproto.server.deleteAccount", post(account::delete_account))
        .route("/xrpc/com.atproto.admin.getAccountInfo", get(admin::get_account_info))
        .route("/xrpc/com.atproto.admin.getAccountInfos", get(admin::get_account_infos))
        .route("/xrpc/com.atproto.admin.searchAccounts", get(admin::search_accounts))
        .route("/xrpc/com.atproto.admin.getSubjectStatus", get(admin::get_subject_status))
        .route("/xrpc/com.atproto.admin.updateSubjectStatus", post(admin::update_subject_status))
        .route("/xrpc/com.atproto.admin.updateAccountHandle", post(admin::update_account_handle))
        .route("/xrpc/com.atproto.admin.updateAccountEmail", post(admin::update_account_email))
        .route("/xrpc/com.atproto.admin.updateAccountPassword", post(admin::update_account_password))
        .route("/xrpc/com.atproto.admin.deleteAccount", post(admin::delete_account))
        .route("/xrpc/com.atproto.admin.getInviteCodes", get(admin::get_invite_codes))
        .route("/xrpc/com.atproto.admin.disableInviteCodes", post(admin::disable_invite_codes))
        .route("/xrpc/com.atproto.admin.sendEmail", post(admin::send_email))
        .route("/xrpc/app.vow.admin.getStorage", get(admin::get_storage))
        .route("/xrpc/com.atproto.server.activateAccount", post(server::activate_account))
        .route("/xrpc/app.bsky.actor.getPreferences", get(actor::get_preferences))
        .route("/xrpc/app.bsky.actor.putPreferences", post(actor::put_preferences))
        .route("/xrpc/app.bsky.feed.getFeed", get(proxy::get_feed))
        .route("/xrpc/app.bsky.actor.getProfile", get(read_after_write::get_profile))
        .route("/xrpc/app.bsky.feed.getAuthorFeed", get(read_after_write::get_author_feed))
        .route("/xrpc/app.bsky.feed.getTimeline", get(read_after_write::get_timeline))
        .route("/xrpc/app.bsky.feed.getPostThread", get(read_after_write::get_post_thread))
}

/// A hosted, active account by DID, with the sync endpoints' error names.
async fn active_account(state: &AppState, did: &str) -> Result<crate::store::db::accounts::Account, XrpcError> {
    atproto::syntax::Did::new(did).map_err(|e| XrpcError::invalid_request(format!("Invalid did: {e}")))?;
    let account = crate::store::db::accounts::by_did(&state.db, did)
        .await?
        .ok_or_else(|| XrpcError::named("RepoNotFound", format!("Could not find repo for DID: {did}")))?;
    match account.status() {
        None => Ok(account),
        Some("takendown") => Err(XrpcError::named("RepoTakendown", format!("Repo has been taken down: {did}"))),
        Some(_) => Err(XrpcError::named("RepoDeactivated", format!("Repo has been deactivated: {did}"))),
    }
}

/// Paths without a handler: XRPC methods are proxied (or get `MethodNotImplemented`),
/// anything else a plain 404 body.
pub async fn not_found(state: axum::extract::State<AppState>, request: Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.uri().path().starts_with("/xrpc/") {
        proxy::fallback(state, request).await
    } else {
        XrpcError::not_found("NotFound", "Not found").into_response()
    }
}

/// A JSON body whose rejections become XRPC errors (`InvalidRequest`, `PayloadTooLarge`).
pub struct XrpcJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for XrpcJson<T> {
    type Rejection = XrpcError;

    async fn from_request(req: Request, state: &S) -> Result<Self, XrpcError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Err(XrpcError::new(status, "PayloadTooLarge", "Request body is too large"))
                } else {
                    Err(XrpcError::invalid_request(format!("Invalid request body: {}", rejection.body_text())))
                }
            }
        }
    }
}

/// Query parameters whose rejections become `InvalidRequest`.
pub struct XrpcQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for XrpcQuery<T> {
    type Rejection = XrpcError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, XrpcError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| XrpcError::invalid_request(format!("Invalid query parameters: {}", e.body_text())))
    }
}

/// A `since` revision, which must be a TID when given (empty means absent).
pub(crate) fn since_param(since: Option<String>) -> XrpcResult<Option<String>> {
    match since.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => atproto::syntax::Tid::new(s.as_str())
            .map(|_| Some(s.clone()))
            .map_err(|e| XrpcError::invalid_request(format!("since must be a TID (revision), not {s:?}: {e}"))),
    }
}

/// A DID parameter, checked against the DID syntax; `field` names it in the error.
pub(crate) fn did_param(value: &str, field: &str) -> XrpcResult<atproto::syntax::Did> {
    atproto::syntax::Did::new(value)
        .map_err(|e| XrpcError::invalid_request(format!("{field}: invalid DID {value:?}: {e}")))
}

/// A page size from `limit`: `default` when absent, otherwise between 1 and `max`.
pub(crate) fn page_limit(limit: Option<i64>, default: i64, max: i64) -> XrpcResult<i64> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(XrpcError::invalid_request(format!("limit must be between 1 and {max}")));
    }
    Ok(limit)
}

/// The cursor for the page after `rows`: the last row's key when the page is full.
pub(crate) fn next_cursor<T>(rows: &[T], limit: i64, key: impl Fn(&T) -> String) -> Option<String> {
    (rows.len() as i64 == limit).then(|| rows.last().map(key)).flatten()
}

//! The pages a person meets before they have an account page: the home page, sign-up, and a
//! forgotten password. Forms post back to the same server; errors are pages that say what to
//! do next, with what the person typed kept.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::{PageForm, Redirect, escape, page, session};
use crate::state::AppState;

fn error_line(error: Option<&str>) -> String {
    error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default()
}

/// `/`: what this server is, and the two ways in.
pub async fn home(State(state): State<AppState>) -> Response {
    let host = escape(&state.config.hostname);
    let url = escape(&state.config.public_url);
    let invite = if state.config.require_invite { "You need an invite code to sign up here." } else { "" };
    page(
        &state.config.hostname,
        &format!(
            "<h1>{host}</h1><section><p>This is a personal data server (PDS) for Bluesky and other AT Protocol \
             apps. It keeps your posts, follows and media, and the apps read them from here.</p><p>What is \
             different: <strong>this server never holds your signing key.</strong> Your posts are signed in your \
             own browser, by a key made from your passkey, so no one who runs or breaks into this server can post \
             as you or take your identity.</p><p><a href=\"/signup\"><button>Create an account</button></a> \
             <a href=\"/account/signin\"><button>Sign in</button></a></p><p class=\"muted\">{invite}</p></section>\
             <section><h2>Using it from an app</h2><p>In the Bluesky app, choose another hosting provider and enter \
             <code>{url}</code>. Keep your account page open while you post (or run <code>vow signer</code>): \
             that is where your posts are signed.</p></section>\
             <section><h2>Moving</h2><p>Coming from another server? Migration tools work here as they do elsewhere, \
             and once you are here only your key controls your identity. Leaving needs nothing from this server: \
             <a href=\"/account/leave\">the leave page</a> works with your passkey or a saved key alone.</p>\
             </section>"
        ),
    )
}

#[derive(Deserialize, Default)]
pub struct SignupForm {
    #[serde(default)]
    invite: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn signup_form(state: &AppState, form: &SignupForm, error: Option<&str>) -> Response {
    let suffix = escape(&format!(".{}", state.config.hostname));
    let invite = if state.config.require_invite {
        format!(
            "<label>Invite code<input type=\"text\" name=\"invite\" value=\"{}\" required autocomplete=\"off\"></label>",
            escape(&form.invite)
        )
    } else {
        String::new()
    };
    page(
        "Create an account",
        &format!(
            "<h1>Create an account</h1>{error}<section><form method=\"post\" action=\"/signup\">{invite}\
             <label>Handle (3 to 18 letters, digits or hyphens)<input type=\"text\" name=\"name\" value=\"{name}\" \
             required minlength=\"3\" maxlength=\"18\" autocomplete=\"username\" autocapitalize=\"none\"></label>\
             <p class=\"muted\">Your handle will be that name followed by <strong>{suffix}</strong>, for \
             example <strong>{name_or}{suffix}</strong>.</p>\
             <label>Email<input type=\"text\" name=\"email\" value=\"{email}\" required autocomplete=\"email\" \
             inputmode=\"email\"></label>\
             <label>Password (at least 8 characters)<input type=\"password\" name=\"password\" required \
             minlength=\"8\" autocomplete=\"new-password\"></label>\
             <button type=\"submit\">Create account</button></form>\
             <p class=\"muted\">Next you register a passkey: your signing key is made from it, in your browser.</p>\
             </section><p><a href=\"/account/signin\">I already have an account</a></p>",
            error = error_line(error),
            name = escape(&form.name),
            name_or = if form.name.is_empty() { "alice".to_owned() } else { escape(&form.name) },
            email = escape(&form.email),
        ),
    )
}

pub async fn signup_page(State(state): State<AppState>, session::MaybeSession(did): session::MaybeSession) -> Response {
    if did.is_some() {
        return Redirect::to("/account");
    }
    signup_form(&state, &SignupForm::default(), None)
}

/// Creates the account as `createAccount` does, signs the person in and takes them to their
/// account page, where passkey registration waits.
pub async fn signup(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<SignupForm>,
) -> Response {
    if !session::same_origin(&state, &headers) {
        return super::wrong_origin(&state, "/signup");
    }
    let name = form.name.trim().to_ascii_lowercase();
    let input = crate::http::xrpc::CreateAccountInput {
        email: Some(form.email.trim().to_owned()),
        handle: format!("{name}.{}", state.config.hostname),
        did: None,
        invite_code: Some(form.invite.trim().to_owned()).filter(|c| !c.is_empty()),
        password: Some(form.password.clone()),
    };
    match crate::http::xrpc::create_account(&state, &HeaderMap::new(), input).await {
        Ok(created) => {
            let did = created["did"].as_str().unwrap_or_default().to_owned();
            // The tokens createAccount issued are for an app; this page signs in with its cookie.
            if let Err(e) = crate::store::db::sessions::delete_all(&state.db, &did).await {
                tracing::warn!(%did, error = %e, "sign-up: could not end the unused session");
            }
            let mut res = Redirect::to("/account?welcome=1");
            match crate::store::db::accounts::by_did(&state.db, &did).await {
                Ok(Some(account)) => session::set_cookie(res.headers_mut(), session::issue(&state, &account)),
                _ => return Redirect::to("/account/signin"),
            }
            res
        }
        Err(e) => signup_form(&state, &form, Some(&e.message)),
    }
}

#[derive(Deserialize, Default)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

fn forgot_form(error: Option<&str>, email: &str) -> Response {
    page(
        "Forgot your password",
        &format!(
            "<h1>Forgot your password</h1>{}<section><form method=\"post\" action=\"/account/forgot\">\
             <label>The email address of your account<input type=\"text\" name=\"email\" value=\"{}\" required \
             autocomplete=\"email\" inputmode=\"email\"></label><button type=\"submit\">Email me a code</button>\
             </form></section><p><a href=\"/account/signin\">Back to sign in</a></p>",
            error_line(error),
            escape(email)
        ),
    )
}

fn reset_form(error: Option<&str>, notice: bool) -> Response {
    let notice = if notice {
        "<p role=\"status\">If that address belongs to an account here, a code is on its way. It works once, within \
         15 minutes.</p>"
    } else {
        ""
    };
    page(
        "Choose a new password",
        &format!(
            "<h1>Choose a new password</h1>{notice}{}<section><form method=\"post\" action=\"/account/reset\">\
             <label>Code from the mail<input type=\"text\" name=\"token\" required autocomplete=\"one-time-code\" \
             autocapitalize=\"characters\"></label>\
             <label>New password (at least 8 characters)<input type=\"password\" name=\"password\" required \
             minlength=\"8\" autocomplete=\"new-password\"></label><button type=\"submit\">Set the new password\
             </button></form><p class=\"muted\">Every session ends: sign in again everywhere afterwards.</p>\
             </section><p><a href=\"/account/forgot\">Send another code</a></p>",
            error_line(error)
        ),
    )
}

pub async fn forgot_page() -> Response {
    forgot_form(None, "")
}

pub async fn forgot(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<ForgotForm>,
) -> Response {
    if !session::same_origin(&state, &headers) {
        return super::wrong_origin(&state, "/account/forgot");
    }
    match crate::http::xrpc::account::start_password_reset(&state, &form.email) {
        Ok(()) => reset_form(None, true),
        Err(e) => forgot_form(Some(&e.message), &form.email),
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    token: String,
    password: String,
}

pub async fn reset(State(state): State<AppState>, headers: HeaderMap, PageForm(form): PageForm<ResetForm>) -> Response {
    if !session::same_origin(&state, &headers) {
        return super::wrong_origin(&state, "/account/forgot");
    }
    match crate::http::xrpc::account::finish_password_reset(&state, &form.token, form.password).await {
        Ok(_) => page(
            "Password changed",
            "<h1>Password changed</h1><section><p>Your new password is set, and every session has ended.</p>\
             <p><a href=\"/account/signin\"><button>Sign in</button></a></p></section>",
        ),
        Err(e) => reset_form(Some(&e.message), false),
    }
}

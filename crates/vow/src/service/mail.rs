//! Outgoing mail: the codes of the email flows and identity operations, from the templates in
//! `assets/mail/` (plain text, first line `Subject: …`, placeholders in braces; the HTML part
//! is made from the same text).
//!
//! With SMTP configured, a message is queued and a worker sends it, retrying with backoff; a
//! request never waits on the SMTP server, and a mail that cannot be sent after the last try is
//! logged as an error that names the settings to check. Without SMTP (development), each mail
//! is written to a file in `VOW_MAIL_DIR`, or else to the log.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::mpsc;

pub use crate::config::{MailConfig, SmtpConfig, SmtpTls};

/// The messages Vow sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    ConfirmEmail,
    UpdateEmail,
    ResetPassword,
    DeleteAccount,
    PlcOperation,
}

impl Template {
    fn text(self) -> &'static str {
        match self {
            Self::ConfirmEmail => include_str!("../../assets/mail/confirm_email.txt"),
            Self::UpdateEmail => include_str!("../../assets/mail/update_email.txt"),
            Self::ResetPassword => include_str!("../../assets/mail/reset_password.txt"),
            Self::DeleteAccount => include_str!("../../assets/mail/delete_account.txt"),
            Self::PlcOperation => include_str!("../../assets/mail/plc_operation.txt"),
        }
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Fills a template's `{name}` placeholders from `vars`.
pub fn render(template: Template, vars: &[(&str, &str)]) -> Rendered {
    let mut filled = template.text().to_owned();
    for (name, value) in vars {
        filled = filled.replace(&format!("{{{name}}}"), value);
    }
    let (first, body) = filled.split_once('\n').unwrap_or(("", &filled));
    let subject = first.strip_prefix("Subject: ").unwrap_or(first).trim().to_owned();
    let text = body.trim().to_owned();
    let html = to_html(&text);
    Rendered { subject, text, html }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Paragraphs become `<p>`; an indented line (the code) stands out.
fn to_html(text: &str) -> String {
    let mut html = String::from("<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.4\">");
    for para in text.split("\n\n") {
        if para.starts_with("    ") {
            html.push_str(&format!(
                "<p style=\"font-family:monospace;font-size:1.5em;letter-spacing:.05em\"><strong>{}</strong></p>",
                escape(para.trim())
            ));
        } else {
            html.push_str(&format!("<p>{}</p>", escape(&para.replace('\n', " "))));
        }
    }
    html.push_str("</body></html>");
    html
}

/// Why a mail was not accepted for sending.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0} is not a usable email address")]
    BadAddress(String),
    #[error("the mail queue is full; try again in a minute")]
    QueueFull,
    #[error("{0}")]
    Local(String),
}

struct Outgoing {
    to: String,
    message: lettre::Message,
}

/// Sends mail; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    queue: Option<mpsc::Sender<Outgoing>>,
    dir: Option<PathBuf>,
    log_when_unset: bool,
    from: Mailbox,
}

/// Attempts per message, and the first delay between them (doubling).
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(2);
const QUEUE: usize = 256;

impl Mailer {
    /// Builds the mailer; with SMTP, starts its worker (call inside the runtime).
    pub fn start(config: &MailConfig) -> Result<Self, String> {
        let from = Mailbox::new(
            Some(config.from_name.clone()),
            config.from_email.parse().map_err(|e| format!("the sender address {:?}: {e}", config.from_email))?,
        );
        let queue = match &config.smtp {
            None => None,
            Some(smtp) => {
                let transport = transport(smtp)?;
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(transport, rx));
                Some(tx)
            }
        };
        Ok(Self { queue, dir: config.dir.clone(), log_when_unset: config.log_when_unset, from })
    }

    /// Whether mail reaches people: SMTP is configured. Otherwise it is written to files or
    /// the log, which is only good for development.
    /// Mails queued for the SMTP server and not yet sent.
    pub fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.max_capacity() - q.capacity())
    }

    pub fn delivers(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether mail goes anywhere a person can read it: SMTP, the development directory, or
    /// the log of a local server.
    pub fn usable(&self) -> bool {
        self.queue.is_some() || self.dir.is_some() || self.log_when_unset
    }

    /// [`Mailer::usable`], as the error an endpoint that needs mail answers with.
    pub fn require(&self) -> Result<(), crate::error::XrpcError> {
        if self.usable() {
            return Ok(());
        }
        Err(crate::error::XrpcError::named(
            "EmailNotConfigured",
            "This server cannot send email: its operator has not set up SMTP (VOW_SMTP_HOST or VOW_SMTP_URL)",
        ))
    }

    /// Queues (or, without SMTP, writes) one message from a template to `to`.
    pub async fn send(&self, to: &str, template: Template, vars: &[(&str, &str)]) -> Result<(), MailError> {
        self.deliver(to, render(template, vars)).await
    }

    /// Queues a message the operator wrote (`com.atproto.admin.sendEmail`).
    pub async fn send_text(&self, to: &str, subject: &str, text: &str) -> Result<(), MailError> {
        let text = text.trim().to_owned();
        self.deliver(to, Rendered { subject: subject.to_owned(), html: to_html(&text), text }).await
    }

    async fn deliver(&self, to: &str, rendered: Rendered) -> Result<(), MailError> {
        let mailbox: Mailbox = to.parse().map_err(|_| MailError::BadAddress(to.to_owned()))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(mailbox)
            .subject(rendered.subject.clone())
            .multipart(MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone()))
            .map_err(|e| MailError::Local(format!("building the message: {e}")))?;
        if let Some(queue) = &self.queue {
            return queue.try_send(Outgoing { to: to.to_owned(), message }).map_err(|_| MailError::QueueFull);
        }
        let Some(dir) = &self.dir else {
            tracing::warn!(
                %to,
                subject = %rendered.subject,
                text = %rendered.text,
                "no SMTP server configured (VOW_SMTP_HOST): this mail was not sent; it is written here instead"
            );
            return Ok(());
        };
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // The address is part of the name so a reader can find a user's mail.
        let safe: String =
            to.chars().map(|c| if c.is_ascii_alphanumeric() || "@.-".contains(c) { c } else { '_' }).collect();
        let path = dir.join(format!("{}-{safe}.eml", stamp.as_nanos()));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| MailError::Local(format!("creating {}: {e}", dir.display())))?;
        tokio::fs::write(&path, message.formatted())
            .await
            .map_err(|e| MailError::Local(format!("writing {}: {e}", path.display())))?;
        tracing::info!(%to, subject = %rendered.subject, path = %path.display(), "mail written (no SMTP server configured)");
        Ok(())
    }
}

/// Connects to the SMTP server as the queue would (TLS and login included) and says how it
/// went, for `vow doctor`.
pub async fn check_connection(smtp: &SmtpConfig) -> Result<String, String> {
    let transport = transport(smtp)?;
    match transport.test_connection().await {
        Ok(true) => Ok(match smtp {
            SmtpConfig::Url(_) => "connected (VOW_SMTP_URL)".to_owned(),
            SmtpConfig::Parts { host, port, tls, user, .. } => {
                format!("connected to {host}:{port} ({tls:?}{})", if user.is_some() { ", logged in" } else { "" })
            }
        }),
        Ok(false) => Err("the server did not answer NOOP".into()),
        Err(e) => Err(crate::service::net::error_chain(&e)),
    }
}

/// Sends one test mail now (not through the queue), for `vow doctor --mail-to`.
pub async fn send_test(config: &MailConfig, to: &str) -> Result<(), String> {
    let smtp = config.smtp.as_ref().ok_or("no SMTP server configured")?;
    let from: Mailbox = format!("{} <{}>", config.from_name, config.from_email)
        .parse()
        .map_err(|e| format!("the sender address {}: {e}", config.from_email))?;
    let message = lettre::Message::builder()
        .from(from)
        .to(to.parse().map_err(|e| format!("{to}: {e}"))?)
        .subject("Vow: a test mail from vow doctor")
        .body("This mail was sent by `vow doctor` to check that this server's mail reaches people.".to_owned())
        .map_err(|e| e.to_string())?;
    transport(smtp)?.send(message).await.map(|_| ()).map_err(|e| crate::service::net::error_chain(&e))
}

fn transport(smtp: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    type Smtp = AsyncSmtpTransport<Tokio1Executor>;
    let builder = match smtp {
        SmtpConfig::Url(url) => Smtp::from_url(url).map_err(|e| format!("VOW_SMTP_URL: {e}"))?,
        SmtpConfig::Parts { host, port, user, pass, tls } => {
            let params = || TlsParameters::new(host.clone()).map_err(|e| format!("TLS for {host}: {e}"));
            let tls = match tls {
                SmtpTls::Implicit => Tls::Wrapper(params()?),
                SmtpTls::StartTls => Tls::Required(params()?),
                SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
                SmtpTls::None => Tls::None,
            };
            let mut builder = Smtp::builder_dangerous(host).port(*port).tls(tls);
            if let Some(user) = user {
                builder = builder.credentials(Credentials::new(user.clone(), pass.clone().unwrap_or_default()));
            }
            builder
        }
    };
    Ok(builder.timeout(Some(Duration::from_secs(30))).build())
}

/// The worker: one message at a time, each tried [`ATTEMPTS`] times with doubling delays.
async fn deliver(transport: AsyncSmtpTransport<Tokio1Executor>, mut queue: mpsc::Receiver<Outgoing>) {
    while let Some(mail) = queue.recv().await {
        let mut delay = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match transport.send(mail.message.clone()).await {
                Ok(_) => {
                    tracing::info!(to = %mail.to, "mail sent");
                    metrics::counter!("vow_mail_sent_total", "outcome" => "sent").increment(1);
                    break;
                }
                Err(e) if attempt == ATTEMPTS || e.is_permanent() => {
                    metrics::counter!("vow_mail_sent_total", "outcome" => "failed").increment(1);
                    tracing::error!(
                        to = %mail.to,
                        error = %e,
                        attempts = attempt,
                        "mail could not be sent; check VOW_SMTP_HOST, VOW_SMTP_PORT, VOW_SMTP_USER/PASS and VOW_SMTP_TLS"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(to = %mail.to, error = %e, attempt, "mail not sent yet; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_placeholder() {
        for t in [
            Template::ConfirmEmail,
            Template::UpdateEmail,
            Template::ResetPassword,
            Template::DeleteAccount,
            Template::PlcOperation,
        ] {
            let r = render(
                t,
                &[("handle", "a.test"), ("host", "pds.test"), ("token", "ABCDE-FGHIJ"), ("lifetime", "15 minutes")],
            );
            assert!(!r.subject.is_empty() && !r.subject.contains('{'), "{t:?}: {}", r.subject);
            assert!(!r.text.contains('{') && r.text.contains("ABCDE-FGHIJ"), "{t:?}: {}", r.text);
            assert!(r.html.contains("<strong>ABCDE-FGHIJ</strong>"), "{t:?}");
        }
        let r = render(Template::ConfirmEmail, &[("handle", "<b>&")]);
        assert!(r.html.contains("&lt;b&gt;&amp;") && !r.html.contains("<b>&"));
    }
}

#[cfg(test)]
mod address_tests {
    /// The local-run script's default sender must be usable, or Vow would not start.
    #[test]
    fn local_default_sender_parses() {
        assert!("admin@localhost".parse::<lettre::Address>().is_ok());
        assert!("noreply@pds.test".parse::<lettre::Address>().is_ok());
    }
}

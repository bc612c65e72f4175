//! Outgoing mail. Until an SMTP server is configured (issue 16 adds the SMTP queue), each mail
//! is written to a file in `VOW_MAIL_DIR` when that is set (local development and tests), or
//! else to the log, so the flows that need a mailed code can still be completed by the operator
//! or a developer.

use std::path::PathBuf;

/// One message: plain text, to one address.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub struct Mailer {
    dir: Option<PathBuf>,
    from: String,
}

impl Mailer {
    pub fn new(dir: Option<PathBuf>, from: &str) -> Self {
        Self { dir, from: from.to_owned() }
    }

    /// Sends `mail`; an error says why it could not be handed on (never what it said).
    pub async fn send(&self, mail: Mail) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            tracing::warn!(
                to = %mail.to,
                subject = %mail.subject,
                text = %mail.text,
                "no SMTP server configured: this mail was not sent; it is written here instead"
            );
            return Ok(());
        };
        let message = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.from, mail.to, mail.subject, mail.text
        );
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // The address is part of the name so a reader can find a user's mail; anything that is
        // not plainly safe in a file name becomes `_`.
        let safe: String =
            mail.to.chars().map(|c| if c.is_ascii_alphanumeric() || "@.-".contains(c) { c } else { '_' }).collect();
        let path = dir.join(format!("{}-{safe}.eml", stamp.as_nanos()));
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
        tokio::fs::write(&path, message).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
        tracing::info!(to = %mail.to, subject = %mail.subject, path = %path.display(), "mail written (no SMTP server configured)");
        Ok(())
    }
}

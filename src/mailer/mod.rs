//! Building and delivering messages: lettre over SMTP, or `.eml` files.
//!
//! The engine hands over an [`Outgoing`] (already rendered, already
//! validated) and gets back either success or a [`SendError`] whose
//! `is_transient()` decides retry versus bounce. Names and subjects are
//! stripped of control characters again here, so no caller can inject a
//! header even by mistake.
//!
//! Building ([`build`], [`prepare`]) is separate from sending
//! ([`RepMailer`]) so the engine can build outside any lock and keep the
//! exact bytes it sent.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::config::{Rep, TransportKind};
use crate::domain::EmailAddress;

mod build;
pub mod dkim;
mod file;
mod smtp;

pub use build::{build, new_message_id, prepare, prepare_signed, Prepared};

/// One email ready to be built.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub from_name: String,
    pub from: EmailAddress,
    pub to_name: String,
    pub to: EmailAddress,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// Without angle brackets: `abc123@example.com`.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    /// Oldest first, without angle brackets.
    pub references: Vec<String>,
    /// e.g. `mailto:nik@example.com?subject=unsubscribe`.
    pub unsubscribe_mailto: String,
    /// e.g. `https://cadence.example.com/unsubscribe/TOKEN`.
    pub unsubscribe_url: String,
    pub date: DateTime<Utc>,
}

/// Why a send did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later: 4xx, connection refused or lost before the end
    /// of DATA, timeouts before DATA.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The server refused for good (5xx). `recipient` is true when the
    /// refusal was about the recipient (a bounce).
    #[error("permanent failure ({code}): {message}")]
    Permanent { code: u16, message: String, recipient: bool },
    /// The message may or may not have been delivered (connection lost after
    /// the end of DATA was sent): never retried.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Our side cannot send (bad config, missing secret, unbuildable message).
    #[error("{0}")]
    Local(String),
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }
}

/// Delivers one rep's mail through the rep's configured transport.
///
/// Cheap to share: `send` takes `&self`, and the SMTP connection pool inside
/// is safe to use from many tasks at once.
pub struct RepMailer {
    transport: Transport,
    /// Signs everything this rep sends, whatever the transport (the `.eml`
    /// files then show exactly what would go out).
    signer: Option<dkim::DkimSigner>,
}

enum Transport {
    File(file::FileTransport),
    Smtp(Box<smtp::SmtpPool>),
}

impl RepMailer {
    /// Relative `smtp.dir` and `smtp.ca_file` resolve against `root`. Fails
    /// (as `Local`) on an unreadable CA file or DKIM key; a missing password
    /// shows up at the first send.
    pub fn new(rep: &Rep, root: &Path) -> Result<Self, SendError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            }
        };
        let transport = match rep.smtp.transport {
            TransportKind::File => Transport::File(file::FileTransport::new(resolve(&rep.smtp.dir))),
            TransportKind::Smtp => {
                let ca = rep.smtp.ca_file.as_deref().map(resolve);
                Transport::Smtp(Box::new(smtp::SmtpPool::new(&rep.smtp, ca.as_deref())?))
            }
        };
        let signer = match &rep.dkim {
            Some(d) => Some(dkim::DkimSigner::load(d, root).map_err(SendError::Local)?),
            None => None,
        };
        Ok(RepMailer { transport, signer })
    }

    /// Builds the message this rep would send, DKIM-signed if configured.
    pub fn prepare(&self, o: &Outgoing) -> Result<Prepared, SendError> {
        prepare_signed(o, self.signer.as_ref())
    }

    /// Builds and sends one message. `Ok` means the server accepted it (or
    /// the file is in place).
    pub async fn send(&self, o: &Outgoing) -> Result<(), SendError> {
        let prepared = self.prepare(o)?;
        self.send_prepared(&prepared).await
    }

    /// Closes pooled SMTP connections politely (QUIT); sends after this
    /// open new ones.
    pub async fn close(&self) {
        if let Transport::Smtp(s) = &self.transport {
            s.close().await;
        }
    }

    /// Sends a message built earlier with [`prepare`].
    pub async fn send_prepared(&self, p: &Prepared) -> Result<(), SendError> {
        match &self.transport {
            Transport::File(f) => f.send(p).await,
            Transport::Smtp(s) => s.send(p).await,
        }
    }
}

//! Building and delivering messages: lettre over SMTP, or `.eml` files.
//!
//! The engine hands over an [`Outgoing`] (already rendered, already
//! validated) and gets back either success or a [`SendError`] whose
//! `is_transient()` decides retry versus bounce. Names and subjects are
//! stripped of control characters again here, so no caller can inject a
//! header even by mistake.

use chrono::{DateTime, Utc};

use crate::domain::EmailAddress;

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
    Permanent {
        code: u16,
        message: String,
        recipient: bool,
    },
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

//! What an inbound message is: reply, auto-reply, bounce, complaint,
//! unsubscribe, or unknown. Pure: bytes in, [`Verdict`] out.

use chrono::{DateTime, NaiveDate, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Reply,
    AutoReply,
    Bounce,
    Complaint,
    Unsubscribe,
    Unknown,
}

/// What the classifier made of a message.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub kind: Kind,
    /// The lead address the message concerns: the sender of a reply, the
    /// failed recipient of a bounce, the complaining address of a report.
    pub lead: Option<String>,
    /// The sender (From), lower-cased.
    pub from: Option<String>,
    /// This message's Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// Message-IDs this message refers to (In-Reply-To, References, and for
    /// bounces and reports those of the returned original), without brackets.
    pub refers_to: Vec<String>,
    pub subject: Option<String>,
    pub date: Option<DateTime<Utc>>,
    /// The first lines of the new text, quoted history stripped.
    pub snippet: String,
    /// The headers and rules that decided the kind, e.g. `Auto-Submitted: auto-replied`.
    pub matched: Vec<String>,
    /// An auto-reply's stated return date.
    pub return_date: Option<NaiveDate>,
}

pub fn classify(raw: &[u8]) -> Verdict {
    let _ = raw;
    todo!("classifier helper")
}

//! What an inbound message does: match it to a lead, decide the action,
//! record it once.
//!
//! Matching trusts threading first (our Message-IDs in In-Reply-To and
//! References, including those quoted inside a bounce), then the sender's
//! address. Our own messages and mail from the rep's own address are never
//! replies.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::domain::{EmailAddress, EnrollmentState, TouchKind};
use crate::inbox::classify::{classify, Kind, Verdict};
use crate::schedule;
use crate::store::{InboundAction, InboundOutcome, Store, StoreError};

/// The longest an out-of-office pauses a lead, whatever it says.
const MAX_AUTO_PAUSE_DAYS: i64 = 30;

/// Addresses at these domains are people, not companies: a reply from one
/// never stops colleagues.
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.id",
    "yahoo.co.uk",
    "ymail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "163.com",
    "126.com",
    "zoho.com",
    "fastmail.com",
    "hey.com",
];

pub fn is_free_mail(domain: &str) -> bool {
    FREE_MAIL.contains(&domain)
}

/// What happened to one inbound message, for logs, metrics and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct Handled {
    pub kind: Kind,
    pub lead: Option<String>,
    /// Why nothing was done, when nothing was.
    pub ignored: Option<&'static str>,
    pub outcome: InboundOutcome,
}

/// Classifies `raw` (found in `rep`'s inbox), matches it and records it.
pub async fn handle(cfg: &Config, store: &Store, rep_id: &str, raw: &[u8], now: DateTime<Utc>) -> Result<Handled, StoreError> {
    let v = classify(raw);
    let key = match &v.message_id {
        Some(id) => id.clone(),
        None => format!("sha256:{}", hex::encode(Sha256::digest(raw))),
    };
    let mut handled = Handled { kind: v.kind, lead: None, ignored: None, outcome: InboundOutcome::default() };
    let rep = cfg.rep(rep_id);
    let own = rep.map(|r| r.email.as_str().to_string());
    // Our own messages (a Sent copy, a Bcc) are never replies.
    if let Some(id) = &v.message_id {
        if !store.sends_by_message_ids(std::slice::from_ref(id)).await?.is_empty() {
            handled.ignored = Some("our own message");
            return Ok(handled);
        }
    }
    let from_rep = v.from.is_some() && v.from == own;
    if from_rep && !matches!(v.kind, Kind::Bounce | Kind::Complaint) {
        handled.ignored = Some("from the rep's own address");
        return Ok(handled);
    }
    // Threading first, then the address the verdict names.
    let refs = store.sends_by_message_ids(&v.refers_to).await?;
    let mut lead = None;
    if let Some(r) = refs.first() {
        if let Some(id) = r.lead_id {
            lead = store.lead_by_id(id).await?;
        }
    }
    if lead.is_none() {
        if let Some(addr) = v.lead.as_deref().and_then(|a| EmailAddress::parse(a).ok()) {
            lead = store.lead_by_email(addr.as_str()).await?;
        }
    }
    let Some(lead) = lead else {
        handled.ignored = Some("matches no lead");
        crate::api::metrics::record_inbound(rep_id, crate::api::metrics::InboundKind::Unmatched);
        let action = InboundAction {
            rep: rep_id,
            message_key: &key,
            kind: TouchKind::Note,
            lead_id: None,
            at: now.timestamp_millis(),
            ..blank(rep_id, &key)
        };
        store.record_inbound(now.timestamp_millis(), &action, &|_| 0).await?;
        return Ok(handled);
    };
    handled.lead = Some(lead.email.clone());
    let enrollment = store.current_enrollment(lead.id).await?;
    let seq = enrollment.as_ref().and_then(|e| cfg.sequence(&e.sequence));
    let at = v.date.unwrap_or(now).timestamp_millis();
    let detail = describe(&v);
    let mut action = InboundAction {
        lead_id: Some(lead.id),
        at,
        subject: v.subject.as_deref(),
        message_id: v.message_id.as_deref(),
        detail: Some(&detail),
        ..blank(rep_id, &key)
    };
    let tz = lead.tz(cfg.daemon.timezone);
    match v.kind {
        Kind::Reply => {
            action.kind = TouchKind::Reply;
            action.enrollment_state = Some(EnrollmentState::Replied);
            action.stage = seq.and_then(|s| s.reply_stage.as_deref());
            let domain = lead.domain.as_str();
            if seq.is_none_or(|s| s.same_company_stop) && !is_free_mail(domain) {
                action.stop_domain = Some(domain);
            }
        }
        Kind::AutoReply => {
            action.kind = TouchKind::AutoReply;
            action.enrollment_state = Some(EnrollmentState::Paused);
            let fallback = seq.map_or(chrono::Duration::days(3), |s| s.auto_reply_pause.approx());
            let cap = now + chrono::Duration::days(MAX_AUTO_PAUSE_DAYS);
            let until = v
                .return_date
                .map(|d| schedule::local_instant(tz, d, chrono::NaiveTime::MIN))
                .filter(|t| *t > now)
                .unwrap_or(now + fallback)
                .min(cap);
            action.paused_until = Some(until.timestamp_millis());
        }
        Kind::Bounce => {
            action.kind = TouchKind::Bounce;
            action.enrollment_state = Some(EnrollmentState::Bounced);
            action.suppress = Some(lead.email.as_str());
        }
        Kind::Complaint => {
            action.kind = TouchKind::Complaint;
            action.enrollment_state = Some(EnrollmentState::Unsubscribed);
            action.suppress = Some(lead.email.as_str());
        }
        Kind::Unsubscribe => {
            action.kind = TouchKind::Unsubscribe;
            action.enrollment_state = Some(EnrollmentState::Unsubscribed);
            action.suppress = Some(lead.email.as_str());
        }
        Kind::Unknown => {
            handled.ignored = Some("not a reply, auto-reply, bounce, complaint or unsubscribe");
            let action = InboundAction { lead_id: None, ..blank(rep_id, &key) };
            store.record_inbound(now.timestamp_millis(), &action, &|_| 0).await?;
            return Ok(handled);
        }
    }
    let rank = |s: &str| cfg.stage_rank(s);
    handled.outcome = store.record_inbound(now.timestamp_millis(), &action, &rank).await?;
    if handled.outcome.new {
        use crate::api::metrics::{record_inbound, InboundKind};
        let kind = match v.kind {
            Kind::Reply => InboundKind::Reply,
            Kind::AutoReply => InboundKind::AutoReply,
            Kind::Bounce => InboundKind::Bounce,
            Kind::Complaint => InboundKind::Complaint,
            Kind::Unsubscribe => InboundKind::Unsubscribe,
            Kind::Unknown => InboundKind::Unmatched,
        };
        record_inbound(rep_id, kind);
    }
    Ok(handled)
}

fn blank<'a>(rep: &'a str, key: &'a str) -> InboundAction<'a> {
    InboundAction {
        rep,
        message_key: key,
        kind: TouchKind::Note,
        lead_id: None,
        at: 0,
        subject: None,
        message_id: None,
        detail: None,
        enrollment_state: None,
        paused_until: None,
        suppress: None,
        stage: None,
        stop_domain: None,
    }
}

/// The touchpoint's text: the snippet, and for auto-replies the return date.
fn describe(v: &Verdict) -> String {
    let mut s = v.snippet.clone();
    if let Some(d) = v.return_date {
        s = format!("back on {d}: {s}");
    }
    s.chars().take(300).collect()
}

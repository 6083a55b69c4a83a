//! What an inbound message does: match it to a lead, decide the action,
//! record it once.
//!
//! Messages come a fetch batch at a time, and a batch is matched and
//! recorded with a few statements rather than ten per message: each
//! statement is a round trip to sqlx's SQLite worker thread, and those
//! round trips were what made reading a full inbox slow.
//!
//! Matching trusts threading first (our Message-IDs in In-Reply-To and
//! References, including those quoted inside a bounce), then the sender's
//! address. Our own messages and mail from the rep's own address are never
//! replies.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::domain::{EmailAddress, EnrollmentState, TouchKind};
use crate::inbox::classify::{classify, Kind, Verdict};
use crate::schedule;
use crate::store::{InboundAction, InboundOutcome, MatchedLead, SentRef, Store, StoreError};

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

/// What a batch's messages say by their bytes alone: computed apart from
/// [`handle`] (the inbox watcher classifies the next batch on another
/// thread while this one is recorded).
pub struct Classified {
    verdicts: Vec<Verdict>,
    /// Each message's de-duplication key: its Message-ID, or a hash of it.
    keys: Vec<String>,
    /// Each message's touchpoint text.
    details: Vec<String>,
}

impl Classified {
    pub fn of<B: AsRef<[u8]>>(raws: &[B]) -> Classified {
        let verdicts: Vec<Verdict> = raws.iter().map(|raw| classify(raw.as_ref())).collect();
        let keys = raws
            .iter()
            .zip(&verdicts)
            .map(|(raw, v)| match &v.message_id {
                Some(id) => id.clone(),
                None => format!("sha256:{}", hex::encode(Sha256::digest(raw.as_ref()))),
            })
            .collect();
        let details = verdicts.iter().map(describe).collect();
        Classified { verdicts, keys, details }
    }
}

/// Matches a batch of classified messages found in `rep`'s inbox (in UID
/// order) and records them in one transaction, in order: a later message
/// sees what an earlier one did. One [`Handled`] per message.
///
/// The look-ups are made set-wise for the whole batch before anything is
/// recorded; [`Store::record_inbound`] writes the batch set-wise too, with
/// the same result as one message at a time.
pub async fn handle(cfg: &Config, store: &Store, rep_id: &str, batch: &Classified, now: DateTime<Utc>) -> Result<Vec<Handled>, StoreError> {
    let Classified { verdicts, keys, details } = batch;
    let known = Known::look_up(store, verdicts).await?;
    let own = cfg.rep(rep_id).map(|r| r.email.as_str());
    let mut decisions: Vec<Decision> = (0..verdicts.len())
        .map(|i| {
            let message = Message { verdict: &verdicts[i], key: &keys[i], detail: &details[i] };
            decide(cfg, rep_id, own, &known, message, now)
        })
        .collect();

    let actions: Vec<InboundAction> = decisions.iter().filter_map(|d| d.record.action().cloned()).collect();
    let rank = |s: &str| cfg.stage_rank(s);
    let mut outcomes = store.record_inbound(now.timestamp_millis(), &actions, &rank).await?.into_iter();
    for d in &mut decisions {
        use crate::api::metrics::{record_inbound, InboundKind};
        let outcome = d.record.action().and_then(|_| outcomes.next());
        match (&d.record, outcome) {
            (Record::Act(_), Some(outcome)) => {
                if outcome.new {
                    let kind = match d.handled.kind {
                        Kind::Reply => InboundKind::Reply,
                        Kind::AutoReply => InboundKind::AutoReply,
                        Kind::Bounce => InboundKind::Bounce,
                        Kind::Complaint => InboundKind::Complaint,
                        Kind::Unsubscribe => InboundKind::Unsubscribe,
                        Kind::Unknown => InboundKind::Unmatched,
                    };
                    record_inbound(rep_id, kind);
                }
                d.handled.outcome = outcome;
            }
            (Record::Unmatched(_), _) => record_inbound(rep_id, InboundKind::Unmatched),
            _ => {}
        }
    }
    Ok(decisions.into_iter().map(|d| d.handled).collect())
}

/// What the store knows about a batch's messages, looked up set-wise before
/// any of them is recorded. Recording never changes what is kept here: our
/// sends, the leads' addresses, domains and time zones, and which
/// enrollment is a lead's current one (a reply or a pause changes its
/// state, not which one it is; only enrolling makes a new one). What
/// recording does change (enrollment states, stages, suppressions), the
/// store reads again inside its transaction.
struct Known {
    /// Our sends among the batch's own and referred Message-IDs.
    sends: HashMap<String, SentRef>,
    leads: HashMap<i64, MatchedLead>,
    lead_ids_by_email: HashMap<String, i64>,
}

impl Known {
    async fn look_up(store: &Store, verdicts: &[Verdict]) -> Result<Known, StoreError> {
        let mut ids: Vec<&str> = verdicts.iter().flat_map(|v| v.message_id.iter().chain(&v.refers_to)).map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let sends: HashMap<String, SentRef> =
            store.sends_by_message_ids(&ids).await?.into_iter().map(|s| (s.message_id.clone(), s)).collect();

        let mut lead_ids: Vec<i64> = verdicts.iter().filter_map(|v| newest_referred(&sends, v)?.lead_id).collect();
        lead_ids.sort_unstable();
        lead_ids.dedup();
        let addresses: Vec<EmailAddress> = verdicts.iter().filter_map(lead_address).collect();
        let by_email: Vec<&EmailAddress> = addresses.iter().collect();
        let mut leads = HashMap::new();
        let mut lead_ids_by_email = HashMap::new();
        for lead in store.leads_for_matching(&lead_ids, &by_email).await? {
            lead_ids_by_email.insert(lead.email.clone(), lead.id);
            leads.insert(lead.id, lead);
        }
        Ok(Known { sends, leads, lead_ids_by_email })
    }

    /// Threading first (the newest of our sends the message refers to),
    /// then the address the verdict names.
    fn lead_of(&self, v: &Verdict) -> Option<&MatchedLead> {
        let by_thread = newest_referred(&self.sends, v).and_then(|s| s.lead_id).and_then(|id| self.leads.get(&id));
        by_thread.or_else(|| {
            let addr = lead_address(v)?;
            self.lead_ids_by_email.get(addr.as_str()).and_then(|id| self.leads.get(id))
        })
    }
}

fn newest_referred<'k>(sends: &'k HashMap<String, SentRef>, v: &Verdict) -> Option<&'k SentRef> {
    v.refers_to.iter().filter_map(|id| sends.get(id)).max_by_key(|s| s.id)
}

fn lead_address(v: &Verdict) -> Option<EmailAddress> {
    v.lead.as_deref().and_then(|a| EmailAddress::parse(a).ok())
}

/// One message of a batch and what is derived from its bytes alone.
#[derive(Clone, Copy)]
struct Message<'m> {
    verdict: &'m Verdict,
    /// The de-duplication key: the Message-ID, or a hash of the bytes.
    key: &'m str,
    /// The touchpoint's text.
    detail: &'m str,
}

/// What to write for one message.
enum Record<'a> {
    /// Nothing: our own message, or the rep's.
    Nothing,
    /// That it was seen, so it is not looked at again: it matches no lead.
    Unmatched(InboundAction<'a>),
    /// That it was seen: it matches a lead but asks for nothing.
    Unknown(InboundAction<'a>),
    /// Its effect on a lead.
    Act(InboundAction<'a>),
}

impl<'a> Record<'a> {
    fn action(&self) -> Option<&InboundAction<'a>> {
        match self {
            Record::Nothing => None,
            Record::Unmatched(a) | Record::Unknown(a) | Record::Act(a) => Some(a),
        }
    }
}

struct Decision<'a> {
    handled: Handled,
    record: Record<'a>,
}

/// What one message does, given what the store knew before the batch.
fn decide<'a>(cfg: &'a Config, rep_id: &'a str, own: Option<&str>, known: &'a Known, m: Message<'a>, now: DateTime<Utc>) -> Decision<'a> {
    let v = m.verdict;
    let mut handled = Handled { kind: v.kind, lead: None, ignored: None, outcome: InboundOutcome::default() };
    let ignore = |mut handled: Handled, why, record| {
        handled.ignored = Some(why);
        Decision { handled, record }
    };
    // Our own messages (a Sent copy, a Bcc) are never replies.
    if v.message_id.as_ref().is_some_and(|id| known.sends.contains_key(id)) {
        return ignore(handled, "our own message", Record::Nothing);
    }
    let from_rep = v.from.is_some() && v.from.as_deref() == own;
    if from_rep && !matches!(v.kind, Kind::Bounce | Kind::Complaint) {
        return ignore(handled, "from the rep's own address", Record::Nothing);
    }
    let Some(lead) = known.lead_of(v) else {
        let action = InboundAction { at: now.timestamp_millis(), ..InboundAction::seen(rep_id, m.key) };
        return ignore(handled, "matches no lead", Record::Unmatched(action));
    };
    handled.lead = Some(lead.email.clone());
    let seq = lead.sequence.as_deref().and_then(|name| cfg.sequence(name));
    let mut action = InboundAction {
        lead_id: Some(lead.id),
        at: v.date.unwrap_or(now).timestamp_millis(),
        subject: v.subject.as_deref(),
        message_id: v.message_id.as_deref(),
        detail: Some(m.detail),
        ..InboundAction::seen(rep_id, m.key)
    };
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
            let tz = lead.tz(cfg.daemon.timezone);
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
            let seen = InboundAction::seen(rep_id, m.key);
            return ignore(handled, "not a reply, auto-reply, bounce, complaint or unsubscribe", Record::Unknown(seen));
        }
    }
    Decision { handled, record: Record::Act(action) }
}

/// The touchpoint's text: the snippet, and for auto-replies the return date.
fn describe(v: &Verdict) -> String {
    let mut s = v.snippet.clone();
    if let Some(d) = v.return_date {
        s = format!("back on {d}: {s}");
    }
    s.chars().take(300).collect()
}

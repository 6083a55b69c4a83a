//! What an inbound message is: reply, auto-reply, bounce, complaint,
//! unsubscribe, or unknown. Pure: bytes in, [`Verdict`] out.
//!
//! Getting this wrong is expensive in both directions: an auto-reply taken
//! for a reply stops a sequence that should have paused, and a bounce taken
//! for a reply hides a dead address. So the structured reports (RFC 3464
//! delivery status, RFC 5965 feedback) are trusted first, then the explicit
//! auto-reply headers, then the prose of older mail systems; and every
//! decision records in `matched` what it was based on, so that
//! `cadence classify` can show a rep why.

mod bounce;
mod dates;
mod quote;

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders, PartType};

pub use dates::find_return_date;
pub use quote::{new_text, snippet};

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

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reply => "reply",
            Kind::AutoReply => "auto_reply",
            Kind::Bounce => "bounce",
            Kind::Complaint => "complaint",
            Kind::Unsubscribe => "unsubscribe",
            Kind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

impl Verdict {
    fn unknown(reason: &str) -> Verdict {
        Verdict {
            kind: Kind::Unknown,
            lead: None,
            from: None,
            message_id: None,
            refers_to: Vec::new(),
            subject: None,
            date: None,
            snippet: String::new(),
            matched: vec![reason.to_string()],
            return_date: None,
        }
    }

    /// A human-readable summary for `cadence classify`.
    pub fn to_text(&self) -> String {
        let none = "-";
        let mut out = String::new();
        let mut line = |k: &str, v: &str| {
            out.push_str(&format!("{k:<12} {v}\n"));
        };
        line("kind:", self.kind.as_str());
        line("lead:", self.lead.as_deref().unwrap_or(none));
        line("from:", self.from.as_deref().unwrap_or(none));
        line("subject:", self.subject.as_deref().unwrap_or(none));
        line("date:", &self.date.map_or_else(|| none.to_string(), |d| d.to_rfc3339()));
        line("message-id:", self.message_id.as_deref().unwrap_or(none));
        if self.refers_to.is_empty() {
            line("refers to:", none);
        } else {
            for (i, id) in self.refers_to.iter().enumerate() {
                line(if i == 0 { "refers to:" } else { "" }, id);
            }
        }
        if self.kind == Kind::AutoReply || self.return_date.is_some() {
            line("returns:", &self.return_date.map_or_else(|| "not stated".to_string(), |d| d.to_string()));
        }
        if self.matched.is_empty() {
            line("matched:", none);
        } else {
            for (i, m) in self.matched.iter().enumerate() {
                line(if i == 0 { "matched:" } else { "" }, m);
            }
        }
        line("snippet:", if self.snippet.is_empty() { none } else { &self.snippet });
        out
    }
}

/// Classify one message. Never panics: malformed input gives `unknown`.
pub fn classify(raw: &[u8]) -> Verdict {
    // mail-parser is robust but third-party; a panic deep in MIME recovery
    // must not take down the inbox watcher.
    std::panic::catch_unwind(|| classify_inner(raw)).unwrap_or_else(|_| Verdict::unknown("message could not be parsed"))
}

fn classify_inner(raw: &[u8]) -> Verdict {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Verdict::unknown("empty message");
    }
    let Some(msg) = MessageParser::default().parse(raw).filter(|m| !m.parts.is_empty()) else {
        return Verdict::unknown("message could not be parsed");
    };
    let mail = Mail::new(&msg);

    let mut v = Verdict {
        kind: Kind::Unknown,
        lead: None,
        from: mail.from.clone(),
        message_id: msg.message_id().and_then(clean_id),
        refers_to: Vec::new(),
        subject: msg.subject().map(|s| s.trim().to_string()),
        date: msg.date().filter(|d| d.is_valid()).and_then(|d| DateTime::<Utc>::from_timestamp(d.to_timestamp(), 0)),
        snippet: quote::snippet(&mail.new_text),
        matched: Vec::new(),
        return_date: None,
    };
    v.refers_to.extend(ids(msg.in_reply_to()));
    v.refers_to.extend(ids(msg.references()));

    if !(complaint(&msg, &mail, &mut v) || bounce(&msg, &mail, &mut v)) {
        person(&msg, &mail, &mut v);
    }
    dedup(&mut v.refers_to);
    v
}

/// What several rules look at, computed once.
struct Mail {
    from: Option<String>,
    from_name: String,
    subject: String,
    /// The main text body (HTML converted), quoted history included.
    body: String,
    /// What the sender wrote: the body without quoted history and signature.
    new_text: String,
    /// The message's local calendar date, for relative return dates.
    local_date: Option<NaiveDate>,
}

impl Mail {
    fn new(msg: &Message<'_>) -> Mail {
        let first = msg.from().and_then(|a| a.first());
        let body = msg.body_text(0).map(Cow::into_owned).unwrap_or_default();
        let new_text = quote::new_text(&body);
        Mail {
            from: first.and_then(|a| a.address.as_deref()).map(|a| a.trim().to_lowercase()).filter(|a| !a.is_empty()),
            from_name: first.and_then(|a| a.name.as_deref()).unwrap_or("").to_lowercase(),
            subject: msg.subject().unwrap_or("").trim().to_string(),
            new_text,
            body,
            local_date: msg.date().and_then(|d| NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))),
        }
    }

    /// Sent by the mail system itself rather than by a person.
    fn sent_by_mail_system(&self) -> bool {
        self.from.as_deref().is_some_and(|a| {
            let local = a.split('@').next().unwrap_or("");
            bounce::is_system_address(a) && !matches!(local, "noreply" | "no-reply" | "abuse")
        }) || ["mail delivery", "mailer-daemon", "mailer daemon", "postmaster", "mail administrator"]
            .iter()
            .any(|n| self.from_name.contains(n))
    }
}

/// A header's unfolded raw value, for headers mail-parser has no model of.
fn header(msg: &Message<'_>, name: &str) -> Option<String> {
    let part = msg.parts.first()?;
    let h = part.headers.iter().find(|h| h.name().eq_ignore_ascii_case(name))?;
    let bytes = msg.raw_message.get(h.offset_start() as usize..h.offset_end() as usize)?;
    let text = String::from_utf8_lossy(bytes);
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn has_header(msg: &Message<'_>, name: &str) -> bool {
    msg.parts.first().is_some_and(|p| p.headers.iter().any(|h| h.name().eq_ignore_ascii_case(name)))
}

fn clean_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>').trim();
    (!id.is_empty()).then(|| id.to_string())
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => {
            bounce::angle_ids(t).into_iter().chain(clean_id(t).filter(|t| !t.contains(' ') && !t.contains('<'))).take(1).collect()
        }
        HeaderValue::TextList(list) => list.iter().filter_map(|t| clean_id(t)).collect(),
        _ => Vec::new(),
    }
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|x| seen.insert(x.clone()));
}

/// Whether the part's content type is `ty` (`type/subtype`, lower case;
/// `type/*` for any subtype). Compared in place: every message's parts are
/// asked several times, and a formatted string each time was 2% of an
/// inbox tick's instructions.
fn part_is(part: &mail_parser::MessagePart<'_>, ty: &str) -> bool {
    let Some(ct) = part.content_type() else { return false };
    let (main, sub) = ty.split_once('/').unwrap_or((ty, ""));
    ct.ctype().eq_ignore_ascii_case(main) && (sub == "*" || ct.subtype().unwrap_or("").eq_ignore_ascii_case(sub))
}

fn report_type(msg: &Message<'_>) -> Option<String> {
    let ct = msg.parts.first()?.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart") || !ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report")) {
        return None;
    }
    Some(ct.attribute("report-type").unwrap_or("").to_ascii_lowercase())
}

fn part_text(part: &mail_parser::MessagePart<'_>) -> Option<String> {
    match &part.body {
        PartType::Text(t) => Some(t.to_string()),
        PartType::Html(h) => Some(mail_parser::decoders::html::html_to_text(h)),
        PartType::Binary(b) | PartType::InlineBinary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// The returned original of a report or bounce, in whichever form it came.
struct Original<'a> {
    messages: Vec<Cow<'a, Message<'a>>>,
    /// Raw text after the notice in a prose bounce.
    quoted_text: String,
}

impl Original<'_> {
    fn ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.messages {
            if m.parts.is_empty() {
                continue;
            }
            out.extend(m.message_id().and_then(clean_id));
            out.extend(ids(m.references()));
        }
        out.extend(bounce::ids_in_text(&self.quoted_text));
        out
    }

    fn to(&self) -> Option<String> {
        self.messages
            .iter()
            .filter(|m| !m.parts.is_empty())
            .find_map(|m| m.to()?.first()?.address.as_deref().and_then(bounce::clean_address))
            .or_else(|| {
                self.quoted_text.lines().find_map(|l| {
                    let l = l.trim_start();
                    let rest = l.strip_prefix("To:").or_else(|| l.strip_prefix("TO:")).or_else(|| l.strip_prefix("to:"))?;
                    rest.split([',', ' ']).find_map(bounce::clean_address)
                })
            })
    }

    fn from(&self) -> Option<String> {
        self.messages.iter().filter(|m| !m.parts.is_empty()).find_map(|m| m.from()?.first()?.address.as_deref().map(str::to_lowercase))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.messages.iter().find_map(|m| header(m, name))
    }
}

fn originals<'a>(msg: &'a Message<'a>) -> Original<'a> {
    let mut messages = Vec::new();
    for part in &msg.parts {
        match &part.body {
            PartType::Message(m) => messages.push(Cow::Borrowed(m)),
            _ => {
                if part_is(part, "text/rfc822-headers") || part_is(part, "message/*") {
                    if let Some(text) = part_text(part) {
                        let owned = text.into_bytes();
                        if let Some(m) = MessageParser::default().parse(&owned) {
                            if !m.parts.is_empty() {
                                messages.push(Cow::Owned(m.into_owned()));
                            }
                        }
                    }
                }
            }
        }
    }
    Original { messages, quoted_text: String::new() }
}

/// The text parts of the report itself (not of the returned original).
fn notice_texts(msg: &Message<'_>) -> String {
    let mut out = String::new();
    for part in &msg.parts {
        if part_is(part, "text/rfc822-headers") {
            continue;
        }
        if matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
            if let Some(t) = part_text(part) {
                out.push_str(&t);
                out.push('\n');
            }
        }
    }
    out
}

/// RFC 5965 feedback reports, Hotmail's older JMRP reports, and SES
/// complaint notifications.
fn complaint(msg: &Message<'_>, mail: &Mail, v: &mut Verdict) -> bool {
    let feedback_part = msg.parts.iter().find(|p| part_is(p, "message/feedback-report"));
    let report = report_type(msg);
    let orig = originals(msg);
    if report.as_deref() == Some("feedback-report") || feedback_part.is_some() {
        v.kind = Kind::Complaint;
        v.matched.push(if report.as_deref() == Some("feedback-report") {
            "Content-Type: multipart/report; report-type=feedback-report".to_string()
        } else {
            "part message/feedback-report".to_string()
        });
        let fields = feedback_part.and_then(part_text).map(|t| bounce::fields(&t)).unwrap_or_default();
        let field = |n: &str| fields.iter().find(|(k, _)| k == n).and_then(|(_, val)| bounce::clean_address(val));
        if let Some(ft) = fields.iter().find(|(k, _)| k == "feedback-type") {
            v.matched.push(format!("Feedback-Type: {}", ft.1));
        }
        v.lead = field("original-rcpt-to")
            .or_else(|| orig.header("X-HmXmrOriginalRecipient").and_then(|a| bounce::clean_address(&a)))
            .or_else(|| orig.to())
            .or_else(|| field("removal-recipient"));
        v.refers_to.extend(orig.ids());
        return true;
    }
    if let Some(rcpt) = orig.header("X-HmXmrOriginalRecipient") {
        v.kind = Kind::Complaint;
        v.matched.push("returned message carries X-HmXmrOriginalRecipient (Hotmail JMRP)".into());
        v.lead = bounce::clean_address(&rcpt).or_else(|| orig.to());
        v.refers_to.extend(orig.ids());
        return true;
    }
    if let Some(json) = ses_notification(&mail.body) {
        if json.kind == "Complaint" {
            v.kind = Kind::Complaint;
            v.matched.push("Amazon SES notification: Complaint".into());
            v.lead = json.address;
            v.refers_to.extend(json.message_id);
            return true;
        }
    }
    false
}

struct Ses {
    kind: String,
    address: Option<String>,
    message_id: Option<String>,
}

/// An Amazon SES notification forwarded by email (SNS email subscription):
/// JSON in the body, possibly with escaped quotes.
fn ses_notification(body: &str) -> Option<Ses> {
    if !body.contains("notificationType") {
        return None;
    }
    let flat = body.replace("\\\"", "\"").replace(['\n', '\r'], "");
    let value_after = |key: &str| -> Option<String> {
        let at = flat.find(&format!("\"{key}\""))?;
        let rest = &flat[at + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_string())
    };
    Some(Ses {
        kind: value_after("notificationType")?,
        address: value_after("emailAddress").and_then(|a| bounce::clean_address(&a)),
        message_id: value_after("messageId"),
    })
}

/// Delivery-status reports first, then the prose bounces of older MTAs.
fn bounce(msg: &Message<'_>, mail: &Mail, v: &mut Verdict) -> bool {
    let report = report_type(msg);
    let dsn_text: String = msg
        .parts
        .iter()
        .filter(|p| part_is(p, "message/delivery-status") || part_is(p, "message/global-delivery-status"))
        .filter_map(part_text)
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut orig = originals(msg);
    let is_dsn = report.as_deref() == Some("delivery-status") || !dsn_text.is_empty();

    if is_dsn {
        let mut recipients = bounce::parse_dsn(&dsn_text);
        if recipients.is_empty() {
            // Some MTAs put the fields in a text part instead.
            recipients = bounce::parse_dsn(&notice_texts(msg));
        }
        let matched = if report.as_deref() == Some("delivery-status") {
            "Content-Type: multipart/report; report-type=delivery-status"
        } else {
            "part message/delivery-status"
        };
        if !recipients.is_empty() {
            v.matched.push(matched.into());
            if let Some(failed) = recipients.iter().find(|r| r.failed()) {
                v.kind = Kind::Bounce;
                v.matched.push(format!("Action: {}", failed.action.as_deref().unwrap_or("(none)")));
                if let Some(s) = &failed.status {
                    v.matched.push(format!("Status: {s}"));
                }
                v.lead = recipients.iter().filter(|r| r.failed()).find_map(|r| r.address().map(str::to_string)).or_else(|| orig.to());
                v.refers_to.extend(orig.ids());
                return true;
            }
            // Delayed, delivered, relayed, expanded: a notice, not a bounce.
            let actions: Vec<String> = recipients.iter().filter_map(|r| r.action.clone()).collect();
            v.kind = Kind::Unknown;
            v.matched.push(if actions.is_empty() {
                "no failed recipient in the delivery report".to_string()
            } else {
                format!("Action: {} (not a bounce)", actions.join(", "))
            });
            v.refers_to.extend(orig.ids());
            return true;
        }
        // Fields missing: judge the prose below, remembering the report.
        v.matched.push(matched.into());
    }

    if let Some(ses) = ses_notification(&mail.body) {
        match ses.kind.as_str() {
            "Bounce" => {
                v.kind = Kind::Bounce;
                v.matched.push("Amazon SES notification: Bounce".into());
                v.lead = ses.address;
                v.refers_to.extend(ses.message_id);
                return true;
            }
            "Delivery" => {
                v.kind = Kind::Unknown;
                v.matched.push("Amazon SES notification: Delivery (not a bounce)".into());
                return true;
            }
            _ => {}
        }
    }

    let x_failed = header(msg, "X-Failed-Recipients");
    let null_path = header(msg, "Return-Path").is_some_and(|r| r.trim() == "<>");
    // A null return path and the original attached: how any MTA returns mail.
    let daemon = mail.sent_by_mail_system() || (null_path && !orig.messages.is_empty());
    let subject_hit = bounce::subject_says_bounce(&mail.subject);
    if !(is_dsn || x_failed.is_some() || daemon || subject_hit.is_some()) {
        return false;
    }
    // A person's reply quoting a bounce subject is not a bounce.
    if !(is_dsn || x_failed.is_some() || daemon) && is_human_reply(msg, mail) {
        return false;
    }
    // Broken MIME (a multipart whose boundary mail-parser could not read)
    // leaves no text part: fall back to the raw body.
    let raw_body = msg
        .parts
        .first()
        .and_then(|p| msg.raw_message.get(p.offset_body as usize..))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    // The texts are read only here, past the checks that let a person's
    // mail go (nearly every message), or above for a DSN.
    let notice_all = notice_texts(msg);
    let text = if !notice_all.trim().is_empty() {
        notice_all
    } else if !mail.body.trim().is_empty() {
        mail.body.clone()
    } else {
        raw_body.clone()
    };
    let end = bounce::notice_end(&text);
    let (notice, rest) = text.split_at(end);
    orig.quoted_text = rest.to_string();

    // DSN-style fields written into a text part.
    let text_dsn = bounce::parse_dsn(&text);
    let text_failed = text_dsn.iter().find(|r| r.failed());
    if text_failed.is_none() && text_dsn.iter().any(|r| r.action.is_some()) && x_failed.is_none() {
        v.kind = Kind::Unknown;
        v.matched
            .push(format!("Action: {} (not a bounce)", text_dsn.iter().filter_map(|r| r.action.clone()).collect::<Vec<_>>().join(", ")));
        v.refers_to.extend(orig.ids());
        return true;
    }
    let delay = bounce::delay_wording(notice).or_else(|| bounce::delay_wording(&mail.subject));
    if let (Some(d), None, None) = (delay, &x_failed, text_failed) {
        v.kind = Kind::Unknown;
        v.matched.push(format!("delay warning: \"{d}\" (not a bounce)"));
        v.refers_to.extend(orig.ids());
        return true;
    }
    // Some notices quote a header or two of the original before saying
    // what failed, so a mail-system sender is judged on the whole text.
    let failure = bounce::failure_wording(notice)
        .or_else(|| bounce::failure_wording(&mail.subject))
        .or_else(|| if daemon { bounce::failure_wording(&text) } else { None })
        .or_else(|| if daemon { bounce::failure_wording(&raw_body) } else { None });
    if x_failed.is_none() && text_failed.is_none() && failure.is_none() {
        if daemon {
            v.kind = Kind::Unknown;
            v.matched.push("sent by the mail system but not a recognisable bounce".into());
            return true;
        }
        v.matched.clear();
        return false;
    }
    if !(daemon || is_dsn || x_failed.is_some()) && failure.is_some() {
        // Subject alone plus generic wording: also require the sender to be
        // an automaton (null return path or auto-submitted).
        let auto = header(msg, "Auto-Submitted").is_some_and(|a| !a.eq_ignore_ascii_case("no"));
        let strong = subject_hit.is_some_and(|s| s != "rejected" && s != "bounce");
        if !(null_path || auto || strong) {
            v.matched.clear();
            return false;
        }
    }

    v.kind = Kind::Bounce;
    if daemon {
        v.matched.push(format!("From: {}", mail.from.as_deref().unwrap_or(&mail.from_name)));
    }
    if let Some(s) = subject_hit {
        v.matched.push(format!("Subject: contains \"{s}\""));
    }
    if let Some(x) = &x_failed {
        v.matched.push(format!("X-Failed-Recipients: {x}"));
    }
    if let Some(f) = failure {
        v.matched.push(format!("text: \"{f}\""));
    }
    let mut exclude: Vec<String> = Vec::new();
    exclude.extend(mail.from.clone());
    if let Some(to) = msg.to().and_then(|a| a.first()).and_then(|a| a.address.as_deref()) {
        exclude.push(to.to_lowercase());
    }
    exclude.extend(orig.from());
    v.lead = x_failed
        .as_deref()
        .and_then(|x| x.split(',').find_map(bounce::clean_address))
        .or_else(|| text_failed.and_then(|r| r.address().map(str::to_string)))
        .or_else(|| bounce::failed_recipient_in_text(notice, &exclude))
        .or_else(|| bounce::failed_recipient_in_text(&bounce_cut(&raw_body), &exclude))
        .or_else(|| orig.to());
    v.refers_to.extend(orig.ids());
    true
}

fn bounce_cut(text: &str) -> String {
    text[..bounce::notice_end(text)].to_string()
}

/// Threaded and free of automaton markers: someone typed this.
fn is_human_reply(msg: &Message<'_>, mail: &Mail) -> bool {
    let threaded = !ids(msg.in_reply_to()).is_empty();
    let auto = header(msg, "Auto-Submitted").is_some_and(|a| !a.eq_ignore_ascii_case("no"));
    let null_path = header(msg, "Return-Path").is_some_and(|r| r.trim() == "<>");
    threaded && !auto && !null_path && !mail.sent_by_mail_system()
}

/// Subject prefixes of automatic replies: Exchange/Outlook, Gmail, Apple,
/// Zimbra, and their Indonesian versions.
const OOO_SUBJECTS: &[&str] = &[
    "automatic reply",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "auto-response",
    "autoresponse",
    "autorespons",
    "automatic response",
    "out of office",
    "out of the office",
    "out-of-office",
    "ooo:",
    "[ooo]",
    "away until",
    "away from",
    "on vacation",
    "on leave",
    "vacation reply",
    "vacation:",
    "balasan otomatis",
    "balasan automatis",
    "jawaban otomatis",
    "respon otomatis",
    "di luar kantor",
    "tidak di kantor",
    "sedang cuti",
    "cuti:",
    "réponse automatique",
    "respuesta automática",
    "abwesenheitsnotiz",
    "automatische antwort",
];

/// Body wording of an out-of-office notice.
const OOO_WORDS: &[&str] = &[
    "out of the office",
    "out of office",
    "out-of-office",
    "on vacation",
    "on holiday",
    "on leave",
    "away from the office",
    "away from my desk",
    "limited access to email",
    "limited access to my email",
    "will be back",
    "i will return",
    "i'll be back",
    "i am away",
    "i'm away",
    "currently away",
    "return to the office",
    "annual leave",
    "parental leave",
    "maternity leave",
    "sedang cuti",
    "sedang tidak di kantor",
    "tidak berada di kantor",
    "di luar kantor",
    "sedang berlibur",
    "akan kembali",
    "balasan otomatis",
];

/// `subject`: lower-cased.
fn ooo_subject(subject: &str) -> Option<&'static str> {
    OOO_SUBJECTS.iter().copied().find(|p| subject.contains(p))
}

fn ooo_wording(text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    OOO_WORDS.iter().copied().find(|p| t.contains(p))
}

/// Words of a request to stop, in a short reply.
const UNSUBSCRIBE_WORDS: &[&str] = &[
    "unsubscribe",
    "remove me",
    "take me off",
    "stop emailing me",
    "stop e-mailing me",
    "stop sending me",
    "stop contacting me",
    "do not email me",
    "don't email me",
    "do not contact me",
    "don't contact me",
    "opt out",
    "opt-out",
    "berhenti berlangganan",
    "hapus saya",
    "hapus email saya",
    "jangan kirim",
    "jangan email",
    "jangan hubungi",
    "berhenti mengirim",
    "stop kirim",
];

/// Only this much new text counts as "asking to unsubscribe": a long reply
/// mentioning the word is a conversation.
const UNSUBSCRIBE_BODY_MAX: usize = 300;

/// Messages written (or auto-sent) on behalf of a person.
fn person(msg: &Message<'_>, mail: &Mail, v: &mut Verdict) {
    let subject = mail.subject.to_lowercase();
    let unsub_subject = subject.trim_start().starts_with("unsubscribe")
        || subject.trim_start().strip_prefix("re:").is_some_and(|s| s.trim_start().starts_with("unsubscribe"));
    if unsub_subject || has_header(msg, "X-Apple-Unsubscribe") {
        v.kind = Kind::Unsubscribe;
        v.matched.push(if unsub_subject { format!("Subject: {}", mail.subject) } else { "X-Apple-Unsubscribe".to_string() });
        v.lead = mail.from.clone();
        return;
    }

    let new = &mail.new_text;
    let auto_submitted = header(msg, "Auto-Submitted").filter(|a| !a.trim().is_empty() && !a.trim().eq_ignore_ascii_case("no"));
    let precedence = header(msg, "Precedence").map(|p| p.trim().to_lowercase());
    let ooo_subj = ooo_subject(&subject);
    let mut auto = Vec::new();
    if let Some(a) = &auto_submitted {
        auto.push(format!("Auto-Submitted: {a}"));
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Auto-Reply", "X-Autoresponse"] {
        if let Some(val) = header(msg, name) {
            auto.push(format!("{name}: {val}"));
        }
    }
    if precedence.as_deref() == Some("auto_reply") {
        auto.push("Precedence: auto_reply".into());
    }
    if let Some(s) = ooo_subj {
        auto.push(format!("Subject: {}", title_case_match(&mail.subject, s)));
    }
    let weak = precedence
        .as_deref()
        .filter(|p| matches!(*p, "bulk" | "junk" | "list"))
        .map(|p| format!("Precedence: {p}"))
        .into_iter()
        .chain(header(msg, "X-Auto-Response-Suppress").map(|x| format!("X-Auto-Response-Suppress: {x}")))
        .collect::<Vec<_>>();
    if auto.is_empty() && !weak.is_empty() {
        if let Some(w) = ooo_wording(new) {
            auto.extend(weak.iter().cloned());
            auto.push(format!("text: \"{w}\""));
        }
    }
    if !auto.is_empty() {
        v.kind = Kind::AutoReply;
        v.matched = auto;
        v.lead = mail.from.clone();
        let text = format!("{}\n{}", mail.subject, new);
        v.return_date = dates::find_return_date(&text, mail.local_date);
        return;
    }

    let threaded = !v.refers_to.is_empty();
    if let Some(p) = weak.iter().find(|w| w.starts_with("Precedence")) {
        v.kind = Kind::Unknown;
        v.matched.push(format!("{p} without out-of-office wording (bulk mail)"));
        return;
    }
    if !threaded && (has_header(msg, "List-Id") || has_header(msg, "List-Unsubscribe")) {
        v.kind = Kind::Unknown;
        v.matched.push("List-Id/List-Unsubscribe on an unthreaded message (list mail)".into());
        return;
    }
    // A short request to stop; bulk mail (whose footer always says
    // "unsubscribe") was set aside above.
    let short = new.chars().count() <= UNSUBSCRIBE_BODY_MAX;
    if short {
        let lower = new.to_lowercase();
        if let Some(w) = UNSUBSCRIBE_WORDS.iter().find(|w| lower.contains(*w)) {
            v.kind = Kind::Unsubscribe;
            v.matched.push(format!("text: \"{w}\""));
            v.lead = mail.from.clone();
            return;
        }
    }

    if mail.sent_by_mail_system() {
        v.kind = Kind::Unknown;
        v.matched.push("sent by the mail system but not a recognisable bounce".into());
        return;
    }
    if mail.from.is_none() {
        v.kind = Kind::Unknown;
        v.matched.push("no From address".into());
        return;
    }
    v.kind = Kind::Reply;
    v.lead = mail.from.clone();
    v.matched.push(if threaded { "In-Reply-To/References present, no automation markers".into() } else { "no automation markers".into() });
}

/// The matched subject pattern as the message spelled it, e.g.
/// `Automatic reply` rather than `automatic reply`.
fn title_case_match(subject: &str, pattern: &str) -> String {
    let lower = subject.to_lowercase();
    match lower.find(pattern) {
        Some(at) if subject.is_char_boundary(at) && subject.is_char_boundary(at + pattern.len()) => {
            subject[at..at + pattern.len()].trim_end_matches(':').to_string()
        }
        _ => pattern.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_input_is_unknown() {
        assert_eq!(classify(b"").kind, Kind::Unknown);
        assert_eq!(classify(b"\r\n\r\n").kind, Kind::Unknown);
        assert_eq!(classify(&[0xff, 0xfe, 0x00, 0x80]).kind, Kind::Unknown);
    }

    #[test]
    fn plain_reply_is_reply_with_lead() {
        let raw = b"From: Budi <Budi@Example.co.id>\r\nTo: rep@acme.example\r\nSubject: Re: hi\r\nIn-Reply-To: <a1@acme.example>\r\nMessage-ID: <b2@example.co.id>\r\n\r\nYes please.\r\n\r\nOn Mon, 11 Jan 2027, rep@acme.example wrote:\r\n> hi\r\n";
        let v = classify(raw);
        assert_eq!(v.kind, Kind::Reply);
        assert_eq!(v.lead.as_deref(), Some("budi@example.co.id"));
        assert_eq!(v.refers_to, vec!["a1@acme.example"]);
        assert_eq!(v.snippet, "Yes please.");
        assert!(v.to_text().contains("kind:        reply"));
    }
}

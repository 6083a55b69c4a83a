//! Delivery reports: the machine-readable kind (RFC 3464 `message/delivery-status`)
//! and the prose that older or odder MTAs send instead.
//!
//! mail-parser has no DSN model, so the fields are parsed here: blank-line
//! separated blocks of folded `Name: value` lines. For prose bounces we find
//! the failed address in the notice text and the returned original's ids in
//! the quoted headers, because that is all such a bounce gives us.

/// One per-recipient block of a delivery-status report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DsnRecipient {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
}

impl DsnRecipient {
    /// The address we sent to: Original-Recipient when it is an address
    /// (it survives forwarding), else Final-Recipient.
    pub fn address(&self) -> Option<&str> {
        self.original_recipient
            .as_deref()
            .filter(|a| looks_like_address(a))
            .or(self.final_recipient.as_deref().filter(|a| looks_like_address(a)))
    }

    /// A permanent failure: `failed` (or `expired`, which some MTAs write
    /// when they give up), or no Action at all with a 5.x.x status.
    pub fn failed(&self) -> bool {
        match self.action.as_deref() {
            Some(a) => a.starts_with("failed") || a.starts_with("expired"),
            None => self.status.as_deref().is_some_and(|s| s.starts_with('5')),
        }
    }
}

/// Unfolded `(name, value)` pairs of a header-like block, name lower-cased.
pub fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') && name.bytes().all(|b| b.is_ascii_graphic()) {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    out
}

/// The recipient blocks of a delivery-status body.
pub fn parse_dsn(text: &str) -> Vec<DsnRecipient> {
    let mut out = Vec::new();
    let normalised = text.replace("\r\n", "\n");
    for block in normalised.split("\n\n") {
        let mut r = DsnRecipient::default();
        let mut any = false;
        for (name, value) in fields(block) {
            match name.as_str() {
                "final-recipient" | "x-actual-recipient" if r.final_recipient.is_none() => {
                    r.final_recipient = address_field(&value);
                    any = true;
                }
                "original-recipient" => {
                    r.original_recipient = address_field(&value);
                    any = true;
                }
                "action" => r.action = Some(value.to_ascii_lowercase()),
                "status" => r.status = Some(value.trim().to_string()).filter(|s| !s.is_empty()),
                _ => {}
            }
        }
        if any {
            out.push(r);
        }
    }
    out
}

/// `rfc822; <Kiji@Example.com>` -> `kiji@example.com`.
fn address_field(value: &str) -> Option<String> {
    let v = value.split_once(';').map_or(value, |(_, a)| a);
    clean_address(v)
}

/// Strip brackets, quotes and trailing punctuation; lower-case; `None`
/// unless it looks like an address.
pub fn clean_address(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches(['<', '"', '\'', '(', '[']);
    let s = s.split(['>', '"', '\'', ')', ']', ' ', ',']).next().unwrap_or("");
    let s = s.trim_end_matches(['.', ':', ';']).to_lowercase();
    let s = s.strip_prefix("mailto:").unwrap_or(&s).to_string();
    looks_like_address(&s).then_some(s)
}

pub fn looks_like_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && (domain.contains('.') || domain == "localhost")
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && s.chars().all(|c| !c.is_whitespace() && c != '<' && c != '>')
        && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':')
}

/// Addresses that are the mail system itself, never a lead.
pub fn is_system_address(a: &str) -> bool {
    let local = a.split('@').next().unwrap_or("").to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon"
            | "mailer_daemon"
            | "post_master"
            | "mailerdaemon"
            | "postmaster"
            | "mail-daemon"
            | "maildaemon"
            | "daemon"
            | "root"
            | "abuse"
            | "noreply"
            | "no-reply"
            | "bounce"
            | "bounces"
    ) || local.starts_with("bounce+")
        || local.starts_with("bounces+")
        || local.starts_with("mailer-daemon")
        || local.starts_with("postmaster")
}

/// Subjects delivery systems put on failure reports.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered mail",
    "returned mail",
    "return mail",
    "mail returned",
    "failure notice",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "delivery status notification",
    "delivery notification",
    "mail delivery failed",
    "mail delivery failure",
    "mail delivery system",
    "could not be delivered",
    "couldn't be delivered",
    "not be delivered",
    "non-deliver",
    "non deliver",
    "nondeliver",
    "non-delivery",
    "postmaster notify",
    "mail system error",
    "message not delivered",
    "delivery problem",
    "failed delivery",
    "delivery report",
    "delivery status",
    "rejected",
    "returned to sender",
    "bounce",
    "mail could not",
    "permanent error",
    "unable to deliver",
    "unzustellbar",
    "no se puede entregar",
    "non remis",
    "gagal terkirim",
    "tidak terkirim",
    "error sending message",
    "warning: message",
    "message you sent",
    "failed mail",
    "mail failure",
    "nicht zustellbar",
    "sending failed",
    "failed to deliver",
    "mail failed",
    "returning to sender",
    "error sending your mail",
    "mail failure",
    "エラー",
    "未達",
    "配信不能",
];

pub fn subject_says_bounce(subject: &str) -> Option<&'static str> {
    let s = subject.to_lowercase();
    BOUNCE_SUBJECTS.iter().copied().find(|p| s.contains(p))
}

/// Wording of a notice that delivery failed for good.
const FAILURE_WORDS: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "can not be delivered",
    "cannot be delivered",
    "was not delivered",
    "wasn't delivered",
    "not able to deliver",
    "unable to deliver",
    "wasn't able to deliver",
    "was unable to deliver",
    "failed to deliver",
    "delivery failed",
    "delivery has failed",
    "delivery to the following recipient",
    "delivery to the following recipients failed",
    "permanent error",
    "permanent fatal error",
    "permanently failed",
    "fatal error",
    "fatal errors",
    "had delivery errors",
    "user unknown",
    "unknown user",
    "no such user",
    "no such recipient",
    "no such address",
    "does not exist",
    "doesn't exist",
    "mailbox unavailable",
    "mailbox not found",
    "mailbox is full",
    "mailbox full",
    "quota exceeded",
    "over quota",
    "address rejected",
    "recipient rejected",
    "rejected",
    "undeliverable",
    "undelivered",
    "returned to sender",
    "delivery status notification",
    "this is the qmail-send program",
    "this is the mail system at host",
    "i'm afraid i wasn't able to deliver",
    "message could not be delivered",
    "the following addresses had",
    "the following address(es) failed",
    "following recipient(s) failed",
    "giving up",
    "invalid recipient",
    "recipient address rejected",
    "not delivered",
    "delivery to the following",
    "did not reach",
    "couldn't be sent",
    "could not be sent",
    "could not deliver",
    "couldn't deliver",
    "failure notice",
    "returned mail",
    "bounced",
    "550 ",
    "550-",
    "551 ",
    "552 ",
    "553 ",
    "554 ",
    "5.1.1",
    "5.0.0",
    "5.7.1",
    "5.2.2",
    "5.1.0",
    "smtp error",
    "error message",
    "host unknown",
    "domain not found",
    "not found",
    "refused",
    "blocked",
    "denied",
    "rejected your message",
    "your message to",
    "transcript of session",
    "original message",
    "malformed",
    "incorrectly constructed",
    "failed addresses",
    "unknown host",
    "no valid recipients",
    "invalid user",
    "trouble delivering",
    "invalid address",
];

/// Wording of a warning that delivery is only late and still being tried.
const DELAY_WORDS: &[&str] = &[
    "this is a warning message only",
    "will be retried",
    "will continue to be attempted",
    "delivery attempts will continue",
    "has not yet been delivered",
    "has not been delivered yet",
    "not yet been delivered",
    "temporary failure report",
    "still being retried",
    "you do not need to resend",
    "could not send message for past",
    "could not send mail for past",
    "message is delayed",
    "delivery has been delayed",
    "has been delayed",
    "delivery delayed",
    "delayed mail",
    "delivery is delayed",
];

pub fn failure_wording(text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    FAILURE_WORDS.iter().copied().find(|p| t.contains(p))
}

pub fn delay_wording(text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    DELAY_WORDS.iter().copied().find(|p| t.contains(p))
}

/// Where a prose bounce stops describing the failure and starts quoting
/// the original: the byte offset of the first marker line or header block.
pub fn notice_end(text: &str) -> usize {
    const MARKERS: &[&str] = &[
        "original message",
        "copy of the message",
        "copy of the original message",
        "copy of your message",
        "original message follows",
        "the original message was",
        "original message headers",
        "header of the original message",
        "headers of the original message",
        "returned message",
        "message headers follow",
        "unsent message below",
        "undelivered message",
        "below this line is a copy",
        "content of the original message",
        "bounced e-mail",
        "following is a copy",
        "message text follows",
    ];
    let mut offset = 0;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim().to_lowercase();
        let is_marker =
            (l.starts_with('-') || l.starts_with('=') || l.starts_with('*') || l.ends_with(':')) && MARKERS.iter().any(|m| l.contains(m));
        // A quoted header block: two header lines in a row that real
        // originals carry.
        let is_headers = starts_header_block(&lines, i);
        if is_marker || is_headers {
            return offset;
        }
        offset += line.len();
    }
    text.len()
}

fn starts_header_block(lines: &[&str], i: usize) -> bool {
    const NAMES: &[&str] = &[
        "received:",
        "return-path:",
        "message-id:",
        "dkim-signature:",
        "date:",
        "from:",
        "to:",
        "subject:",
        "mime-version:",
        "x-mailer:",
        "content-type:",
        "reply-to:",
        "x-received:",
        "references:",
        "in-reply-to:",
    ];
    let is_h = |l: &str| {
        let l = l.trim_start().to_lowercase();
        NAMES.iter().any(|n| l.starts_with(n))
    };
    let Some(first) = lines.get(i) else {
        return false;
    };
    if first.starts_with([' ', '\t']) || !is_h(first) {
        return false;
    }
    // Need a second header line within the next few (allowing folds).
    lines.iter().skip(i + 1).take(6).filter(|l| !l.starts_with([' ', '\t'])).take(2).any(|l| is_h(l))
}

/// The ids in a returned original's headers found in prose: `Message-ID`
/// and `References` lines, folded lines included.
pub fn ids_in_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in fields_anywhere(text) {
        if name == "message-id" || name == "references" {
            out.extend(angle_ids(&value));
        }
    }
    out
}

/// Header-looking lines anywhere in `text` (indented ones too, since some
/// MTAs indent the quoted original), unfolded.
fn fields_anywhere(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let raw = line.trim_end_matches('\r');
        let t = raw.trim_start();
        let header = t.split_once(':').filter(|(n, _)| {
            let n = n.trim_end();
            !n.is_empty() && !n.contains(' ') && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if let Some((n, v)) = header {
            if let Some(c) = current.take() {
                out.push(c);
            }
            current = Some((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        } else if raw.starts_with([' ', '\t']) && !t.is_empty() {
            if let Some(c) = current.as_mut() {
                c.1.push(' ');
                c.1.push_str(t);
            }
        } else if let Some(c) = current.take() {
            out.push(c);
        }
    }
    out.extend(current);
    out
}

/// `<a@b> <c@d>` -> `["a@b", "c@d"]`; a bare id without brackets too.
pub fn angle_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else { break };
        let id = after[..end].trim();
        if !id.is_empty() && !id.contains(' ') {
            out.push(id.to_string());
        }
        rest = &after[end + 1..];
    }
    if out.is_empty() {
        let v = value.trim();
        if v.contains('@') && !v.contains(' ') {
            out.push(v.to_string());
        }
    }
    out
}

/// The failed recipient named in a prose notice. `exclude` holds the
/// bounce's own sender and recipient and the original's sender: none of
/// them is the address that failed.
pub fn failed_recipient_in_text(notice: &str, exclude: &[String]) -> Option<String> {
    let candidates = |line: &str| -> Vec<String> {
        line.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '[' | ']' | '"' | '\''))
            .filter_map(|w| {
                let w = w.trim_start_matches('<');
                let w = w.split('>').next().unwrap_or("");
                let w = w.trim_end_matches(':');
                let w = w.strip_prefix("rfc822;").unwrap_or(w);
                let w = w.strip_prefix("RFC822;").unwrap_or(w);
                clean_address(w)
            })
            .filter(|a| !is_system_address(a) && !exclude.iter().any(|e| e == a))
            .collect()
    };
    // Field-style recipient lines first, then qmail's "<addr>:" lines, then
    // the first address anywhere in the notice.
    for (name, value) in fields_anywhere(notice) {
        if matches!(
            name.as_str(),
            "final-recipient" | "original-recipient" | "x-failed-recipients" | "recipient" | "recipient address" | "address"
        ) {
            if let Some(a) = candidates(&value).into_iter().next() {
                return Some(a);
            }
        }
    }
    for line in notice.lines() {
        let t = line.trim();
        let lower = t.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("rcpt to:") {
            if let Some(a) = candidates(rest).into_iter().next() {
                return Some(a);
            }
        }
        if t.starts_with('<') && (t.ends_with(">:") || t.contains(">:")) {
            if let Some(a) = candidates(t).into_iter().next() {
                return Some(a);
            }
        }
    }
    notice.lines().filter(|l| !l.trim_start().to_ascii_lowercase().starts_with("mail from:")).flat_map(candidates).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_blocks_are_parsed_with_folding_and_prefixes() {
        let text = "Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822;\n  <Kiji@Example.COM>\nAction: failed\nStatus: 5.1.1\n\nFinal-Recipient: rfc822; other@example.com\nAction: delayed\nStatus: 4.4.1\n";
        let r = parse_dsn(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].address(), Some("kiji@example.com"));
        assert!(r[0].failed());
        assert!(!r[1].failed());
    }

    #[test]
    fn qmail_recipient_line() {
        let notice = "Hi. This is the qmail-send program at mx.example.net.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n\n<lead@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n";
        assert_eq!(failed_recipient_in_text(notice, &["rep@acme.example".into()]).as_deref(), Some("lead@example.org"));
    }

    #[test]
    fn ids_from_quoted_headers() {
        let text = "--- Below this line is a copy of the message.\n\nFrom: rep@acme.example\nMessage-ID: <abc.123@acme.example>\nReferences: <r1@acme.example>\n <r2@acme.example>\n\nbody";
        assert_eq!(ids_in_text(text), vec!["abc.123@acme.example", "r1@acme.example", "r2@acme.example"]);
    }

    #[test]
    fn notice_ends_at_the_original() {
        let text = "Your mail failed.\n\n----- Original message -----\nFrom: a@b.c\n";
        assert_eq!(&text[..notice_end(text)], "Your mail failed.\n\n");
    }
}

//! Turning an [`Outgoing`] into RFC 5322 bytes.
//!
//! Everything that reaches a header passes through a sanitiser first, even
//! though the engine already validated it: a lead's name or a subject comes
//! from imported CSVs and API calls, and one CR/LF in the wrong place would
//! let a lead add a `Bcc:` (and makes lettre panic in `Mailbox`). Names and
//! subjects lose their control characters; Message-IDs that are not plain
//! `left@right` tokens are refused (our own) or dropped (references).

use std::time::SystemTime;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use rand::RngCore;

use super::dkim::DkimSigner;
use super::{Outgoing, SendError};
use crate::domain::EmailAddress;

/// A message ready for any transport: built once, outside any connection
/// lock, and kept byte-for-byte as it was sent.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Without angle brackets; names the `.eml` file of the file transport.
    pub message_id: String,
    pub from: EmailAddress,
    pub to: EmailAddress,
    /// The formatted message, CRLF line endings, not dot-stuffed.
    pub bytes: Vec<u8>,
}

/// A fresh Message-ID on `domain`, without angle brackets.
///
/// `now` (the engine's clock) in milliseconds, then 80 random bits:
/// collisions are a non-issue across reps and restarts, and ids taken later
/// sort later, so the outbox's unique index on them grows at its end
/// instead of touching a random page for every email a claim inserts
/// (7,400 -> 7,750 emails/s; the claim's insert took 40% less time).
pub fn new_message_id(domain: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    rand::thread_rng().fill_bytes(&mut bytes[6..]);
    let domain: String = domain
        .trim()
        .trim_end_matches('.')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    let domain = if domain.is_empty() { "cadence.invalid".to_string() } else { domain };
    format!("{}@{}", hex::encode(bytes), domain)
}

/// Builds the message; see [`prepare`] for the bytes.
pub fn build(o: &Outgoing) -> Result<Message, SendError> {
    let message_id = clean_id(&o.message_id).ok_or_else(|| SendError::Local(format!("invalid Message-ID {:?}", o.message_id)))?;
    let from = mailbox(&o.from_name, &o.from)?;
    let to = mailbox(&o.to_name, &o.to)?;

    // Given, so that lettre does not derive it by parsing the From and To
    // headers it has just formatted (4% of dispatch's instructions). The
    // envelope is not what goes on the wire: the SMTP pool sends its own.
    let envelope = lettre::address::Envelope::new(Some(from.email.clone()), vec![to.email.clone()])
        .map_err(|e| SendError::Local(format!("cannot build the envelope: {e}")))?;
    let mut builder = Message::builder()
        .envelope(envelope)
        .from(from)
        .to(to)
        .subject(clean_text(&o.subject))
        .date(SystemTime::from(o.date))
        .message_id(Some(format!("<{message_id}>")));

    if let Some(parent) = o.in_reply_to.as_deref().and_then(clean_id) {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    let chain: Vec<String> = o.references.iter().filter_map(|r| clean_id(r)).map(|r| format!("<{r}>")).collect();
    if !chain.is_empty() {
        // lettre's `references()` replaces: the whole chain goes in at once.
        builder = builder.references(chain.join(" "));
    }

    let targets: Vec<String> = [&o.unsubscribe_mailto, &o.unsubscribe_url]
        .into_iter()
        .map(|t| clean_uri(t))
        .filter(|t| !t.is_empty())
        .map(|t| format!("<{t}>"))
        .collect();
    if !targets.is_empty() {
        builder = builder.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), targets.join(", "))).raw_header(
            HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click".to_string()),
        );
    }

    let built = match &o.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(crlf(&o.text), crlf(html))),
        None => builder.singlepart(SinglePart::plain(crlf(&o.text))),
    };
    built.map_err(|e| SendError::Local(format!("cannot build message: {e}")))
}

/// Builds and formats the message, unsigned.
pub fn prepare(o: &Outgoing) -> Result<Prepared, SendError> {
    prepare_signed(o, None)
}

/// Builds, DKIM-signs when a signer is given, and formats the message. The
/// signature covers these exact bytes: nothing may touch them afterwards.
pub fn prepare_signed(o: &Outgoing, signer: Option<&DkimSigner>) -> Result<Prepared, SendError> {
    let mut message = build(o)?;
    if let Some(signer) = signer {
        signer.sign(&mut message);
    }
    Ok(Prepared {
        message_id: clean_id(&o.message_id).unwrap_or_default(),
        from: o.from.clone(),
        to: o.to.clone(),
        bytes: message.formatted(),
    })
}

fn mailbox(name: &str, address: &EmailAddress) -> Result<Mailbox, SendError> {
    let addr: lettre::Address = address.as_str().parse().map_err(|e| SendError::Local(format!("invalid address {address}: {e}")))?;
    let name = clean_text(name);
    Ok(Mailbox::new((!name.is_empty()).then_some(name), addr))
}

/// CRLF line endings, made in one pass: lettre would otherwise insert each
/// `\r` in place, which is quadratic (minutes for a few MB). Copied a line
/// at a time, not a char at a time (which was 3% of dispatch's
/// instructions, callgrind).
fn crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut lines = s.split('\n').peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        if lines.peek().is_some() {
            out.push_str(if line.ends_with('\r') { "\n" } else { "\r\n" });
        }
    }
    out
}

/// Display names and subjects: control characters (CR, LF, TAB, C1, the
/// Unicode line separators) become spaces, runs of spaces collapse.
pub(crate) fn clean_text(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// A msg-id without brackets, or `None` when it is not one safe token.
pub(crate) fn clean_id(raw: &str) -> Option<String> {
    let id = raw.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    let ok = !id.is_empty()
        && id.len() <= 250
        && id.contains('@')
        && id.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'));
    ok.then(|| id.to_string())
}

/// A URI for `List-Unsubscribe`: nothing that could close the `<...>` or
/// start a new line.
fn clean_uri(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '<' | '>' | ',')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn outgoing() -> Outgoing {
        Outgoing {
            from_name: "Nik Levnaich".into(),
            from: EmailAddress::parse("nik@example.com").unwrap(),
            to_name: "Dana Prospect".into(),
            to: EmailAddress::parse("dana@lead.example.org").unwrap(),
            subject: "Quick question".into(),
            text: "Hi Dana,\nhow are things?\n".into(),
            html: None,
            message_id: "abc123@example.com".into(),
            in_reply_to: None,
            references: vec![],
            unsubscribe_mailto: "mailto:nik@example.com?subject=unsubscribe".into(),
            unsubscribe_url: "https://cadence.example.com/unsubscribe/TOKEN".into(),
            date: Utc.with_ymd_and_hms(2024, 3, 5, 14, 30, 0).unwrap(),
        }
    }

    use chrono::Utc;

    fn text(o: &Outgoing) -> String {
        String::from_utf8(prepare(o).unwrap().bytes).unwrap()
    }

    /// The header block, unfolded: one entry per header.
    fn headers(raw: &str) -> Vec<(String, String)> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        let mut out: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                out.last_mut().unwrap().1.push_str(line);
            } else {
                let (k, v) = line.split_once(':').expect("header line has a colon");
                out.push((k.to_string(), v.trim_start().to_string()));
            }
        }
        out
    }

    fn header(raw: &str, name: &str) -> Option<String> {
        headers(raw).into_iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    #[test]
    fn basic_headers() {
        let raw = text(&outgoing());
        assert_eq!(header(&raw, "Message-ID").unwrap(), "<abc123@example.com>");
        assert_eq!(header(&raw, "Subject").unwrap(), "Quick question");
        assert_eq!(header(&raw, "From").unwrap(), "\"Nik Levnaich\" <nik@example.com>");
        assert_eq!(header(&raw, "To").unwrap(), "\"Dana Prospect\" <dana@lead.example.org>");
        assert_eq!(header(&raw, "Date").unwrap(), "Tue, 05 Mar 2024 14:30:00 +0000");
        assert!(header(&raw, "In-Reply-To").is_none());
        assert!(header(&raw, "References").is_none());
        assert!(header(&raw, "Content-Type").unwrap().starts_with("text/plain"));
        assert!(raw.contains("\r\n\r\nHi Dana,\r\nhow are things?\r\n"), "{raw}");
    }

    #[test]
    fn threading_headers_carry_the_whole_chain() {
        let mut o = outgoing();
        o.message_id = "third@example.com".into();
        o.in_reply_to = Some("second@example.com".into());
        o.references = vec!["first@example.com".into(), "<second@example.com>".into(), "bad id@x".into()];
        let raw = text(&o);
        assert_eq!(header(&raw, "In-Reply-To").unwrap(), "<second@example.com>");
        let refs = header(&raw, "References").unwrap();
        let ids: Vec<&str> = refs.split_whitespace().collect();
        assert_eq!(ids, ["<first@example.com>", "<second@example.com>"]);
    }

    #[test]
    fn unsubscribe_headers() {
        let raw = text(&outgoing());
        assert_eq!(
            header(&raw, "List-Unsubscribe").unwrap().replace(' ', ""),
            "<mailto:nik@example.com?subject=unsubscribe>,<https://cadence.example.com/unsubscribe/TOKEN>"
        );
        assert_eq!(header(&raw, "List-Unsubscribe-Post").unwrap(), "List-Unsubscribe=One-Click");
    }

    #[test]
    fn html_makes_multipart_alternative() {
        let mut o = outgoing();
        o.html = Some("<p>Hi Dana, ünïcode</p>".into());
        let message = build(&o).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        let ct = header(&raw, "Content-Type").unwrap();
        assert!(ct.starts_with("multipart/alternative"), "{ct}");
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8"), "{raw}");
        assert!(raw.contains("Content-Type: text/html; charset=utf-8"), "{raw}");
        // The decoded parts are intact.
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert_eq!(parsed.body_html(0).unwrap(), "<p>Hi Dana, ünïcode</p>");
        assert!(parsed.body_text(0).unwrap().starts_with("Hi Dana,"));
    }

    #[test]
    fn utf8_names_and_subject_survive() {
        let mut o = outgoing();
        o.to_name = "Zoë Ångström".into();
        o.subject = "Grüße — quick question".into();
        let raw = text(&o);
        assert!(raw.is_ascii(), "headers are RFC 2047 encoded");
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert_eq!(parsed.subject().unwrap(), "Grüße — quick question");
        let to = parsed.to().unwrap().first().unwrap();
        assert_eq!(to.name().unwrap(), "Zoë Ångström");
        assert_eq!(to.address().unwrap(), "dana@lead.example.org");
    }

    #[test]
    fn hostile_name_and_subject_inject_nothing() {
        let mut o = outgoing();
        o.to_name = "Dana\r\nBcc: evil@x.com".into();
        o.from_name = "Nik\nBcc: evil@x.com\r\n".into();
        o.subject = "Hello\r\nBcc: evil@x.com\r\n\r\nbody".into();
        o.unsubscribe_url = "https://x/\r\nBcc: evil@x.com".into();
        o.in_reply_to = Some("a@b\r\nBcc: evil@x.com".into());
        let raw = text(&o);
        let hs = headers(&raw);
        assert!(!hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("bcc")), "no Bcc header: {raw}");
        // Every header line is a well-formed `Name: value` or a continuation.
        let head = raw.split("\r\n\r\n").next().unwrap();
        for line in head.split("\r\n") {
            assert!(
                line.starts_with(' ')
                    || line.starts_with('\t')
                    || line.split_once(':').is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic())),
                "broken header line {line:?} in {raw}"
            );
        }
        assert!(!raw.contains("\r\r") && !raw.replace("\r\n", "").contains('\n'));
        assert_eq!(header(&raw, "Subject").unwrap(), "Hello Bcc: evil@x.com body");
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert_eq!(parsed.to().unwrap().first().unwrap().name().unwrap(), "Dana Bcc: evil@x.com");
        assert!(parsed.bcc().is_none());
        assert!(header(&raw, "In-Reply-To").is_none());
    }

    #[test]
    fn line_endings_become_crlf_once() {
        assert_eq!(crlf("a\nb\r\nc\n\n"), "a\r\nb\r\nc\r\n\r\n");
        assert_eq!(crlf("\n"), "\r\n");
        assert_eq!(crlf("no newline"), "no newline");
    }

    #[test]
    fn invalid_own_message_id_is_a_local_error() {
        let mut o = outgoing();
        o.message_id = "no brackets allowed <here>@x".into();
        assert!(matches!(build(&o), Err(SendError::Local(_))));
    }

    #[test]
    fn message_ids_are_unique_and_on_the_domain() {
        let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("a time");
        let a = new_message_id("Example.com", now);
        let b = new_message_id("example.com", now);
        assert_ne!(a, b);
        let later = new_message_id("example.com", now + chrono::Duration::milliseconds(1));
        assert!(a < later && b < later, "ids sort by time: {a} {b} {later}");
        assert!(a.ends_with("@example.com"), "{a}");
        assert!(!a.contains('<') && !a.contains('>'));
        assert_eq!(clean_id(&a).as_deref(), Some(a.as_str()));
    }
}

//! The new text of a reply, without the quoted history and signature.
//!
//! A rep skimming `cadence show` wants to read what the lead wrote, not our
//! own email quoted back; the unsubscribe rule also looks only at new text,
//! so that a quoted footer saying "unsubscribe" does not count.

/// Longest snippet kept, in characters.
pub const SNIPPET_MAX: usize = 200;

/// The lines the sender wrote, quoted history and signature cut off.
pub fn new_text(body: &str) -> String {
    let lines: Vec<&str> = body.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        // A quoted line neither marks a signature nor starts the history.
        if t.starts_with('>') {
            continue;
        }
        let lower = t.to_lowercase();
        if is_signature_mark(line, &lower) || starts_history(&lines, i, &lower) {
            break;
        }
        out.push(t);
    }
    // Collapse runs of blank lines and trim the ends.
    let mut text = String::new();
    let mut blank = false;
    for l in out {
        if l.is_empty() {
            blank = true;
            continue;
        }
        if !text.is_empty() {
            text.push(if blank { '\n' } else { ' ' });
        }
        blank = false;
        text.push_str(l);
    }
    text.trim().to_string()
}

/// A message's [`new_text`] cut to [`SNIPPET_MAX`] characters on one line.
pub fn snippet(new_text: &str) -> String {
    let text = new_text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&text, SNIPPET_MAX)
}

pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s = s.trim_end().to_string();
    s.push('…');
    s
}

/// `lower`: the line trimmed and lower-cased.
fn is_signature_mark(line: &str, lower: &str) -> bool {
    let l = line.trim_end_matches('\r');
    l == "-- "
        || l == "--"
        || l == "__"
        || lower.starts_with("sent from my ")
        || lower.starts_with("get outlook for ")
        || lower.starts_with("dikirim dari ")
}

/// Does the quoted history start at line `i` (`lower`: that line trimmed
/// and lower-cased)?
fn starts_history(lines: &[&str], i: usize, lower: &str) -> bool {
    // Separator lines of Outlook, Thunderbird, Apple Mail, Yahoo.
    let bare = lower.trim_matches(|c: char| c == '-' || c == '_' || c == '=' || c == ' ');
    if (lower.starts_with("--") || lower.starts_with("__"))
        && matches!(
            bare,
            "original message" | "pesan asli" | "forwarded message" | "pesan yang diteruskan" | "pesan terusan" | "reply message" | ""
        )
        && (!bare.is_empty() || next_is_header(lines, i + 1))
    {
        return true;
    }
    if lower.starts_with("begin forwarded message") {
        return true;
    }
    // "On Mon, 12 Jan 2027 at 10:00, Rep <rep@x> wrote:", possibly wrapped
    // over two or three lines by Gmail; Indonesian "Pada ... menulis:";
    // French and German for good measure.
    let intros: &[(&str, &[&str])] = &[
        ("on ", &["wrote:", "writes:", "wrote :"]),
        ("pada ", &["menulis:", "menulis :"]),
        ("le ", &["a écrit :", "a écrit:"]),
        ("am ", &["schrieb:", "schrieb :"]),
    ];
    for (start, ends) in intros {
        if lower.starts_with(start) {
            let joined = lines[i..lines.len().min(i + 3)].iter().map(|l| l.trim().to_lowercase()).collect::<Vec<_>>();
            for k in 0..joined.len() {
                let upto = joined[..=k].join(" ");
                if ends.iter().any(|e| upto.ends_with(e)) {
                    return true;
                }
            }
        }
    }
    // Outlook without a separator: "From: ..." then "Sent: ..." / "Date:".
    if is_header_line(lower, &["from:", "dari:", "van:", "de:", "von:"]) {
        return lines[i + 1..lines.len().min(i + 5)]
            .iter()
            .any(|l| is_header_line(&l.trim().to_lowercase(), &["sent:", "date:", "dikirim:", "tanggal:", "to:", "kepada:", "subject:"]));
    }
    false
}

fn is_header_line(lower: &str, names: &[&str]) -> bool {
    let l = lower.trim_start_matches('*');
    names.iter().any(|n| l.starts_with(n))
}

fn next_is_header(lines: &[&str], i: usize) -> bool {
    lines.get(i).is_some_and(|l| is_header_line(&l.trim().to_lowercase(), &["from:", "dari:"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_quote_wrapped_over_two_lines() {
        let body = "Sounds good, let's talk Tuesday.\n\nOn Mon, Jan 11, 2027 at 9:02 AM Rita Rep <\nrita@acme.example> wrote:\n> Hi Budi,\n> quick question\n";
        assert_eq!(new_text(body), "Sounds good, let's talk Tuesday.");
    }

    #[test]
    fn outlook_original_message_block() {
        let body = "Not interested, thanks.\r\n\r\n-----Original Message-----\r\nFrom: Rita Rep <rita@acme.example>\r\nSent: Monday, January 11, 2027 9:02 AM\r\nSubject: Quick question\r\n\r\nHi";
        assert_eq!(new_text(body), "Not interested, thanks.");
    }

    #[test]
    fn outlook_from_sent_block_without_separator() {
        let body = "Please call me next week.\n\nFrom: Rita Rep <rita@acme.example>\nSent: Monday, January 11, 2027 9:02 AM\nTo: Budi\nSubject: Quick question\n\nHi Budi";
        assert_eq!(new_text(body), "Please call me next week.");
    }

    #[test]
    fn indonesian_quote_intro() {
        let body = "Boleh, kita bicara hari Selasa.\n\nPada tanggal Sen, 11 Jan 2027 pukul 09.02 Rita Rep <rita@acme.example> menulis:\n> Halo Budi";
        assert_eq!(new_text(body), "Boleh, kita bicara hari Selasa.");
    }

    #[test]
    fn signature_and_quoted_lines_dropped() {
        let body = "Yes.\n> earlier text\nWe can meet.\n-- \nBudi Santoso\nCTO";
        assert_eq!(new_text(body), "Yes. We can meet.");
    }

    #[test]
    fn lines_starting_with_on_are_kept_without_wrote() {
        let body = "On second thought, send me the pricing.\nThanks";
        assert_eq!(new_text(body), "On second thought, send me the pricing. Thanks");
    }

    #[test]
    fn snippet_is_capped() {
        let s = snippet(&"word ".repeat(100));
        assert!(s.chars().count() <= SNIPPET_MAX);
        assert!(s.ends_with('…'));
    }
}

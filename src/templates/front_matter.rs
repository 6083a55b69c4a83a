//! The `---` block at the top of a template that holds its subject.
//!
//! Only `subject` is allowed, so a plain `key: value` reader is enough and
//! a typo (`subjet:`) is an error rather than a silently missing subject.

/// A template file split into its subject and body.
#[derive(Debug, PartialEq)]
pub(crate) struct FrontMatter<'a> {
    pub subject: String,
    /// 1-based line of `subject:`.
    pub subject_line: usize,
    pub body: &'a str,
    /// 1-based line on which the body starts.
    pub body_line: usize,
}

/// Splits `src`; errors carry the 1-based line when one applies.
pub(crate) fn split(src: &str) -> Result<FrontMatter<'_>, (Option<usize>, String)> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut lines = src.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "---" {
        return Err((Some(1), "missing front matter: the file must start with a `---` line, then `subject: \"...\"`, then `---`".into()));
    }
    let mut offset = first.len();
    let mut subject = None;
    let mut line_no = 1;
    let mut closed = false;
    for line in lines {
        line_no += 1;
        offset += line.len();
        let l = line.trim();
        if l == "---" {
            closed = true;
            break;
        }
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((key, value)) = l.split_once(':') else {
            return Err((Some(line_no), format!("front matter: expected `key: value`, found {l:?}")));
        };
        let key = key.trim();
        if key != "subject" {
            return Err((Some(line_no), format!("front matter: unknown key `{key}` (only `subject` is allowed)")));
        }
        let value = unquote(value.trim()).map_err(|m| (Some(line_no), format!("front matter: subject: {m}")))?;
        subject = Some((value, line_no));
    }
    if !closed {
        return Err((Some(1), "front matter is not closed: add a `---` line after the subject".into()));
    }
    let Some((subject, subject_line)) = subject else {
        return Err((Some(1), "front matter has no `subject`".into()));
    };
    if subject.trim().is_empty() {
        return Err((Some(subject_line), "front matter: the subject is empty".into()));
    }
    Ok(FrontMatter { subject, subject_line, body: &src[offset..], body_line: line_no + 1 })
}

/// A double-quoted (JSON-style escapes), single-quoted (`''` for a quote)
/// or bare value.
fn unquote(v: &str) -> Result<String, String> {
    if v.starts_with('"') {
        serde_json::from_str::<String>(v).map_err(|_| format!("{v} is not a properly quoted string"))
    } else if let Some(inner) = v.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'').ok_or_else(|| format!("{v} has no closing quote"))?;
        Ok(inner.replace("''", "'"))
    } else {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_subject_and_body() {
        let fm = split("---\nsubject: \"Quick question about {{company}}\"\n---\nHi {{first_name}},\n").unwrap();
        assert_eq!(fm.subject, "Quick question about {{company}}");
        assert_eq!(fm.subject_line, 2);
        assert_eq!(fm.body, "Hi {{first_name}},\n");
        assert_eq!(fm.body_line, 4);
    }

    #[test]
    fn accepts_single_quotes_bare_values_and_crlf() {
        assert_eq!(split("---\r\nsubject: 'It''s {{company}}'\r\n---\r\nx").unwrap().subject, "It's {{company}}");
        assert_eq!(split("---\n# note\nsubject: Hello there\n---\n").unwrap().subject, "Hello there");
    }

    #[test]
    fn reports_each_mistake_with_its_line() {
        let e = split("Hi {{first_name}}\n").unwrap_err();
        assert_eq!(e.0, Some(1));
        assert!(e.1.contains("missing front matter"), "{}", e.1);
        let e = split("---\nsubjet: \"x\"\n---\nbody").unwrap_err();
        assert_eq!(e.0, Some(2));
        assert!(e.1.contains("unknown key `subjet`"), "{}", e.1);
        let e = split("---\n---\nbody").unwrap_err();
        assert!(e.1.contains("no `subject`"), "{}", e.1);
        let e = split("---\nsubject: \"x\"\n").unwrap_err();
        assert!(e.1.contains("not closed"), "{}", e.1);
        let e = split("---\nsubject: \"\"\n---\nbody").unwrap_err();
        assert!(e.1.contains("empty"), "{}", e.1);
        let e = split("---\nsubject: \"open\n---\nbody").unwrap_err();
        assert!(e.1.contains("quoted"), "{}", e.1);
    }
}

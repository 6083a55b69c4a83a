use std::collections::BTreeMap;

use super::EmailAddress;

/// A field value that may not go into a lead: the message names the field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FieldError {
    #[error("field `{field}` contains a control character (CR, LF, NUL or similar)")]
    Control { field: String },
    #[error("field `{field}` is longer than {max} characters")]
    TooLong { field: String, max: usize },
    #[error("field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl FieldError {
    pub fn field(&self) -> &str {
        match self {
            FieldError::Control { field } | FieldError::TooLong { field, .. } | FieldError::Invalid { field, .. } => field,
        }
    }
}

const MAX_FIELD: usize = 1000;

/// Refuses control characters (which could break or add a mail header) and
/// absurd lengths. Tabs are refused too: no lead field needs one.
pub fn check_field(field: &str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(char::is_control) {
        return Err(FieldError::Control { field: field.to_string() });
    }
    if value.chars().count() > MAX_FIELD {
        return Err(FieldError::TooLong { field: field.to_string(), max: MAX_FIELD });
    }
    Ok(())
}

/// What a user or CSV row supplies about a lead, validated.
///
/// `None` means "not given": enrolling an existing lead keeps its stored
/// value for that field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadInput {
    pub email: Option<EmailAddress>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub timezone: Option<chrono_tz::Tz>,
    pub region: Option<String>,
    pub value: Option<f64>,
    pub fields: BTreeMap<String, String>,
}

/// Names of the built-in lead columns (CSV headers and API fields).
pub const LEAD_COLUMNS: &[&str] = &["email", "first_name", "last_name", "company", "title", "timezone", "region", "value"];

impl LeadInput {
    /// Builds an input from named raw strings (CLI flags, CSV cells, JSON).
    /// Empty strings count as "not given". Unknown names become custom fields.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, FieldError> {
        let mut lead = LeadInput::default();
        for (name, raw) in pairs {
            lead.set(name, raw)?;
        }
        Ok(lead)
    }

    pub fn set(&mut self, name: &str, raw: &str) -> Result<(), FieldError> {
        let key = name.trim();
        let value = raw.trim();
        let label = if LEAD_COLUMNS.contains(&key) { key.to_string() } else { format!("fields.{key}") };
        check_field(&label, value)?;
        if value.is_empty() {
            return Ok(());
        }
        let text = || Some(value.to_string());
        match key {
            "email" => {
                self.email =
                    Some(EmailAddress::parse(value).map_err(|e| FieldError::Invalid { field: "email".into(), message: e.to_string() })?)
            }
            "first_name" => self.first_name = text(),
            "last_name" => self.last_name = text(),
            "company" => self.company = text(),
            "title" => self.title = text(),
            "region" => self.region = text(),
            "timezone" => {
                self.timezone = Some(parse_timezone(value).map_err(|message| FieldError::Invalid { field: "timezone".into(), message })?)
            }
            "value" => {
                let v: f64 = value.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0).ok_or_else(|| FieldError::Invalid {
                    field: "value".into(),
                    message: format!("{value:?} is not a non-negative number"),
                })?;
                self.value = Some(v);
            }
            _ => {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(FieldError::Invalid {
                        field: label,
                        message: "custom field names use letters, digits, `_` and `-`".into(),
                    });
                }
                self.fields.insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }
}

/// IANA names only: `America/New_York`, `UTC`. Abbreviations such as `PST`
/// or offsets such as `+02:00` are refused because they carry no DST rules.
pub fn parse_timezone(s: &str) -> Result<chrono_tz::Tz, String> {
    let tz: chrono_tz::Tz = s.parse().map_err(|_| format!("{s:?} is not an IANA time zone name (e.g. Europe/Berlin)"))?;
    let is_iana = s == "UTC" || s.contains('/');
    if !is_iana {
        return Err(format!("{s:?} is an abbreviation, not an IANA time zone name (e.g. America/Los_Angeles)"));
    }
    Ok(tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_pairs_with_custom_fields() {
        let l = LeadInput::from_pairs([("email", "A@B.io"), ("first_name", "Ana"), ("value", "1200.5"), ("plan", "pro"), ("title", "")])
            .unwrap();
        assert_eq!(l.email.unwrap().as_str(), "a@b.io");
        assert_eq!(l.first_name.as_deref(), Some("Ana"));
        assert_eq!(l.value, Some(1200.5));
        assert_eq!(l.title, None);
        assert_eq!(l.fields.get("plan").map(String::as_str), Some("pro"));
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        for (name, label) in [("first_name", "first_name"), ("company", "company"), ("plan", "fields.plan")] {
            for evil in ["Ana\r\nBcc: x@evil.com", "Ana\nX", "Ana\0", "A\tB"] {
                let e = LeadInput::from_pairs([(name, evil)]).unwrap_err();
                assert_eq!(e.field(), label, "{evil:?}");
                assert!(e.to_string().contains(label));
            }
        }
    }

    #[test]
    fn timezone_must_be_iana() {
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert!(parse_timezone("UTC").is_ok());
        assert!(parse_timezone("EST").is_err());
        assert!(parse_timezone("Mars/Olympus").is_err());
        let e = LeadInput::from_pairs([("timezone", "PST")]).unwrap_err();
        assert_eq!(e.field(), "timezone");
    }

    #[test]
    fn value_must_be_a_number() {
        assert_eq!(LeadInput::from_pairs([("value", "lots")]).unwrap_err().field(), "value");
        assert_eq!(LeadInput::from_pairs([("value", "-5")]).unwrap_err().field(), "value");
    }
}

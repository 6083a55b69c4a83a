use std::fmt;
use std::str::FromStr;

/// An email address in the syntax SMTP accepts, normalised to lower case.
///
/// Addresses are compared case-insensitively everywhere (the lead table's
/// unique key is the lower-cased form). Parsing uses lettre's address parser,
/// the same one that builds the envelope, plus the RFC 5321 length limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmailError {
    #[error("email address is empty")]
    Empty,
    #[error("email address {0:?} contains a control character or space")]
    Control(String),
    #[error("email address {0:?} is longer than 254 characters")]
    TooLong(String),
    #[error("email address {0:?} has a local part longer than 64 characters")]
    LocalTooLong(String),
    #[error("{0:?} is not a valid email address")]
    Syntax(String),
}

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EmailError::Control(s.to_string()));
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong(s.to_string()));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(EmailError::Syntax(s.to_string()));
        };
        if local.len() > 64 {
            return Err(EmailError::LocalTooLong(s.to_string()));
        }
        // A domain needs a dot: `user@localhost` is never a prospect.
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(EmailError::Syntax(s.to_string()));
        }
        lettre::Address::from_str(s).map_err(|_| EmailError::Syntax(s.to_string()))?;
        Ok(EmailAddress(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `@`, used for domain caps, suppression and company matching.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EmailAddress {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EmailAddress::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_normalises_case() {
        let a = EmailAddress::parse(" Ana.Lee+x@Example.COM ").unwrap();
        assert_eq!(a.as_str(), "ana.lee+x@example.com");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn refuses_bad_syntax() {
        for bad in ["", "ana", "ana@", "@example.com", "ana@example", "a b@example.com", "ana@@example.com", "ana@.example.com"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn refuses_header_injection() {
        let e = EmailAddress::parse("ana@example.com\r\nBcc: x@evil.com").unwrap_err();
        assert!(matches!(e, EmailError::Control(_)));
    }

    #[test]
    fn enforces_rfc5321_lengths() {
        let local = "a".repeat(65);
        assert!(matches!(EmailAddress::parse(&format!("{local}@example.com")), Err(EmailError::LocalTooLong(_))));
        let domain = format!("{}.com", "d".repeat(250));
        assert!(matches!(EmailAddress::parse(&format!("a@{domain}")), Err(EmailError::TooLong(_))));
    }
}

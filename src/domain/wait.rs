use std::fmt;
use std::str::FromStr;

/// A wait between steps, or any duration in the config.
///
/// Calendar and business days are kept apart from fixed lengths because they
/// are counted in the lead's local time: "2 days" after 09:00 is 09:00 two
/// days later even across a DST change, and "3 business days" skips weekends
/// and the lead's holidays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// A fixed length in seconds (`30s`, `15m`, `4 hours`).
    Seconds(i64),
    /// Calendar days at the same local time (`1 day`, `2 days`).
    Days(u32),
    /// Working days at the same local time (`3 business days`).
    BusinessDays(u32),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{input:?} is not a duration; write e.g. \"30s\", \"15m\", \"4 hours\", \"2 days\" or \"3 business days\"")]
pub struct WaitError {
    pub input: String,
}

impl Wait {
    pub const ZERO: Wait = Wait::Seconds(0);

    pub fn parse(raw: &str) -> Result<Wait, WaitError> {
        let err = || WaitError { input: raw.to_string() };
        let s = raw.trim().to_ascii_lowercase();
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits_end == 0 {
            return Err(err());
        }
        let n: i64 = s[..digits_end].parse().map_err(|_| err())?;
        let unit = s[digits_end..].trim();
        let unit_words: Vec<&str> = unit.split_whitespace().collect();
        let secs = |mult: i64| n.checked_mul(mult).map(Wait::Seconds).ok_or_else(err);
        let days = || u32::try_from(n).map_err(|_| err());
        match unit_words.as_slice() {
            ["s" | "sec" | "secs" | "second" | "seconds"] => secs(1),
            ["m" | "min" | "mins" | "minute" | "minutes"] => secs(60),
            ["h" | "hour" | "hours"] => secs(3600),
            ["d" | "day" | "days"] => Ok(Wait::Days(days()?)),
            ["w" | "week" | "weeks"] => Ok(Wait::Days(days()?.checked_mul(7).ok_or_else(err)?)),
            ["business", "day" | "days"] => Ok(Wait::BusinessDays(days()?)),
            [] if n == 0 => Ok(Wait::ZERO),
            _ => Err(err()),
        }
    }

    /// The length as a fixed `chrono::Duration`, counting a day as 24 hours.
    /// Used where a duration is not tied to a lead's calendar (lags, gaps,
    /// stale thresholds).
    pub fn approx(self) -> chrono::Duration {
        match self {
            Wait::Seconds(s) => chrono::Duration::seconds(s),
            Wait::Days(d) | Wait::BusinessDays(d) => chrono::Duration::days(i64::from(d)),
        }
    }

    pub fn is_zero(self) -> bool {
        matches!(self, Wait::Seconds(0) | Wait::Days(0) | Wait::BusinessDays(0))
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: i64| if n == 1 { "" } else { "s" };
        match *self {
            Wait::Seconds(s) if s != 0 && s % 3600 == 0 => {
                write!(f, "{} hour{}", s / 3600, plural(s / 3600))
            }
            Wait::Seconds(s) if s != 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            Wait::Seconds(s) => write!(f, "{s}s"),
            Wait::Days(d) => write!(f, "{d} day{}", plural(d.into())),
            Wait::BusinessDays(d) => write!(f, "{d} business day{}", plural(d.into())),
        }
    }
}

impl FromStr for Wait {
    type Err = WaitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Wait::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(Wait::parse("30s"), Ok(Wait::Seconds(30)));
        assert_eq!(Wait::parse("15m"), Ok(Wait::Seconds(900)));
        assert_eq!(Wait::parse("4 hours"), Ok(Wait::Seconds(4 * 3600)));
        assert_eq!(Wait::parse("1 hour"), Ok(Wait::Seconds(3600)));
        assert_eq!(Wait::parse("1 day"), Ok(Wait::Days(1)));
        assert_eq!(Wait::parse("2 days"), Ok(Wait::Days(2)));
        assert_eq!(Wait::parse("3 business days"), Ok(Wait::BusinessDays(3)));
        assert_eq!(Wait::parse("1 business day"), Ok(Wait::BusinessDays(1)));
        assert_eq!(Wait::parse(" 2  Business   Days "), Ok(Wait::BusinessDays(2)));
        assert_eq!(Wait::parse("0s"), Ok(Wait::ZERO));
        assert_eq!(Wait::parse("0"), Ok(Wait::ZERO));
        assert_eq!(Wait::parse("2 weeks"), Ok(Wait::Days(14)));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "days",
            "3",
            "three days",
            "3 fortnights",
            "-2 days",
            "2.5 days",
            "3 business",
            "3 business weeks",
            "99999999999999999999s",
        ] {
            let e = Wait::parse(bad).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("business days"));
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["30s", "15m", "4 hours", "1 day", "2 days", "3 business days", "1 business day"] {
            let w = Wait::parse(s).unwrap();
            assert_eq!(Wait::parse(&w.to_string()).unwrap(), w, "{s}");
        }
    }
}

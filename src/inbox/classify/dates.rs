//! Reading the return date out of an out-of-office text.
//!
//! Auto-replies state their return date in free prose, in English or
//! Indonesian, in whatever format the sender's locale prints. We look for an
//! anchor ("back on", "until", "kembali pada", "sampai tanggal"...) and parse
//! the date expression that follows it; dates without a year, weekdays and
//! "tomorrow" are resolved against the message's own Date, never the clock.

use chrono::{Datelike, Duration, NaiveDate, Weekday};

/// Phrases after which a return date usually follows, longest first so that
/// "back in the office on" wins over "back".
const ANCHORS: &[&str] = &[
    "back in the office on",
    "back in the office",
    "back in office",
    "back at work on",
    "back at work",
    "back at my desk",
    "available again on",
    "available again",
    "available from",
    "in the office on",
    "returning on",
    "return on",
    "returning",
    "return",
    "returns",
    "back on",
    "back",
    "until",
    "till",
    "through",
    "thru",
    "resume",
    "kembali ke kantor pada",
    "kembali ke kantor",
    "kembali bekerja pada",
    "kembali bekerja",
    "masuk kembali pada",
    "masuk kembali",
    "aktif kembali",
    "kembali pada",
    "kembali tanggal",
    "kembali",
    "sampai dengan",
    "sampai",
    "hingga",
    "s/d",
    "s.d.",
];

/// Words skipped between an anchor and the date ("back in the office on the
/// 12th", "sampai dengan hari Senin, tanggal 12").
const FILLERS: &[&str] = &[
    "on", "the", "of", "to", "in", "at", "office", "from", "by", "work", "my", "desk", "again", "and", "will", "be", "i", "i'll", "am",
    "pm", "next", "pada", "tanggal", "tgl", "hari", "ke", "kantor", "dengan", "tgl.", "mulai", "saya", "akan", "kembali", "bekerja",
    "masuk", "aktif", "di", "-",
];

const MONTHS: &[(&str, u32)] = &[
    ("january", 1),
    ("januari", 1),
    ("jan", 1),
    ("february", 2),
    ("februari", 2),
    ("pebruari", 2),
    ("feb", 2),
    ("march", 3),
    ("maret", 3),
    ("mar", 3),
    ("april", 4),
    ("apr", 4),
    ("may", 5),
    ("mei", 5),
    ("june", 6),
    ("juni", 6),
    ("jun", 6),
    ("july", 7),
    ("juli", 7),
    ("jul", 7),
    ("august", 8),
    ("agustus", 8),
    ("aug", 8),
    ("agu", 8),
    ("agt", 8),
    ("ags", 8),
    ("september", 9),
    ("sept", 9),
    ("sep", 9),
    ("october", 10),
    ("oktober", 10),
    ("oct", 10),
    ("okt", 10),
    ("november", 11),
    ("nopember", 11),
    ("nov", 11),
    ("december", 12),
    ("desember", 12),
    ("dec", 12),
    ("des", 12),
];

const WEEKDAYS: &[(&str, Weekday)] = &[
    ("monday", Weekday::Mon),
    ("mon", Weekday::Mon),
    ("senin", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("tue", Weekday::Tue),
    ("tues", Weekday::Tue),
    ("selasa", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("wed", Weekday::Wed),
    ("rabu", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("thu", Weekday::Thu),
    ("thurs", Weekday::Thu),
    ("kamis", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("fri", Weekday::Fri),
    ("jumat", Weekday::Fri),
    ("jum'at", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sat", Weekday::Sat),
    ("sabtu", Weekday::Sat),
    ("sunday", Weekday::Sun),
    ("sun", Weekday::Sun),
    ("minggu", Weekday::Sun),
    ("ahad", Weekday::Sun),
];

/// The return date stated in `text`, resolved against `base` (the local date
/// the message was written). Dates before `base` or more than a year after
/// it are not return dates and are ignored.
pub fn find_return_date(text: &str, base: Option<NaiveDate>) -> Option<NaiveDate> {
    let tokens = tokenize(text);
    let plausible = |d: NaiveDate| match base {
        Some(b) => d >= b && d <= b + Duration::days(366),
        None => true,
    };
    // Anchored: the first anchor followed by a readable date wins.
    for i in 0..tokens.len() {
        if let Some(len) = anchor_at(&tokens, i) {
            if let Some(d) = parse_date_at(&tokens, i + len, base) {
                if plausible(d) {
                    return Some(d);
                }
            }
        }
    }
    // Unanchored ("Out of office 5 - 12 January 2027"): the latest explicit
    // calendar date in the text is the end of the absence.
    (0..tokens.len()).filter_map(|i| parse_explicit(&tokens, i, base).map(|(d, _)| d)).filter(|d| plausible(*d)).max()
}

fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == ';')
        .map(|t| t.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?' | '"' | '\'' | '*')).to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Number of tokens of the anchor starting at `i`, if any.
fn anchor_at(tokens: &[String], i: usize) -> Option<usize> {
    ANCHORS.iter().find_map(|a| {
        let words: Vec<&str> = a.split(' ').collect();
        let hit = words
            .iter()
            .enumerate()
            .all(|(k, w)| tokens.get(i + k).is_some_and(|t| t == w || t.trim_end_matches('.') == w.trim_end_matches('.')));
        hit.then_some(words.len())
    })
}

fn month_of(t: &str) -> Option<u32> {
    MONTHS.iter().find(|(n, _)| *n == t).map(|(_, m)| *m)
}

fn weekday_of(t: &str) -> Option<Weekday> {
    WEEKDAYS.iter().find(|(n, _)| *n == t).map(|(_, w)| *w)
}

/// "12", "12th", "1st", "2nd", "3rd" -> day of month.
fn day_of(t: &str) -> Option<u32> {
    let digits = t
        .strip_suffix("st")
        .or_else(|| t.strip_suffix("nd"))
        .or_else(|| t.strip_suffix("rd"))
        .or_else(|| t.strip_suffix("th"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

fn year_of(t: &str) -> Option<i32> {
    if t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse().ok().filter(|y| (1990..=2200).contains(y))
    } else {
        None
    }
}

/// A date with an explicit year, or without one resolved to the first such
/// day on or after `base`.
fn resolve(year: Option<i32>, month: u32, day: u32, base: Option<NaiveDate>) -> Option<NaiveDate> {
    match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, day),
        None => {
            let b = base?;
            let d = NaiveDate::from_ymd_opt(b.year(), month, day)?;
            if d < b {
                NaiveDate::from_ymd_opt(b.year() + 1, month, day)
            } else {
                Some(d)
            }
        }
    }
}

/// Numeric forms: 2027-01-12, 12/01/2027, 12.01.2027, 12-01-27, 12/01.
/// Slashed and dotted dates are day first (as in Indonesia and Europe) unless
/// the second number cannot be a month.
fn parse_numeric(t: &str, base: Option<NaiveDate>) -> Option<NaiveDate> {
    let sep = t.chars().find(|c| matches!(c, '-' | '/' | '.'))?;
    let parts: Vec<&str> = t.split(sep).collect();
    if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let num = |s: &str| s.parse::<u32>().ok();
    match parts.as_slice() {
        [y, m, d] if y.len() == 4 => NaiveDate::from_ymd_opt(num(y)? as i32, num(m)?, num(d)?),
        [a, b, y] if a.len() <= 2 && b.len() <= 2 && (y.len() == 4 || y.len() == 2) => {
            let mut year = num(y)? as i32;
            if y.len() == 2 {
                year += 2000;
            }
            let (a, b) = (num(a)?, num(b)?);
            let (day, month) = if b > 12 && a <= 12 { (b, a) } else { (a, b) };
            NaiveDate::from_ymd_opt(year, month, day)
        }
        [a, b] if sep == '/' && a.len() <= 2 && b.len() <= 2 => {
            let (a, b) = (num(a)?, num(b)?);
            let (day, month) = if b > 12 && a <= 12 { (b, a) } else { (a, b) };
            resolve(None, month, day, base)
        }
        _ => None,
    }
}

/// A calendar date written out at token `i` (no weekday-only or relative
/// forms); returns the date and the number of tokens used.
fn parse_explicit(tokens: &[String], i: usize, base: Option<NaiveDate>) -> Option<(NaiveDate, usize)> {
    let t = tokens.get(i)?;
    if let Some(d) = parse_numeric(t, base) {
        return Some((d, 1));
    }
    // 12 January [2027], 12th of January
    if let Some(day) = day_of(t) {
        let mut j = i + 1;
        if tokens.get(j).is_some_and(|t| t == "of") {
            j += 1;
        }
        let month = month_of(tokens.get(j)?)?;
        let year = tokens.get(j + 1).and_then(|t| year_of(t));
        let used = j + 1 - i + usize::from(year.is_some());
        return resolve(year, month, day, base).map(|d| (d, used));
    }
    // January 12[th][,] [2027]
    if let Some(month) = month_of(t) {
        let day = day_of(tokens.get(i + 1)?)?;
        let year = tokens.get(i + 2).and_then(|t| year_of(t));
        let used = 2 + usize::from(year.is_some());
        return resolve(year, month, day, base).map(|d| (d, used));
    }
    None
}

/// The first date expression at or after token `start`, skipping filler
/// words; gives up at the first word that is neither filler nor date.
fn parse_date_at(tokens: &[String], start: usize, base: Option<NaiveDate>) -> Option<NaiveDate> {
    let mut weekday = None;
    let mut i = start;
    while i < tokens.len() && i < start + 8 {
        let t = tokens[i].as_str();
        if let Some((d, _)) = parse_explicit(tokens, i, base) {
            return Some(d);
        }
        if let Some(w) = weekday_of(t) {
            weekday = Some(w);
        } else if matches!(t, "tomorrow" | "besok") {
            return base.map(|b| b + Duration::days(1));
        } else if matches!(t, "lusa") {
            return base.map(|b| b + Duration::days(2));
        } else if t == "week" || (t == "depan" && i > 0 && tokens.get(i - 1).is_some_and(|p| p == "minggu")) {
            // "next week" / "minggu depan": the Monday after base.
            return base.map(|b| next_weekday(b, Weekday::Mon));
        } else if !FILLERS.contains(&t) && !is_time(t) {
            break;
        }
        i += 1;
    }
    weekday.and_then(|w| base.map(|b| next_weekday(b, w)))
}

/// "10.30", "9:00", "17.00wib": a time of day, skipped like a filler.
fn is_time(t: &str) -> bool {
    let t = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let mut parts = t.split(['.', ':']);
    let (Some(h), Some(m), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    h.len() <= 2 && m.len() == 2 && h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
}

/// The first `w` strictly after `b` ("back on Monday" written on a Monday
/// means the next one).
fn next_weekday(b: NaiveDate, w: Weekday) -> NaiveDate {
    let ahead = (7 + w.num_days_from_monday() as i64 - b.weekday().num_days_from_monday() as i64) % 7;
    b + Duration::days(if ahead == 0 { 7 } else { ahead })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    /// A Thursday.
    fn base() -> Option<NaiveDate> {
        Some(d(2027, 1, 7))
    }

    #[test]
    fn english_formats() {
        let cases = [
            ("I will be back on 12 January.", d(2027, 1, 12)),
            ("I return on Monday, January 12, 2027.", d(2027, 1, 12)),
            ("Out of office until 12/01/2027", d(2027, 1, 12)),
            ("I'm away, returning 2027-01-12.", d(2027, 1, 12)),
            ("back in the office on the 12th of January", d(2027, 1, 12)),
            ("Away until May 5", d(2027, 5, 5)),
            ("I will be back on Jan 12th, 2027", d(2027, 1, 12)),
            ("on leave till 12.01.2027", d(2027, 1, 12)),
            ("Back tomorrow", d(2027, 1, 8)),
            ("I'll be back on Monday", d(2027, 1, 11)),
            ("back next week", d(2027, 1, 11)),
            ("I am out of the office until 01/25/2027", d(2027, 1, 25)),
        ];
        for (text, want) in cases {
            assert_eq!(find_return_date(text, base()), Some(want), "{text}");
        }
    }

    #[test]
    fn indonesian_formats() {
        let cases = [
            ("Saya akan kembali pada 12 Januari 2027.", d(2027, 1, 12)),
            ("Saya sedang cuti sampai tanggal 12 Januari.", d(2027, 1, 12)),
            ("cuti s/d 12/01/2027", d(2027, 1, 12)),
            ("Saya kembali ke kantor pada hari Senin, 12 Januari 2027", d(2027, 1, 12)),
            ("Saya tidak di kantor hingga hari Senin.", d(2027, 1, 11)),
            ("kembali besok", d(2027, 1, 8)),
            ("cuti sampai dengan 3 Agustus", d(2027, 8, 3)),
            ("masuk kembali tgl 2 Mei 2027", d(2027, 5, 2)),
        ];
        for (text, want) in cases {
            assert_eq!(find_return_date(text, base()), Some(want), "{text}");
        }
    }

    #[test]
    fn year_rolls_over_for_dates_before_the_message() {
        let dec = Some(d(2026, 12, 28));
        assert_eq!(find_return_date("back on 4 January", dec), Some(d(2027, 1, 4)));
    }

    #[test]
    fn unanchored_range_takes_the_end() {
        assert_eq!(find_return_date("Out of office 8 January - 14 January 2027", base()), Some(d(2027, 1, 14)));
    }

    #[test]
    fn no_date_or_past_date_gives_none() {
        assert_eq!(find_return_date("I am out of the office with limited access.", base()), None);
        assert_eq!(find_return_date("I was back on 2 January 2026", base()), None);
        assert_eq!(find_return_date("", base()), None);
        // A yearless date cannot be placed without the message's Date.
        assert_eq!(find_return_date("back on 12 January", None), None);
        assert_eq!(find_return_date("back on 2027-01-12", None), Some(d(2027, 1, 12)));
    }

    #[test]
    fn times_are_not_dates() {
        assert_eq!(find_return_date("back at 10.30 tomorrow", base()), Some(d(2027, 1, 8)));
    }
}

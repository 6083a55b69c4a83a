//! When a step may go out: waits, send windows, holidays, time zones.
//!
//! Pure functions of the sequence's window, the lead's time zone and
//! calendar, and an instant. The engine, `cadence explain` and `cadence
//! simulate` all call these, so what is explained is what is done. Local
//! times are resolved DST-correctly: a 09:00 window is 09:00 on the wall
//! clock on both sides of a change; a local time that does not exist (spring
//! forward) moves to the first instant after the gap, and a repeated one
//! (fall back) takes its first occurrence.
//!
//! chrono-tz does not list a zone's transitions, so the code walks time in
//! runs of constant UTC offset (see `offset_run_end`): inside a run the
//! wall clock is UTC plus a constant, which turns "the next 09:00 on an open
//! day" into arithmetic, one run (at most a day) at a time. That keeps
//! [`next_opening`] linear in the days it scans and exact across gaps,
//! repeated hours and transitions at midnight.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::domain::Wait;

#[cfg(test)]
mod tests;

/// How far [`next_opening`] looks before it concludes that the window never
/// opens (a window whose every open day is a holiday, for instance).
const SCAN_LIMIT_DAYS: i64 = 2 * 366;

/// Days and hours, in the lead's time zone, when email may go out.
/// `start` is inclusive, `end` exclusive; `start < end` (validated by config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendWindow {
    /// Indexed by `Weekday::num_days_from_monday()`.
    pub days: [bool; 7],
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A set of holidays (local dates on which nothing is sent and which business
/// days skip).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    pub name: String,
    pub holidays: BTreeSet<NaiveDate>,
}

/// Why a due instant was moved, for `explain` and `simulate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferral {
    /// Outside the hours of the window on an open day.
    OutsideHours,
    /// A day the window does not include (e.g. Saturday).
    ClosedDay(Weekday),
    /// A holiday of the lead's calendar.
    Holiday(NaiveDate),
}

impl fmt::Display for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deferral::OutsideHours => f.write_str("outside the send window's hours"),
            Deferral::ClosedDay(day) => write!(f, "{} is not a sending day", full_day_name(*day)),
            Deferral::Holiday(date) => write!(f, "{date} ({}) is a holiday", date.weekday()),
        }
    }
}

/// The reasons of a deferral in one line, for `cadence explain` and
/// `simulate` ("inside the send window" when there are none).
pub fn describe_deferrals(reasons: &[Deferral]) -> String {
    if reasons.is_empty() {
        return "inside the send window".to_string();
    }
    let parts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    format!("deferred: {}", parts.join("; "))
}

/// The `end` that `"24:00"` stands for: the window then runs to the end of
/// the day (the last nanosecond excepted, which no clock here can tell).
const END_OF_DAY: NaiveTime = match NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999) {
    Some(t) => t,
    None => unreachable!(),
};

const DAY_NAMES: [(&str, &[&str]); 7] = [
    ("Mon", &["mon", "monday"]),
    ("Tue", &["tue", "tues", "tuesday"]),
    ("Wed", &["wed", "wednesday"]),
    ("Thu", &["thu", "thur", "thurs", "thursday"]),
    ("Fri", &["fri", "friday"]),
    ("Sat", &["sat", "saturday"]),
    ("Sun", &["sun", "sunday"]),
];

fn full_day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

fn day_index(name: &str) -> Result<usize, String> {
    let lower = name.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|(_, names)| names.contains(&lower.as_str()))
        .ok_or_else(|| format!("{name:?} is not a day name; write e.g. \"Mon\" or \"Monday\""))
}

fn parse_days(days: &str) -> Result<[bool; 7], String> {
    let mut set = [false; 7];
    if days.trim().is_empty() {
        return Err("days is empty; write e.g. \"Mon-Fri\" or \"Mon,Wed,Fri\"".to_string());
    }
    for part in days.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("days {days:?} has an empty item between commas"));
        }
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day_index(from)?, day_index(to)?);
                // A range may wrap past Sunday: "Fri-Mon" is Fri, Sat, Sun, Mon.
                let len = (to + 7 - from) % 7;
                for i in 0..=len {
                    set[(from + i) % 7] = true;
                }
            }
            None => set[day_index(part)?] = true,
        }
    }
    Ok(set)
}

fn parse_time(what: &str, raw: &str) -> Result<NaiveTime, String> {
    let s = raw.trim();
    if what == "end" && (s == "24:00" || s == "24:00:00") {
        return Ok(END_OF_DAY);
    }
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .map_err(|_| format!("{what} {raw:?} is not a time of day; write HH:MM, e.g. \"09:00\""))
}

fn fmt_time(f: &mut fmt::Formatter<'_>, t: NaiveTime) -> fmt::Result {
    if t == END_OF_DAY {
        f.write_str("24:00")
    } else if t.second() == 0 && t.nanosecond() == 0 {
        write!(f, "{}", t.format("%H:%M"))
    } else {
        write!(f, "{}", t.format("%H:%M:%S"))
    }
}

impl SendWindow {
    /// Parses `days = "Mon-Fri"` (ranges and lists of English day names,
    /// e.g. `Mon,Wed,Fri`, `Mon-Sun`), `start`/`end` as `HH:MM`.
    ///
    /// Day names are case-insensitive, three letters or in full; a range may
    /// wrap (`Fri-Mon`). Times may carry seconds; `end` may be `24:00`.
    /// `start` must be before `end`.
    pub fn parse(days: &str, start: &str, end: &str) -> Result<SendWindow, String> {
        let days = parse_days(days)?;
        let start = parse_time("start", start)?;
        let end = parse_time("end", end)?;
        if start >= end {
            return Err(format!("start {} is not before end {}: the window would never open", TimeOf(start), TimeOf(end)));
        }
        Ok(SendWindow { days, start, end })
    }

    /// True when no instant can ever be inside the window (no day, or
    /// `start >= end`).
    pub fn never_opens(&self) -> bool {
        !self.days.iter().any(|d| *d) || self.start >= self.end
    }

    /// Whether the window includes this day of the week.
    pub fn includes(&self, day: Weekday) -> bool {
        self.days[day.num_days_from_monday() as usize]
    }
}

/// A window's time as written in the config.
struct TimeOf(NaiveTime);

impl fmt::Display for TimeOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_time(f, self.0)
    }
}

/// Shown as the config would write it, e.g. `Mon-Fri 09:00-17:00`; the
/// output parses back to the same window.
impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut runs: Vec<String> = Vec::new();
        let mut i = 0;
        while i < 7 {
            if !self.days[i] {
                i += 1;
                continue;
            }
            let first = i;
            while i + 1 < 7 && self.days[i + 1] {
                i += 1;
            }
            runs.push(match i - first {
                0 => DAY_NAMES[first].0.to_string(),
                1 => format!("{},{}", DAY_NAMES[first].0, DAY_NAMES[i].0),
                _ => format!("{}-{}", DAY_NAMES[first].0, DAY_NAMES[i].0),
            });
            i += 1;
        }
        if runs.is_empty() {
            f.write_str("no days")?;
        } else {
            f.write_str(&runs.join(","))?;
        }
        write!(f, " {}-{}", TimeOf(self.start), TimeOf(self.end))
    }
}

impl Calendar {
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        self.holidays.contains(&date)
    }

    /// A working day: Monday to Friday and not a holiday.
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.is_holiday(date)
    }

    /// The `n`-th working day after `date` (`date` itself when `n` is 0).
    /// `None` only past the end of the calendar.
    pub fn add_business_days(&self, date: NaiveDate, n: u32) -> Option<NaiveDate> {
        // Jump over whole weeks by arithmetic, then make up for the holidays
        // that fell on weekdays inside the jump; holidays are finite, so this
        // ends after at most one round per holiday.
        let mut date = date;
        let mut remaining = u64::from(n);
        while remaining > 0 {
            let target = add_weekdays(date, remaining)?;
            let succ = date.succ_opt()?;
            remaining = self.holidays.range(succ..=target).filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)).count() as u64;
            date = target;
        }
        Some(date)
    }
}

/// The `k`-th weekday (Monday to Friday) strictly after `date`, `k >= 1`.
fn add_weekdays(date: NaiveDate, k: u64) -> Option<NaiveDate> {
    // From a weekend day, count as from the Friday before it.
    let back = match date.weekday() {
        Weekday::Sat => 1,
        Weekday::Sun => 2,
        _ => 0,
    };
    let friday_or_weekday = date.checked_sub_days(Days::new(back))?;
    let w = u64::from(friday_or_weekday.weekday().num_days_from_monday());
    let weeks = (k - 1) / 5;
    let rest = (k - 1) % 5 + 1;
    let weekend = if w + rest >= 5 { 2 } else { 0 };
    let days = weeks.checked_mul(7)?.checked_add(rest + weekend)?;
    friday_or_weekday.checked_add_days(Days::new(days))
}

fn offset_at(tz: Tz, t: DateTime<Utc>) -> Duration {
    Duration::seconds(i64::from(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc()))
}

/// The end of the run of constant UTC offset that contains `t`, looking at
/// most one day ahead: the wall clock is `utc + offset_at(t)` on
/// `[t, result)`.
///
/// Assumes a zone does not change its offset twice within 24 hours and come
/// back to where it was (true of the tz database for the dates leads live
/// in). Transitions fall on whole seconds, which the search relies on.
fn offset_run_end(tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let here = offset_at(tz, t);
    let probe = t.checked_add_signed(Duration::days(1))?;
    if offset_at(tz, probe) == here {
        return Some(probe);
    }
    let (mut lo, mut hi) = (t.timestamp(), probe.timestamp());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, DateTime::from_timestamp(mid, 0)?) == here {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// The earliest instant `>= from` whose wall-clock time in `tz` is
/// `>= target`, looking at most `max_runs` days ahead.
fn first_local_at_or_after(tz: Tz, from: DateTime<Utc>, target: NaiveDateTime, max_runs: usize) -> Option<DateTime<Utc>> {
    let mut t = from;
    for _ in 0..max_runs {
        let offset = offset_at(tz, t);
        let run_end = offset_run_end(tz, t)?;
        let run_last_local = run_end.naive_utc().checked_add_signed(offset)?;
        if run_last_local > target {
            let local = t.naive_utc().checked_add_signed(offset)?.max(target);
            return Some(local.checked_sub_signed(offset)?.and_utc());
        }
        t = run_end;
    }
    None
}

/// The instant a local wall-clock time names in `tz`, resolved DST-safely.
///
/// A repeated time (fall back) gives its first occurrence; a skipped time
/// (spring forward) gives the first instant after the gap, whose wall clock
/// reads the end of the gap (02:30 on a 02:00→03:00 night gives 03:00).
pub fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let naive = date.and_time(time);
    if let Some(t) = tz.from_local_datetime(&naive).earliest() {
        return t.with_timezone(&Utc);
    }
    // In a gap. Start two days before, when the wall clock is surely behind.
    naive
        .checked_sub_signed(Duration::days(2))
        .and_then(|from| first_local_at_or_after(tz, from.and_utc(), naive, 5))
        .unwrap_or_else(|| naive.and_utc())
}

/// `from` plus `wait`, counted in the lead's zone and calendar: fixed lengths
/// are added as is; days and business days keep the local time of `from`.
///
/// Business days skip Saturday, Sunday and `cal`'s holidays; from a weekend
/// day the result is the n-th working day after it. Results past the end of
/// representable time saturate.
pub fn add_wait(from: DateTime<Utc>, wait: Wait, tz: Tz, cal: &Calendar) -> DateTime<Utc> {
    let local = from.with_timezone(&tz).naive_local();
    let date = match wait {
        Wait::Seconds(s) => {
            let far = if s < 0 { DateTime::<Utc>::MIN_UTC } else { DateTime::<Utc>::MAX_UTC };
            return Duration::try_seconds(s).and_then(|d| from.checked_add_signed(d)).unwrap_or(far);
        }
        // Zero keeps `from` even in a repeated hour's second occurrence.
        Wait::Days(0) | Wait::BusinessDays(0) => return from,
        Wait::Days(n) => local.date().checked_add_days(Days::new(n.into())),
        Wait::BusinessDays(n) => cal.add_business_days(local.date(), n),
    };
    match date {
        Some(date) => local_instant(tz, date, local.time()),
        None => DateTime::<Utc>::MAX_UTC,
    }
}

/// Why the window is shut all day on `date`, if it is.
fn closed_reason(date: NaiveDate, window: &SendWindow, cal: &Calendar) -> Option<Deferral> {
    if !window.includes(date.weekday()) {
        Some(Deferral::ClosedDay(date.weekday()))
    } else if cal.is_holiday(date) {
        Some(Deferral::Holiday(date))
    } else {
        None
    }
}

/// Whether `at` is inside the window and not on a holiday.
pub fn is_open(at: DateTime<Utc>, window: &SendWindow, tz: Tz, cal: &Calendar) -> bool {
    let local = at.with_timezone(&tz).naive_local();
    let time = local.time();
    closed_reason(local.date(), window, cal).is_none() && window.start <= time && time < window.end
}

/// The earliest instant `>= at` inside the window and not on a holiday, with
/// the reasons it was moved (empty when `at` itself is open). `None` when the
/// window never opens within two years.
///
/// The reasons are, in order and without repeats: why `at` itself is closed,
/// then each closed weekday and holiday skipped on the way.
pub fn next_opening(at: DateTime<Utc>, window: &SendWindow, tz: Tz, cal: &Calendar) -> Option<(DateTime<Utc>, Vec<Deferral>)> {
    if window.never_opens() {
        return None;
    }
    if is_open(at, window, tz, cal) {
        return Some((at, Vec::new()));
    }
    let mut reasons = vec![closed_reason(at.with_timezone(&tz).date_naive(), window, cal).unwrap_or(Deferral::OutsideHours)];
    let limit = at.checked_add_signed(Duration::days(SCAN_LIMIT_DAYS))?;
    let mut t = at;
    while t < limit {
        // On [t, run_end) the wall clock is UTC + offset: walk its dates.
        let offset = offset_at(tz, t);
        let run_end = offset_run_end(tz, t)?;
        let first_local = t.naive_utc().checked_add_signed(offset)?;
        let last_local = run_end.naive_utc().checked_add_signed(offset)?;
        let mut date = first_local.date();
        while date.and_time(NaiveTime::MIN) < last_local {
            match closed_reason(date, window, cal) {
                Some(reason) => {
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
                None => {
                    let open = date.and_time(window.start).max(first_local);
                    let close = date.and_time(window.end).min(last_local);
                    if open < close {
                        return Some((open.checked_sub_signed(offset)?.and_utc(), reasons));
                    }
                }
            }
            date = date.succ_opt()?;
        }
        t = run_end;
    }
    None
}

//! Table tests pin the DST dates of 2026 by their UTC instants (computed by
//! hand from the zones' rules); property tests check the contract of
//! `next_opening` and `add_wait` against an independent reading of the
//! wall clock.

use super::*;
use proptest::prelude::*;

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(h, mi, 0).unwrap().and_utc()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn win(days: &str, start: &str, end: &str) -> SendWindow {
    SendWindow::parse(days, start, end).unwrap()
}

fn cal(dates: &[NaiveDate]) -> Calendar {
    Calendar { name: "test".into(), holidays: dates.iter().copied().collect() }
}

fn opening(at: DateTime<Utc>, w: &SendWindow, zone: &str, c: &Calendar) -> (DateTime<Utc>, Vec<Deferral>) {
    next_opening(at, w, tz(zone), c).expect("the window opens")
}

fn wall(t: DateTime<Utc>, zone: &str) -> String {
    t.with_timezone(&tz(zone)).format("%Y-%m-%d %H:%M %Z").to_string()
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_day_ranges_lists_and_names() {
    let all = [true; 7];
    let weekdays = [true, true, true, true, true, false, false];
    assert_eq!(win("Mon-Fri", "09:00", "17:00").days, weekdays);
    assert_eq!(win("mon-fri", "09:00", "17:00").days, weekdays);
    assert_eq!(win(" Monday - Friday ", "09:00", "17:00").days, weekdays);
    assert_eq!(win("Mon,Wed,Fri", "09:00", "17:00").days, [true, false, true, false, true, false, false]);
    assert_eq!(win("Mon-Sun", "09:00", "17:00").days, all);
    assert_eq!(win("Sat-Sun", "09:00", "17:00").days, [false, false, false, false, false, true, true]);
    assert_eq!(win("Fri-Mon", "09:00", "17:00").days, [true, false, false, false, true, true, true]);
    assert_eq!(win("Tue", "09:00", "17:00").days, [false, true, false, false, false, false, false]);
    assert_eq!(win("Mon-Wed,Fri", "09:00", "17:00").days, [true, true, true, false, true, false, false]);
    assert_eq!(win("THURSDAY,sat", "09:00", "17:00").days, [false, false, false, true, false, true, false]);
}

#[test]
fn parses_times_with_and_without_seconds() {
    let w = win("Mon-Fri", "09:00", "17:30:15");
    assert_eq!(w.start, hm(9, 0));
    assert_eq!(w.end, NaiveTime::from_hms_opt(17, 30, 15).unwrap());
    let all_day = win("Mon-Sun", "00:00", "24:00");
    assert!(is_open(utc(2026, 6, 15, 23, 59), &all_day, Tz::UTC, &Calendar::default()));
}

#[test]
fn parse_errors_name_the_bad_part() {
    let cases = [
        (("Mon-Fry", "09:00", "17:00"), "\"Fry\""),
        (("Mon;Fri", "09:00", "17:00"), "\"Mon;Fri\""),
        (("", "09:00", "17:00"), "days is empty"),
        (("Mon,,Fri", "09:00", "17:00"), "empty item"),
        (("Mon-Fri", "9am", "17:00"), "start \"9am\""),
        (("Mon-Fri", "09:00", "25:00"), "end \"25:00\""),
        (("Mon-Fri", "24:00", "17:00"), "start \"24:00\""),
        (("Mon-Fri", "17:00", "09:00"), "start 17:00 is not before end 09:00"),
        (("Mon-Fri", "09:00", "09:00"), "not before end"),
    ];
    for ((days, start, end), needle) in cases {
        let err = SendWindow::parse(days, start, end).unwrap_err();
        assert!(err.contains(needle), "{days:?} {start:?} {end:?}: {err}");
    }
}

#[test]
fn display_reads_like_the_config() {
    assert_eq!(win("Mon-Fri", "09:00", "17:00").to_string(), "Mon-Fri 09:00-17:00");
    assert_eq!(win("Mon,Wed,Fri", "09:00", "17:00:30").to_string(), "Mon,Wed,Fri 09:00-17:00:30");
    assert_eq!(win("Fri-Mon", "00:00", "24:00").to_string(), "Mon,Fri-Sun 00:00-24:00");
    assert_eq!(win("Sat-Sun", "10:00", "12:00").to_string(), "Sat,Sun 10:00-12:00");
}

#[test]
fn never_opens_without_days() {
    let w = SendWindow { days: [false; 7], start: hm(9, 0), end: hm(17, 0) };
    assert!(w.never_opens());
    assert_eq!(next_opening(utc(2026, 6, 15, 12, 0), &w, Tz::UTC, &Calendar::default()), None);
    assert!(!win("Sun", "09:00", "09:01").never_opens());
}

#[test]
fn none_when_every_open_day_is_a_holiday_for_two_years() {
    let w = win("Mon", "09:00", "17:00");
    let mondays: Vec<NaiveDate> = (0..120).map(|i| date(2026, 6, 15) + Duration::weeks(i)).collect();
    assert_eq!(next_opening(utc(2026, 6, 14, 12, 0), &w, Tz::UTC, &cal(&mondays)), None);
    // One Monday fewer in the calendar and it opens on that Monday.
    let (at, _) = opening(utc(2026, 6, 14, 12, 0), &w, "UTC", &cal(&mondays[..100]));
    assert_eq!(at, (date(2026, 6, 15) + Duration::weeks(100)).and_time(hm(9, 0)).and_utc());
}

// ------------------------------------------------------- weekdays, holidays

#[test]
fn an_open_instant_is_not_moved() {
    let w = win("Mon-Fri", "09:00", "17:00");
    let at = utc(2026, 6, 15, 9, 0); // Monday
    assert_eq!(next_opening(at, &w, Tz::UTC, &Calendar::default()), Some((at, vec![])));
    let at = utc(2026, 6, 15, 16, 59) + Duration::seconds(59);
    assert_eq!(next_opening(at, &w, Tz::UTC, &Calendar::default()), Some((at, vec![])));
}

#[test]
fn end_is_exclusive_and_a_late_due_time_moves_to_the_next_start() {
    let w = win("Mon-Fri", "09:00", "17:00");
    let c = Calendar::default();
    assert!(!is_open(utc(2026, 6, 15, 17, 0), &w, Tz::UTC, &c));
    let (at, why) = opening(utc(2026, 6, 15, 17, 0), &w, "UTC", &c);
    assert_eq!(at, utc(2026, 6, 16, 9, 0));
    assert_eq!(why, vec![Deferral::OutsideHours]);
    let (at, why) = opening(utc(2026, 6, 16, 3, 0), &w, "UTC", &c);
    assert_eq!(at, utc(2026, 6, 16, 9, 0));
    assert_eq!(why, vec![Deferral::OutsideHours]);
}

#[test]
fn weekend_is_skipped() {
    let w = win("Mon-Fri", "09:00", "17:00");
    let (at, why) = opening(utc(2026, 6, 20, 11, 0), &w, "UTC", &Calendar::default()); // Saturday
    assert_eq!(at, utc(2026, 6, 22, 9, 0));
    assert_eq!(why, vec![Deferral::ClosedDay(Weekday::Sat), Deferral::ClosedDay(Weekday::Sun)]);
    let (at, why) = opening(utc(2026, 6, 19, 18, 0), &w, "UTC", &Calendar::default()); // Friday evening
    assert_eq!(at, utc(2026, 6, 22, 9, 0));
    assert_eq!(why, vec![Deferral::OutsideHours, Deferral::ClosedDay(Weekday::Sat), Deferral::ClosedDay(Weekday::Sun)]);
}

#[test]
fn christmas_friday_moves_to_monday() {
    assert_eq!(date(2026, 12, 25).weekday(), Weekday::Fri);
    let w = win("Mon-Fri", "09:00", "17:00");
    let c = cal(&[date(2026, 12, 25)]);
    let zone = "Europe/Berlin";
    let berlin = tz(zone);
    let at = local_instant(berlin, date(2026, 12, 25), hm(10, 0));
    assert!(!is_open(at, &w, berlin, &c));
    let (next, why) = opening(at, &w, zone, &c);
    assert_eq!(wall(next, zone), "2026-12-28 09:00 CET");
    assert_eq!(why, vec![Deferral::Holiday(date(2026, 12, 25)), Deferral::ClosedDay(Weekday::Sat), Deferral::ClosedDay(Weekday::Sun)]);
    // Due on Christmas Eve after hours: the reasons say all of it.
    let (next, why) = opening(local_instant(berlin, date(2026, 12, 24), hm(17, 30)), &w, zone, &c);
    assert_eq!(wall(next, zone), "2026-12-28 09:00 CET");
    assert_eq!(why[..2], [Deferral::OutsideHours, Deferral::Holiday(date(2026, 12, 25))]);
    assert_eq!(
        describe_deferrals(&why),
        "deferred: outside the send window's hours; 2026-12-25 (Fri) is a holiday; Saturday is not a sending day; Sunday is not a sending day"
    );
}

#[test]
fn a_holiday_is_a_holiday_in_the_leads_zone() {
    // 2026-12-25 00:30 in Sydney is still 24 December in UTC.
    let w = win("Mon-Sun", "00:00", "24:00");
    let c = cal(&[date(2026, 12, 25)]);
    let sydney = tz("Australia/Sydney");
    let at = local_instant(sydney, date(2026, 12, 25), hm(0, 30));
    assert_eq!(at, utc(2026, 12, 24, 13, 30));
    assert!(!is_open(at, &w, sydney, &c));
    assert!(is_open(at, &w, Tz::UTC, &c));
    let (next, _) = opening(at, &w, "Australia/Sydney", &c);
    assert_eq!(next, utc(2026, 12, 25, 13, 0));
}

// -------------------------------------------------------------- time zones

#[test]
fn window_crossing_midnight_utc() {
    let w = win("Mon-Fri", "09:00", "17:00");
    let c = Calendar::default();
    // Auckland in June is UTC+12: 09:00-17:00 local is 21:00-05:00 UTC.
    let (next, why) = opening(utc(2026, 6, 19, 5, 0), &w, "Pacific/Auckland", &c); // Fri 17:00 NZST
    assert_eq!(next, utc(2026, 6, 21, 21, 0)); // a Sunday in UTC, Monday 09:00 in Auckland
    assert_eq!(wall(next, "Pacific/Auckland"), "2026-06-22 09:00 NZST");
    assert_eq!(why, vec![Deferral::OutsideHours, Deferral::ClosedDay(Weekday::Sat), Deferral::ClosedDay(Weekday::Sun)]);
    assert!(is_open(utc(2026, 6, 15, 23, 30), &w, tz("Pacific/Auckland"), &c)); // Tue 11:30 local
    assert!(!is_open(utc(2026, 6, 19, 23, 30), &w, tz("Pacific/Auckland"), &c)); // Sat 11:30 local

    // Los Angeles in June is UTC-7: 17:00 local is midnight UTC.
    let la = tz("America/Los_Angeles");
    assert!(is_open(utc(2026, 6, 16, 23, 59), &w, la, &c));
    assert!(!is_open(utc(2026, 6, 17, 0, 0), &w, la, &c));
    assert_eq!(opening(utc(2026, 6, 17, 0, 0), &w, "America/Los_Angeles", &c).0, utc(2026, 6, 17, 16, 0));
    // Friday 17:00 local is Saturday 00:00 UTC; Monday 09:00 local follows.
    let (next, why) = opening(utc(2026, 6, 20, 0, 0), &w, "America/Los_Angeles", &c);
    assert_eq!(next, utc(2026, 6, 22, 16, 0));
    assert_eq!(why, vec![Deferral::OutsideHours, Deferral::ClosedDay(Weekday::Sat), Deferral::ClosedDay(Weekday::Sun)]);

    // Tokyo is UTC+9: 09:00 local is midnight UTC; Sunday 23:59 UTC is Monday.
    let tokyo = tz("Asia/Tokyo");
    assert!(is_open(utc(2026, 6, 15, 0, 0), &w, tokyo, &c));
    assert!(!is_open(utc(2026, 6, 14, 23, 59), &w, tokyo, &c));
    assert_eq!(opening(utc(2026, 6, 14, 12, 0), &w, "Asia/Tokyo", &c).0, utc(2026, 6, 15, 0, 0));
}

#[test]
fn jakarta_has_no_dst() {
    let w = win("Mon-Fri", "09:00", "17:00");
    let c = Calendar::default();
    for (y, m, d) in [(2026, 1, 5), (2026, 3, 30), (2026, 7, 6), (2026, 11, 2)] {
        // Mondays all year round open at 02:00 UTC (UTC+7).
        let (next, _) = opening(utc(y, m, d, 0, 0), &w, "Asia/Jakarta", &c);
        assert_eq!(next, utc(y, m, d, 2, 0));
    }
    // Monday 17:00 WIB is 10:00 UTC: closed until Tuesday 09:00 WIB.
    assert_eq!(opening(utc(2026, 6, 15, 10, 0), &w, "Asia/Jakarta", &c).0, utc(2026, 6, 16, 2, 0));
}

/// A change of clocks and where 09:00 local falls in UTC around it.
struct Change {
    zone: &'static str,
    day_before: (i32, u32, u32),
    day: (i32, u32, u32),
    /// (month, day, hour) in UTC of 09:00 local on the day before.
    nine_before: (u32, u32, u32),
    /// (month, day, hour) in UTC of 09:00 local on the day of the change.
    nine_on_the_day: (u32, u32, u32),
}

const NINE_OCLOCK_ACROSS_CHANGES: [Change; 6] = [
    Change {
        zone: "America/Los_Angeles",
        day_before: (2026, 3, 7),
        day: (2026, 3, 8),
        nine_before: (3, 7, 17),
        nine_on_the_day: (3, 8, 16),
    },
    Change {
        zone: "America/Los_Angeles",
        day_before: (2026, 10, 31),
        day: (2026, 11, 1),
        nine_before: (10, 31, 16),
        nine_on_the_day: (11, 1, 17),
    },
    Change { zone: "Europe/Berlin", day_before: (2026, 3, 28), day: (2026, 3, 29), nine_before: (3, 28, 8), nine_on_the_day: (3, 29, 7) },
    Change {
        zone: "Europe/Berlin",
        day_before: (2026, 10, 24),
        day: (2026, 10, 25),
        nine_before: (10, 24, 7),
        nine_on_the_day: (10, 25, 8),
    },
    Change { zone: "Australia/Sydney", day_before: (2026, 4, 4), day: (2026, 4, 5), nine_before: (4, 3, 22), nine_on_the_day: (4, 4, 23) },
    Change {
        zone: "Australia/Sydney",
        day_before: (2026, 10, 3),
        day: (2026, 10, 4),
        nine_before: (10, 2, 23),
        nine_on_the_day: (10, 3, 22),
    },
];

#[test]
fn nine_oclock_stays_nine_oclock_across_dst_changes() {
    let w = win("Mon-Sun", "09:00", "17:00");
    let c = Calendar::default();
    for change in NINE_OCLOCK_ACROSS_CHANGES {
        let zone = change.zone;
        let z = tz(zone);
        let before = date(change.day_before.0, change.day_before.1, change.day_before.2);
        let day = date(change.day.0, change.day.1, change.day.2);
        let ((m0, d0, h0), (m1, d1, h1)) = (change.nine_before, change.nine_on_the_day);
        // Due at 08:00 local the day before: opens at 09:00 local.
        let (first, _) = opening(local_instant(z, before, hm(8, 0)), &w, zone, &c);
        assert_eq!(first, utc(2026, m0, d0, h0, 0), "{zone} {before}");
        // Due after hours the day before: opens at 09:00 local on the day of the change.
        let (second, why) = opening(local_instant(z, before, hm(18, 0)), &w, zone, &c);
        assert_eq!(second, utc(2026, m1, d1, h1, 0), "{zone} {day}");
        assert_eq!(why, vec![Deferral::OutsideHours]);
        assert_eq!(second.with_timezone(&z).time(), hm(9, 0));
        assert_eq!(local_instant(z, day, hm(9, 0)), second);
    }
}

#[test]
fn a_start_in_the_spring_forward_gap_opens_at_the_end_of_the_gap() {
    let w = win("Mon-Sun", "02:30", "05:00");
    let c = Calendar::default();
    for (zone, day, expected_utc, expected_wall) in [
        ("America/Los_Angeles", date(2026, 3, 8), utc(2026, 3, 8, 10, 0), "2026-03-08 03:00 PDT"),
        ("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1, 0), "2026-03-29 03:00 CEST"),
        ("Australia/Sydney", date(2026, 10, 4), utc(2026, 10, 3, 16, 0), "2026-10-04 03:00 AEDT"),
    ] {
        let z = tz(zone);
        let due = local_instant(z, day, hm(0, 30));
        let (next, why) = opening(due, &w, zone, &c);
        assert_eq!(next, expected_utc, "{zone}");
        assert_eq!(wall(next, zone), expected_wall);
        assert_eq!(why, vec![Deferral::OutsideHours]);
        // 02:30 does not exist that night: it names the end of the gap.
        assert_eq!(local_instant(z, day, hm(2, 30)), expected_utc);
        // One second earlier the clock still reads before the gap, and is closed.
        let just_before = next - Duration::seconds(1);
        assert!(just_before.with_timezone(&z).time() < hm(2, 0), "{zone}");
        assert!(!is_open(just_before, &w, z, &c));
    }
}

#[test]
fn a_window_inside_the_gap_opens_the_next_day() {
    // 02:10-02:50 never happens in Berlin on 2026-03-29.
    let w = win("Mon-Sun", "02:10", "02:50");
    let berlin = tz("Europe/Berlin");
    let (next, _) = opening(local_instant(berlin, date(2026, 3, 29), hm(0, 0)), &w, "Europe/Berlin", &Calendar::default());
    assert_eq!(wall(next, "Europe/Berlin"), "2026-03-30 02:10 CEST");
}

#[test]
fn a_repeated_time_takes_its_first_occurrence() {
    for (zone, day, expected) in [
        ("America/Los_Angeles", date(2026, 11, 1), utc(2026, 11, 1, 8, 30)),
        ("Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 25, 0, 30)),
        ("Australia/Sydney", date(2026, 4, 5), utc(2026, 4, 4, 15, 30)),
    ] {
        let z = tz(zone);
        let time = if zone == "America/Los_Angeles" { hm(1, 30) } else { hm(2, 30) };
        let first = local_instant(z, day, time);
        assert_eq!(first, expected, "{zone}");
        // The same wall time an hour later is the second occurrence.
        assert_eq!((first + Duration::hours(1)).with_timezone(&z).time(), time);
        // "1 day" from that time the day before lands on the first occurrence.
        let from = local_instant(z, day.pred_opt().unwrap(), time);
        assert_eq!(add_wait(from, Wait::Days(1), z, &Calendar::default()), first, "{zone}");
    }
}

#[test]
fn the_repeated_hour_reopens_a_window_that_just_closed() {
    // LA falls back 02:00 PDT -> 01:00 PST on 2026-11-01: 01:00-01:30 happens twice.
    let w = win("Mon-Sun", "01:00", "01:30");
    let la = tz("America/Los_Angeles");
    let c = Calendar::default();
    let first_quarter_past = utc(2026, 11, 1, 8, 15); // 01:15 PDT
    let second_quarter_past = utc(2026, 11, 1, 9, 15); // 01:15 PST
    assert!(is_open(first_quarter_past, &w, la, &c));
    assert!(is_open(second_quarter_past, &w, la, &c));
    // 01:45 PDT is past the end, but 01:00 comes round again fifteen minutes later.
    let (next, why) = opening(utc(2026, 11, 1, 8, 45), &w, "America/Los_Angeles", &c);
    assert_eq!(next, utc(2026, 11, 1, 9, 0));
    assert_eq!(wall(next, "America/Los_Angeles"), "2026-11-01 01:00 PST");
    assert_eq!(why, vec![Deferral::OutsideHours]);
}

// ------------------------------------------------------------------- waits

#[test]
fn seconds_are_plain_addition_across_a_change() {
    let la = tz("America/Los_Angeles");
    let from = local_instant(la, date(2026, 3, 8), hm(1, 0));
    let later = add_wait(from, Wait::Seconds(2 * 3600), la, &Calendar::default());
    assert_eq!(later - from, Duration::hours(2));
    assert_eq!(later.with_timezone(&la).time(), hm(4, 0));
    assert_eq!(add_wait(from, Wait::Seconds(i64::MAX), la, &Calendar::default()), DateTime::<Utc>::MAX_UTC);
}

#[test]
fn days_and_business_days_keep_local_time_across_changes() {
    let c = Calendar::default();
    let cases: [(&str, NaiveDate, Wait, NaiveDate); 8] = [
        // Friday 2026-03-06 -> Sunday 03-08 (spring forward) / Wednesday 03-11.
        ("America/Los_Angeles", date(2026, 3, 6), Wait::Days(2), date(2026, 3, 8)),
        ("America/Los_Angeles", date(2026, 3, 6), Wait::BusinessDays(3), date(2026, 3, 11)),
        ("America/Los_Angeles", date(2026, 10, 30), Wait::Days(2), date(2026, 11, 1)),
        ("America/Los_Angeles", date(2026, 10, 30), Wait::BusinessDays(3), date(2026, 11, 4)),
        ("Europe/Berlin", date(2026, 3, 27), Wait::BusinessDays(3), date(2026, 4, 1)),
        ("Europe/Berlin", date(2026, 10, 24), Wait::Days(2), date(2026, 10, 26)),
        ("Australia/Sydney", date(2026, 4, 3), Wait::BusinessDays(3), date(2026, 4, 8)),
        ("Australia/Sydney", date(2026, 10, 2), Wait::Days(2), date(2026, 10, 4)),
    ];
    for (zone, from_day, wait, to_day) in cases {
        let z = tz(zone);
        let from = local_instant(z, from_day, hm(9, 0));
        let to = add_wait(from, wait, z, &c);
        let local = to.with_timezone(&z);
        assert_eq!((local.date_naive(), local.time()), (to_day, hm(9, 0)), "{zone} {from_day} + {wait}");
        // The elapsed time is not a whole number of 24-hour days: the change is in it.
        assert_ne!((to - from).num_seconds() % 86_400, 0, "{zone} {from_day} + {wait}");
    }
    // Explicitly, in UTC: 09:00 PST Friday + 3 business days = 09:00 PDT Wednesday.
    let la = tz("America/Los_Angeles");
    assert_eq!(add_wait(utc(2026, 3, 6, 17, 0), Wait::BusinessDays(3), la, &c), utc(2026, 3, 11, 16, 0));
}

#[test]
fn a_wait_landing_in_the_gap_moves_to_its_end() {
    let la = tz("America/Los_Angeles");
    let from = local_instant(la, date(2026, 3, 7), hm(2, 30));
    let to = add_wait(from, Wait::Days(1), la, &Calendar::default());
    assert_eq!(wall(to, "America/Los_Angeles"), "2026-03-08 03:00 PDT");
}

#[test]
fn business_days_skip_weekends_and_holidays() {
    let c = cal(&[date(2026, 12, 25), date(2027, 1, 1)]);
    let z = tz("Europe/Berlin");
    // Wednesday 2026-12-23 + 3 business days: Thu 24, (Fri 25 holiday), Mon 28, Tue 29.
    let from = local_instant(z, date(2026, 12, 23), hm(14, 15));
    let to = add_wait(from, Wait::BusinessDays(3), z, &c);
    assert_eq!(wall(to, "Europe/Berlin"), "2026-12-29 14:15 CET");
    // From a Saturday, one business day is Monday.
    assert_eq!(c.add_business_days(date(2026, 6, 20), 1), Some(date(2026, 6, 22)));
    assert_eq!(c.add_business_days(date(2026, 6, 21), 1), Some(date(2026, 6, 22)));
    assert_eq!(c.add_business_days(date(2026, 6, 21), 5), Some(date(2026, 6, 26)));
    assert_eq!(c.add_business_days(date(2026, 6, 21), 6), Some(date(2026, 6, 29)));
    // Thursday 2026-12-31 + 1: (Fri 01-01 holiday), Monday 2027-01-04.
    assert_eq!(c.add_business_days(date(2026, 12, 31), 1), Some(date(2027, 1, 4)));
    assert_eq!(c.add_business_days(date(2026, 12, 31), 0), Some(date(2026, 12, 31)));
    assert!(!c.is_business_day(date(2026, 12, 25)));
    assert!(!c.is_business_day(date(2026, 12, 26)));
    assert!(c.is_business_day(date(2026, 12, 28)));
    // Zero waits change nothing, even at a second occurrence of a repeated hour.
    let la = tz("America/Los_Angeles");
    let second = utc(2026, 11, 1, 9, 30);
    assert_eq!(add_wait(second, Wait::BusinessDays(0), la, &c), second);
    assert_eq!(add_wait(second, Wait::Days(0), la, &c), second);
}

#[test]
fn business_days_do_not_loop_on_huge_waits() {
    let c = cal(&[date(2026, 12, 25)]);
    let d = c.add_business_days(date(2026, 6, 15), 5_000_000).unwrap();
    // 5,000,000 weekdays are exactly 1,000,000 weeks; one holiday adds one day.
    assert_eq!(d, date(2026, 6, 15) + Duration::weeks(1_000_000) + Duration::days(1));
    assert_eq!(add_wait(utc(2026, 6, 15, 9, 0), Wait::BusinessDays(u32::MAX), Tz::UTC, &c), DateTime::<Utc>::MAX_UTC);
}

// --------------------------------------------------------- property tests

const ZONES: [&str; 13] = [
    "America/Los_Angeles",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Jakarta",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "America/St_Johns",
    "UTC",
    "Asia/Tokyo",
    // Changed at midnight, falling back into the previous day (until 2019).
    "America/Sao_Paulo",
    // Half-hour DST.
    "Australia/Lord_Howe",
    // UTC+12:45 / +13:45.
    "Pacific/Chatham",
    "America/Havana",
];

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(&ZONES[..]).prop_map(tz)
}

/// Instants from 2015 to 2032, half of them in the months where the zones
/// above change their clocks.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let uniform = (1_420_070_400i64..1_956_528_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap());
    let near_changes = (2015i32..2032, prop::sample::select(vec![3u32, 4, 9, 10, 11]), 1u32..=28, 0i64..86_400, 0u32..1_000_000_000)
        .prop_map(|(y, m, d, s, ns)| {
            date(y, m, d).and_hms_opt(0, 0, 0).unwrap().and_utc() + Duration::seconds(s) + Duration::nanoseconds(i64::from(ns))
        });
    prop_oneof![uniform, near_changes]
}

fn minute_of_day(m: u32) -> NaiveTime {
    if m >= 1440 {
        END_OF_DAY
    } else {
        hm(m / 60, m % 60)
    }
}

/// Windows of any days and hours, often in the small hours where clocks change.
fn window() -> impl Strategy<Value = SendWindow> {
    let start = prop_oneof![0u32..1440, 0u32..240];
    let length = prop_oneof![1u32..=1440, 1u32..=90];
    (any::<[bool; 7]>(), start, length).prop_map(|(days, start, length)| SendWindow {
        days,
        start: minute_of_day(start),
        end: minute_of_day((start + length).min(1440)),
    })
}

/// Up to six holidays within the month after `at`'s UTC date.
fn holidays_near(at: DateTime<Utc>) -> impl Strategy<Value = Calendar> {
    let base = at.date_naive();
    prop::collection::btree_set(0u64..31, 0..6)
        .prop_map(move |offsets| Calendar { name: "random".into(), holidays: offsets.into_iter().map(|o| base + Days::new(o)).collect() })
}

/// The first change of `z`'s UTC offset after `from`, within a year; found
/// by day steps and bisection, independently of the module's own search.
fn next_change(z: Tz, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let offset = |t: DateTime<Utc>| z.offset_from_utc_datetime(&t.naive_utc()).fix();
    let here = offset(from);
    let mut lo = from;
    for _ in 0..400 {
        let hi = lo + Duration::days(1);
        if offset(hi) != here {
            let (mut a, mut b) = (lo.timestamp(), hi.timestamp());
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if offset(DateTime::from_timestamp(mid, 0).unwrap()) == here {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            return DateTime::from_timestamp(b, 0);
        }
        lo = hi;
    }
    None
}

/// A zone and an instant: a third of them within 36 hours of one of the
/// zone's clock changes.
fn zone_and_instant() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (zone(), instant(), any::<bool>(), -36 * 3600i64..36 * 3600).prop_map(|(z, at, uniform, delta)| {
        if uniform {
            return (z, at);
        }
        match next_change(z, at) {
            Some(change) => (z, change + Duration::seconds(delta)),
            None => (z, at),
        }
    })
}

/// A zone and an instant, half of them within three hours of a clock change.
fn zone_and_instant_near_change() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (zone_and_instant(), -3 * 3600i64..3 * 3600).prop_map(|((z, at), delta)| match next_change(z, at) {
        Some(change) if delta % 2 == 0 => (z, change + Duration::seconds(delta)),
        _ => (z, at),
    })
}

fn case() -> impl Strategy<Value = (DateTime<Utc>, Tz, SendWindow, Calendar)> {
    (zone_and_instant(), window()).prop_flat_map(|((z, at), w)| (Just(at), Just(z), Just(w), holidays_near(at)))
}

/// The test's own reading of "open", written without `is_open`.
fn open_by_the_wall_clock(t: DateTime<Utc>, w: &SendWindow, z: Tz, c: &Calendar) -> bool {
    let local = t.with_timezone(&z);
    let day = local.weekday().num_days_from_monday() as usize;
    w.days[day] && !c.holidays.contains(&local.date_naive()) && w.start <= local.time() && local.time() < w.end
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn next_opening_is_the_earliest_open_instant((at, z, w, c) in case()) {
        let Some((next, why)) = next_opening(at, &w, z, &c) else {
            // Six holidays cannot shut a window for two years.
            prop_assert!(w.never_opens());
            return Ok(());
        };
        prop_assert!(!w.never_opens());
        prop_assert!(next >= at);
        prop_assert!(open_by_the_wall_clock(next, &w, z, &c), "{} is closed", next.with_timezone(&z));
        prop_assert!(is_open(next, &w, z, &c));
        if next == at {
            prop_assert!(why.is_empty());
            return Ok(());
        }
        prop_assert!(!why.is_empty());
        prop_assert!(!open_by_the_wall_clock(at, &w, z, &c));
        prop_assert!(!is_open(at, &w, z, &c));
        let nano_before = next - Duration::nanoseconds(1);
        prop_assert!(nano_before < at || !open_by_the_wall_clock(nano_before, &w, z, &c));
        // Every open stretch contains a whole minute (window bounds and these
        // zones' offsets are whole minutes), so checking each minute between
        // `at` and `next` finds any earlier opening; long spans are sampled.
        let first_minute = DateTime::from_timestamp(at.timestamp().div_euclid(60) * 60 + 60, 0).unwrap();
        let minutes = (next - first_minute).num_minutes().max(0);
        let step = (minutes / 3000).max(1);
        let mut m = 0;
        while m < minutes {
            let t = first_minute + Duration::minutes(m);
            prop_assert!(!open_by_the_wall_clock(t, &w, z, &c), "{} is open, before {}", t.with_timezone(&z), next.with_timezone(&z));
            m += step;
        }
        // The first reason is why `at` itself was closed.
        let local = at.with_timezone(&z);
        let expected_first = if !w.days[local.weekday().num_days_from_monday() as usize] {
            Deferral::ClosedDay(local.weekday())
        } else if c.holidays.contains(&local.date_naive()) {
            Deferral::Holiday(local.date_naive())
        } else {
            Deferral::OutsideHours
        };
        prop_assert_eq!(&why[0], &expected_first);
    }

    #[test]
    fn business_days_land_on_working_days_at_the_same_wall_time((from, z, _, c) in case(), n in 0u32..25) {
        let to = add_wait(from, Wait::BusinessDays(n), z, &c);
        if n == 0 {
            prop_assert_eq!(to, from);
            return Ok(());
        }
        prop_assert!(to > from);
        let start = from.with_timezone(&z).naive_local();
        let end = to.with_timezone(&z).naive_local();
        let working = |d: NaiveDate| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !c.holidays.contains(&d);
        prop_assert!(working(end.date()), "{} is not a working day", end.date());
        let counted = start.date().iter_days().skip(1).take_while(|d| *d <= end.date()).filter(|d| working(*d)).count();
        prop_assert_eq!(counted, n as usize);
        check_wall_time(z, start.time(), to, end)?;
    }

    #[test]
    fn days_keep_the_wall_time((from, z, _, c) in case(), n in 1u32..40) {
        let to = add_wait(from, Wait::Days(n), z, &c);
        prop_assert!(to > from);
        let start = from.with_timezone(&z).naive_local();
        let end = to.with_timezone(&z).naive_local();
        prop_assert_eq!(end.date(), start.date() + Days::new(n.into()));
        check_wall_time(z, start.time(), to, end)?;
    }

    #[test]
    fn local_instant_names_the_wall_time_or_the_end_of_its_gap((z, at) in zone_and_instant_near_change(), shift in -2i64..=2) {
        // A wall time near a change: either side, in the gap, or repeated.
        let naive = at.with_timezone(&z).naive_local() + Duration::minutes(30 * shift);
        let t = local_instant(z, naive.date(), naive.time());
        let local = t.with_timezone(&z).naive_local();
        if z.from_local_datetime(&naive).earliest().is_some() {
            prop_assert_eq!(local, naive);
            // The first occurrence: an hour earlier the wall clock read earlier.
            prop_assert!((t - Duration::hours(1)).with_timezone(&z).naive_local() < naive);
        } else {
            prop_assert!(local > naive);
            prop_assert!((t - Duration::seconds(1)).with_timezone(&z).naive_local() < naive);
        }
    }

    #[test]
    fn display_parses_back(w in window()) {
        prop_assume!(!w.never_opens());
        let shown = w.to_string();
        let (days, times) = shown.split_once(' ').unwrap();
        let (start, end) = times.split_once('-').unwrap();
        prop_assert_eq!(SendWindow::parse(days, start, end), Ok(w));
    }
}

/// `to` shows the wall time `time`, or, when that time does not exist on
/// its date, is the first instant after the gap.
fn check_wall_time(z: Tz, time: NaiveTime, to: DateTime<Utc>, end: NaiveDateTime) -> Result<(), TestCaseError> {
    let wanted = end.date().and_time(time);
    if z.from_local_datetime(&wanted).earliest().is_some() {
        prop_assert_eq!(end, wanted);
        prop_assert_eq!(local_instant(z, end.date(), time), to);
    } else {
        prop_assert!(end > wanted);
        prop_assert!((to - Duration::seconds(1)).with_timezone(&z).naive_local() < wanted);
    }
    Ok(())
}

//! The report as text for a terminal (and the digest email): sections of
//! aligned tables, kept within 100 columns.

use super::{Flag, Report};

const WIDTH: usize = 100;
/// Leads listed under a raised flag in text; JSON has up to `FLAG_ITEMS`.
const TEXT_ITEMS: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

/// Columns padded to the widest cell, numbers right-aligned; a line wider
/// than the terminal is cut (the last column is the one to give).
fn table(headers: &[(&str, Align)], rows: &[Vec<String>], indent: usize) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = " ".repeat(indent);
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            match headers[i].1 {
                Align::Left => s.push_str(&format!("{c:<w$}", w = widths[i])),
                Align::Right => s.push_str(&format!("{c:>w$}", w = widths[i])),
            }
        }
        clip(s.trim_end(), WIDTH) + "\n"
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `48,000` or `1,234.50`.
pub fn fmt_money(v: f64) -> String {
    let neg = v < 0.0;
    let cents = (v.abs() * 100.0).round() as u128;
    let (whole, frac) = (cents / 100, cents % 100);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let sign = if neg { "-" } else { "" };
    if frac == 0 {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac:02}")
    }
}

/// `45s`, `12m`, `3h 05m`, `2d 4h`.
pub fn fmt_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(max.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

pub(super) fn threshold_text(f: &Flag) -> String {
    let v = &f.threshold;
    let n = v.as_f64();
    match f.name {
        super::flag::BOTTLENECK | super::flag::BOUNCE_PAUSE => format!("> {:.0}%", n.unwrap_or(0.0) * 100.0),
        super::flag::THIN_FRONT => format!("< {}", v),
        super::flag::OVERDUE | super::flag::STALE | super::flag::OVERDUE_TASKS => format!("> {}", v.as_str().unwrap_or_default()),
        _ => format!("> {}", v),
    }
}

fn value_text(f: &Flag) -> String {
    match f.name {
        super::flag::BOTTLENECK | super::flag::BOUNCE_PAUSE => format!("{:.0}%", f.value.as_f64().unwrap_or(0.0) * 100.0),
        _ => f.value.to_string(),
    }
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = format!("Pipeline report, {} ({}; generated {})\n\n", self.date, self.timezone, self.generated_at);

        out.push_str("Stages\n");
        let mut rows: Vec<Vec<String>> =
            self.stages.iter().map(|s| vec![s.stage.clone(), s.leads.to_string(), fmt_money(s.value), s.archived.to_string()]).collect();
        rows.push(vec!["open pipeline".into(), self.open_leads.to_string(), fmt_money(self.open_value), String::new()]);
        out.push_str(&table(
            &[("stage", Align::Left), ("leads", Align::Right), ("value", Align::Right), ("archived", Align::Right)],
            &rows,
            2,
        ));

        let raised = self.raised().count();
        out.push_str(&format!("\nRed flags ({raised} of {} raised)\n", self.flags.len()));
        let rows: Vec<Vec<String>> = self
            .flags
            .iter()
            .map(|f| {
                vec![if f.on { "!!".into() } else { "ok".into() }, f.name.to_string(), value_text(f), threshold_text(f), f.detail.clone()]
            })
            .collect();
        out.push_str(&table(
            &[("", Align::Left), ("flag", Align::Left), ("value", Align::Right), ("threshold", Align::Left), ("detail", Align::Left)],
            &rows,
            2,
        ));
        for f in self.raised().filter(|f| !f.items.is_empty()) {
            out.push_str(&format!("\n  {}:\n", f.name));
            for item in f.items.iter().take(TEXT_ITEMS) {
                let who = item.email.as_deref().or(item.rep.as_deref()).unwrap_or("-");
                out.push_str(&format!("    {:<34}  {}\n", clip(who, 34), clip(&item.detail, WIDTH - 40)));
            }
            let more = f.more + f.items.len().saturating_sub(TEXT_ITEMS) as u64;
            if more > 0 {
                out.push_str(&format!("    ... and {more} more (cadence report --json lists up to {})\n", super::FLAG_ITEMS));
            }
        }

        out.push_str("\nSequences\n");
        if self.steps.is_empty() {
            out.push_str("  nothing sent yet\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .steps
                .iter()
                .filter(|s| s.tasks.is_none())
                .map(|s| {
                    vec![
                        clip(&s.sequence, 20),
                        clip(&s.label, 28),
                        s.sent.to_string(),
                        s.replied.to_string(),
                        s.auto_replied.to_string(),
                        s.bounced.to_string(),
                        s.unsubscribed.to_string(),
                        s.reply_rate.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("sequence", Align::Left),
                    ("step", Align::Left),
                    ("sent", Align::Right),
                    ("replied", Align::Right),
                    ("auto", Align::Right),
                    ("bounced", Align::Right),
                    ("unsub", Align::Right),
                    ("reply rate", Align::Right),
                ],
                &rows,
                2,
            ));
        }

        let tasks: Vec<&super::StepLine> = self.steps.iter().filter(|s| s.tasks.is_some()).collect();
        if !tasks.is_empty() {
            out.push_str("\nTask steps\n");
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|s| {
                    let f = s.tasks.clone().unwrap_or_default();
                    vec![
                        clip(&s.sequence, 20),
                        clip(&s.label, 28),
                        f.open.to_string(),
                        f.done.to_string(),
                        f.skipped.to_string(),
                        f.timed_out.to_string(),
                        f.cancelled.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("sequence", Align::Left),
                    ("step", Align::Left),
                    ("open", Align::Right),
                    ("done", Align::Right),
                    ("skipped", Align::Right),
                    ("timed out", Align::Right),
                    ("cancelled", Align::Right),
                ],
                &rows,
                2,
            ));
        }
        let tested: Vec<&super::StepLine> = self.steps.iter().filter(|s| !s.variants.is_empty()).collect();
        if !tested.is_empty() {
            out.push_str("\nA/B variants\n");
            for s in tested {
                out.push_str(&format!("  {} step {}\n", s.sequence, s.step.unwrap_or(0)));
                let rows: Vec<Vec<String>> = s
                    .variants
                    .iter()
                    .map(|v| {
                        vec![
                            clip(&v.variant, 28),
                            v.sent.to_string(),
                            v.replied.to_string(),
                            v.reply_rate.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &[("variant", Align::Left), ("sent", Align::Right), ("replied", Align::Right), ("reply rate", Align::Right)],
                    &rows,
                    4,
                ));
                if let Some(t) = &s.variant_test {
                    let why = match (t.verdict, t.p_value) {
                        ("not enough data", _) => format!(" (fewer than {} sends for a variant)", t.min_sends),
                        (_, Some(p)) => format!(" (p = {p:.3}, two-proportion test)"),
                        _ => String::new(),
                    };
                    out.push_str(&format!("    {}: {}{why}\n", t.compared.join(" vs "), t.verdict));
                }
            }
        }

        out.push_str("\nSpeed to lead (enrollment to first email)\n");
        let s = &self.speed_to_lead;
        match (s.median_secs, s.p90_secs) {
            (Some(m), Some(p)) => {
                out.push_str(&format!("  median {}, p90 {}, over {} enrollment(s)\n", fmt_duration(m), fmt_duration(p), s.enrollments))
            }
            _ => out.push_str("  no first emails yet\n"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_durations_read_well() {
        assert_eq!(fmt_money(0.0), "0");
        assert_eq!(fmt_money(48000.0), "48,000");
        assert_eq!(fmt_money(1234567.5), "1,234,567.50");
        assert_eq!(fmt_money(999.0), "999");
        assert_eq!(fmt_duration(45), "45s");
        assert_eq!(fmt_duration(12 * 60 + 5), "12m");
        assert_eq!(fmt_duration(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(fmt_duration(2 * 86_400 + 4 * 3600 + 59), "2d 4h");
    }

    #[test]
    fn tables_align_numbers_right() {
        let t = table(&[("name", Align::Left), ("n", Align::Right)], &[vec!["a".into(), "5".into()], vec!["bbb".into(), "12".into()]], 0);
        assert_eq!(t, "name   n\na      5\nbbb   12\n");
    }
}

//! The cadence rules as pure functions: what an enrollment does next and
//! when. No I/O, no clock: `now` comes in as an argument, so the engine,
//! `explain` and `simulate` share exactly this code.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::clock::from_ms;
use crate::config::{Config, Sequence, StepKind};
use crate::domain::{EnrollmentState, Wait};
use crate::schedule::{self, Calendar};
use crate::store::{Advance, EnrollmentRow, LeadRow, Phase};

/// Where and when a lead's emails are timed: its zone and holiday calendar.
pub struct LeadTime<'a> {
    pub tz: Tz,
    pub calendar: &'a Calendar,
}

impl<'a> LeadTime<'a> {
    pub fn of(cfg: &'a Config, lead: &LeadRow) -> Self {
        LeadTime { tz: lead.tz(cfg.daemon.timezone), calendar: cfg.calendar_for(lead.region.as_deref()) }
    }

    /// `from + wait` in the lead's zone and calendar.
    pub fn after(&self, from: DateTime<Utc>, wait: Wait) -> DateTime<Utc> {
        schedule::add_wait(from, wait, self.tz, self.calendar)
    }

    /// The first moment at or after `due` inside the sequence's window.
    pub fn opening(&self, seq: &Sequence, due: DateTime<Utc>) -> Option<DateTime<Utc>> {
        schedule::next_opening(due, &seq.send_window, self.tz, self.calendar).map(|(t, _)| t)
    }
}

/// Index of the first email step at or after `from` (task steps are not
/// sent by the email engine).
pub fn next_email_step(seq: &Sequence, from: usize) -> Option<usize> {
    (from..seq.steps.len()).find(|&i| matches!(seq.steps[i].kind, StepKind::Email { .. }))
}

/// When a new enrollment's first step falls due and when it may be sent.
pub fn first_schedule(seq: &Sequence, lt: &LeadTime, now: DateTime<Utc>) -> (i64, Option<i64>) {
    let (phase_wait, windowed) = match next_email_step(seq, 0) {
        Some(i) => (seq.steps[i].wait, true),
        None => match &seq.last_chance {
            Some(lc) => (lc.wait, true),
            None => (Wait::ZERO, false),
        },
    };
    let due = lt.after(now, phase_wait);
    let next = if windowed { lt.opening(seq, due) } else { Some(due) };
    (due.timestamp_millis(), next.map(|t| t.timestamp_millis()))
}

/// The phase an active enrollment is really in under the current sequence
/// (an edited sequence may have fewer steps or a lower `max_touches`).
pub fn effective_phase(seq: &Sequence, e: &EnrollmentRow) -> (Phase, Option<usize>) {
    match e.phase() {
        Phase::Step => {
            let limit_hit = seq.max_touches.is_some_and(|m| e.touches >= i64::from(m));
            match next_email_step(seq, e.step as usize) {
                Some(i) if !limit_hit => (Phase::Step, Some(i)),
                _ if seq.last_chance.is_some() => (Phase::LastChance, None),
                _ => (Phase::Archive, None),
            }
        }
        other => (other, None),
    }
}

/// An email that went out (or may have): what it was and when.
#[derive(Clone, Copy, Debug)]
pub struct SentEmail<'a> {
    pub phase: Phase,
    /// The step index, for `Phase::Step`.
    pub step: Option<usize>,
    pub at: DateTime<Utc>,
    pub message_id: &'a str,
    pub subject: &'a str,
}

/// The enrollment after `sent`.
pub fn advance_after_send(seq: &Sequence, lt: &LeadTime, e: &EnrollmentRow, sent: SentEmail) -> Advance {
    let SentEmail { phase, step, at: sent_at, message_id, subject } = sent;
    let new_thread = match (phase, step) {
        (Phase::Step, Some(i)) => matches!(seq.steps[i].kind, StepKind::Email { new_thread: true, .. }) || e.thread_refs.is_empty(),
        _ => e.thread_refs.is_empty(),
    };
    let (thread_refs, thread_subject) =
        if new_thread { (message_id.to_string(), Some(subject.to_string())) } else { (format!("{} {message_id}", e.thread_refs), None) };
    let touches = e.touches + 1;
    let done = |state: EnrollmentState| Advance {
        state,
        phase: Phase::Archive.as_str(),
        step: e.step,
        touches,
        due_at: None,
        next_at: None,
        thread_refs: thread_refs.clone(),
        thread_subject: thread_subject.clone(),
    };
    let after_phase = |phase: Phase, step: i64, wait: Wait, windowed: bool| {
        let due = lt.after(sent_at, wait);
        let next = if windowed { lt.opening(seq, due) } else { Some(due) };
        Advance {
            state: EnrollmentState::Active,
            phase: phase.as_str(),
            step,
            touches,
            due_at: Some(due.timestamp_millis()),
            next_at: next.map(|t| t.timestamp_millis()),
            thread_refs: thread_refs.clone(),
            thread_subject: thread_subject.clone(),
        }
    };
    let to_archive = |step: i64| match seq.archive_after {
        Some(after) => after_phase(Phase::Archive, step, after, false),
        None => done(EnrollmentState::Completed),
    };
    match phase {
        Phase::Step => {
            let current = step.unwrap_or(e.step as usize);
            let limit_hit = seq.max_touches.is_some_and(|m| touches >= i64::from(m));
            match next_email_step(seq, current + 1) {
                Some(j) if !limit_hit => after_phase(Phase::Step, j as i64, seq.steps[j].wait, true),
                _ => match &seq.last_chance {
                    Some(lc) => after_phase(Phase::LastChance, current as i64 + 1, lc.wait, true),
                    None => to_archive(current as i64 + 1),
                },
            }
        }
        Phase::LastChance | Phase::Archive => to_archive(e.step),
    }
}

/// Exponential backoff with jitter for transient failures: 1 min, 2, 4 ...
/// capped at 1 hour; `jitter` in [0, 1) spreads retries of many sends.
pub fn retry_delay(attempt: i64, jitter: f64) -> chrono::Duration {
    let base = 60i64 * (1i64 << attempt.clamp(1, 7).saturating_sub(1));
    let base = base.min(3600) as f64;
    chrono::Duration::milliseconds((base * (0.8 + 0.4 * jitter) * 1000.0) as i64)
}

/// Start of the calendar day containing `now` in `tz` (for daily caps).
pub fn day_start(now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = now.with_timezone(&tz).date_naive();
    schedule::local_instant(tz, local, chrono::NaiveTime::MIN)
}

/// Convenience for stored milliseconds.
pub fn at(ms: i64) -> DateTime<Utc> {
    from_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1, 0.5), chrono::Duration::seconds(60));
        assert_eq!(retry_delay(2, 0.5), chrono::Duration::seconds(120));
        assert_eq!(retry_delay(10, 0.5), chrono::Duration::seconds(3600));
        assert!(retry_delay(1, 0.0) < retry_delay(1, 0.99));
    }
}

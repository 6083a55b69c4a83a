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

/// Index of the first step (email or task) at or after `from`.
pub fn next_step(seq: &Sequence, from: usize) -> Option<usize> {
    (from < seq.steps.len()).then_some(from)
}

/// Index of the first email step at or after `from`.
pub fn next_email_step(seq: &Sequence, from: usize) -> Option<usize> {
    (from..seq.steps.len()).find(|&i| matches!(seq.steps[i].kind, StepKind::Email { .. }))
}

/// The phase that carries out step `i`: a task step is created by hand,
/// not sent.
fn phase_of(seq: &Sequence, i: usize) -> Phase {
    match seq.steps[i].kind {
        StepKind::Task { .. } => Phase::TaskDue,
        StepKind::Email { .. } => Phase::Step,
    }
}

/// When a new enrollment's first step falls due and when it may be acted on
/// (tasks keep the email window: the rep is asked during the lead's hours).
pub fn first_schedule(seq: &Sequence, lt: &LeadTime, now: DateTime<Utc>) -> (i64, Option<i64>) {
    let (phase_wait, windowed) = match next_step(seq, 0) {
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
/// (an edited sequence may have fewer steps, a lower `max_touches`, or a
/// task where an email was).
pub fn effective_phase(seq: &Sequence, e: &EnrollmentRow) -> (Phase, Option<usize>) {
    match e.phase() {
        Phase::Step | Phase::TaskDue => {
            let limit_hit = seq.max_touches.is_some_and(|m| e.touches >= i64::from(m));
            match next_step(seq, e.step as usize) {
                Some(i) if !limit_hit => (phase_of(seq, i), Some(i)),
                _ if seq.last_chance.is_some() => (Phase::LastChance, None),
                _ => (Phase::Archive, None),
            }
        }
        Phase::Task => (Phase::Task, Some(e.step as usize)),
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

/// Where an enrollment goes once step `current` is behind it at `at`:
/// the next step (email or task) after its wait, or the last chance when the
/// steps or the cadence limit (`touches` emails) ran out, or the archive.
fn after_step(seq: &Sequence, lt: &LeadTime, current: usize, touches: i64, at: DateTime<Utc>) -> Scheduled {
    let limit_hit = seq.max_touches.is_some_and(|m| touches >= i64::from(m));
    let step = current as i64 + 1;
    match next_step(seq, current + 1) {
        Some(j) if !limit_hit => scheduled(seq, lt, phase_of(seq, j), j as i64, seq.steps[j].wait, true, at),
        _ => match &seq.last_chance {
            Some(lc) => scheduled(seq, lt, Phase::LastChance, step, lc.wait, true, at),
            None => to_archive(seq, lt, step, at),
        },
    }
}

/// The phase, step and times an enrollment moves to (`None`: it is done).
struct Scheduled(Option<(Phase, i64, i64, Option<i64>)>, i64);

fn scheduled(seq: &Sequence, lt: &LeadTime, phase: Phase, step: i64, wait: Wait, windowed: bool, from: DateTime<Utc>) -> Scheduled {
    let due = lt.after(from, wait);
    let next = if windowed { lt.opening(seq, due) } else { Some(due) };
    Scheduled(Some((phase, step, due.timestamp_millis(), next.map(|t| t.timestamp_millis()))), step)
}

fn to_archive(seq: &Sequence, lt: &LeadTime, step: i64, from: DateTime<Utc>) -> Scheduled {
    match seq.archive_after {
        Some(after) => scheduled(seq, lt, Phase::Archive, step, after, false, from),
        None => Scheduled(None, step),
    }
}

impl Scheduled {
    fn advance(self, touches: i64, thread_refs: String, thread_subject: Option<String>) -> Advance {
        match self.0 {
            Some((phase, step, due, next)) => Advance {
                state: EnrollmentState::Active,
                phase: phase.as_str(),
                step,
                touches,
                due_at: Some(due),
                next_at: next,
                thread_refs,
                thread_subject,
            },
            None => Advance {
                state: EnrollmentState::Completed,
                phase: Phase::Archive.as_str(),
                step: self.1,
                touches,
                due_at: None,
                next_at: None,
                thread_refs,
                thread_subject,
            },
        }
    }
}

/// The enrollment after `sent`.
pub fn advance_after_send(seq: &Sequence, lt: &LeadTime, e: &EnrollmentRow, sent: SentEmail) -> Advance {
    let SentEmail { phase, step, at: sent_at, message_id, subject } = sent;
    let new_thread = match (phase, step) {
        (Phase::Step, Some(i)) => {
            seq.steps.get(i).is_some_and(|s| matches!(s.kind, StepKind::Email { new_thread: true, .. })) || e.thread_refs.is_empty()
        }
        _ => e.thread_refs.is_empty(),
    };
    let (thread_refs, thread_subject) =
        if new_thread { (message_id.to_string(), Some(subject.to_string())) } else { (format!("{} {message_id}", e.thread_refs), None) };
    let touches = e.touches + 1;
    let next = match phase {
        Phase::Step | Phase::TaskDue | Phase::Task => after_step(seq, lt, step.unwrap_or(e.step as usize), touches, sent_at),
        Phase::LastChance | Phase::Archive => to_archive(seq, lt, e.step, sent_at),
    };
    next.advance(touches, thread_refs, thread_subject)
}

/// The enrollment after its open task was done, skipped or timed out at
/// `at`: the next step's wait counts from then. The thread and the count
/// of emails do not change.
pub fn advance_after_task(seq: &Sequence, lt: &LeadTime, e: &EnrollmentRow, at: DateTime<Utc>) -> Advance {
    after_step(seq, lt, e.step as usize, e.touches, at).advance(e.touches, e.thread_refs.clone(), None)
}

/// A task step falling due at `due`: when it times out (`None`: it waits
/// for the rep however long).
pub fn task_timeout(lt: &LeadTime, timeout: Option<Wait>, due: DateTime<Utc>) -> Option<DateTime<Utc>> {
    timeout.map(|w| lt.after(due, w))
}

/// When a resumed enrollment acts next (`due_at`, `next_at`): its pending
/// due time, or `now` if that has passed, moved into the window; an open
/// task keeps its timeout, and one without a timeout keeps waiting.
pub fn resume_schedule(seq: &Sequence, lt: &LeadTime, e: &EnrollmentRow, now: DateTime<Utc>) -> (Option<i64>, Option<i64>) {
    let (phase, _) = effective_phase(seq, e);
    if phase == Phase::Task && e.due_at.is_none() {
        return (None, None);
    }
    let from = e.paused_until.map(at).unwrap_or(now).max(e.due_at.map(at).unwrap_or(now)).max(now);
    let next = if matches!(phase, Phase::Archive | Phase::Task) { Some(from) } else { lt.opening(seq, from) };
    (Some(from.timestamp_millis()), next.map(|t| t.timestamp_millis()))
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

    use crate::config::{LastChance, Step, Variant};
    use crate::schedule::SendWindow;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn email(wait: Wait, t: &str) -> Step {
        Step { wait, kind: StepKind::Email { templates: vec![Variant { template: t.into(), weight: 1 }], new_thread: false } }
    }

    /// email → call task (times out after 2 business days) → email, then
    /// a last chance.
    fn seq(timeout: Option<Wait>) -> Sequence {
        Sequence {
            name: "s".into(),
            file: "s.toml".into(),
            stage: None,
            reply_stage: None,
            max_touches: None,
            send_window: SendWindow::parse("Mon-Fri", "09:00", "17:00").unwrap(),
            auto_reply_pause: Wait::Days(3),
            same_company_stop: true,
            steps: vec![
                email(Wait::ZERO, "intro"),
                Step {
                    wait: Wait::BusinessDays(1),
                    kind: StepKind::Task { task: "call".into(), instructions: "call-script".into(), timeout },
                },
                email(Wait::Days(1), "bump"),
            ],
            last_chance: Some(LastChance { wait: Wait::BusinessDays(5), template: "breakup".into() }),
            archive_after: Some(Wait::Days(7)),
            hash: String::new(),
        }
    }

    fn enrollment(phase: Phase, step: i64, touches: i64) -> EnrollmentRow {
        EnrollmentRow {
            id: 1,
            lead_id: 1,
            sequence: "s".into(),
            rep: "nik".into(),
            state: "active".into(),
            phase: phase.as_str().into(),
            step,
            touches,
            due_at: None,
            next_at: None,
            paused_until: None,
            attempts: 0,
            thread_subject: Some("Hi".into()),
            thread_refs: "a@x".into(),
            last_sent_at: None,
            enrolled_at: 0,
            updated_at: 0,
            ended_at: None,
            end_reason: None,
        }
    }

    fn cal() -> Calendar {
        Calendar { name: "default".into(), holidays: Default::default() }
    }

    #[test]
    fn after_an_email_a_task_step_falls_due_in_the_window() {
        let (s, c) = (seq(None), cal());
        let lt = LeadTime { tz: chrono_tz::UTC, calendar: &c };
        // Friday 16:30: one business day later is Monday 16:30.
        let sent = SentEmail { phase: Phase::Step, step: Some(0), at: utc("2026-12-04T16:30:00Z"), message_id: "a@x", subject: "Hi" };
        let a = advance_after_send(&s, &lt, &enrollment(Phase::Step, 0, 0), sent);
        assert_eq!(a.phase, "task_due");
        assert_eq!(a.step, 1);
        assert_eq!(a.touches, 1);
        assert_eq!(a.next_at, Some(utc("2026-12-07T16:30:00Z").timestamp_millis()));
        let mut e = enrollment(Phase::TaskDue, 1, 1);
        assert_eq!(effective_phase(&s, &e), (Phase::TaskDue, Some(1)));
        e.phase = "step".into();
        assert_eq!(effective_phase(&s, &e), (Phase::TaskDue, Some(1)), "an edited sequence: the step is a task now");
        e.phase = "task".into();
        assert_eq!(effective_phase(&s, &e), (Phase::Task, Some(1)));
    }

    #[test]
    fn the_next_email_waits_from_the_tasks_completion() {
        let (s, c) = (seq(Some(Wait::BusinessDays(2))), cal());
        let lt = LeadTime { tz: chrono_tz::UTC, calendar: &c };
        let e = enrollment(Phase::Task, 1, 1);
        // Done Tuesday 20:00 (after the window): bump 1 day later is
        // Wednesday 20:00, sent at Thursday's opening.
        let a = advance_after_task(&s, &lt, &e, utc("2026-12-08T20:00:00Z"));
        assert_eq!((a.phase, a.step, a.touches), ("step", 2, 1));
        assert_eq!(a.due_at, Some(utc("2026-12-09T20:00:00Z").timestamp_millis()));
        assert_eq!(a.next_at, Some(utc("2026-12-10T09:00:00Z").timestamp_millis()));
        assert_eq!(a.thread_refs, "a@x");
        assert_eq!(a.thread_subject, None, "the thread's subject stays");
        assert_eq!(task_timeout(&lt, Some(Wait::BusinessDays(2)), utc("2026-12-04T10:00:00Z")), Some(utc("2026-12-08T10:00:00Z")));
        assert_eq!(task_timeout(&lt, None, utc("2026-12-04T10:00:00Z")), None);
    }

    #[test]
    fn a_task_as_the_last_step_leads_to_the_last_chance_and_tasks_do_not_count_as_touches() {
        let (mut s, c) = (seq(None), cal());
        s.steps.pop();
        let lt = LeadTime { tz: chrono_tz::UTC, calendar: &c };
        let a = advance_after_task(&s, &lt, &enrollment(Phase::Task, 1, 1), utc("2026-12-07T10:00:00Z"));
        assert_eq!((a.phase, a.touches), ("last_chance", 1));
        // The cadence limit counts emails: one email sent, limit 1 → the
        // task step is not reached, the last chance comes instead.
        s.max_touches = Some(1);
        let sent = SentEmail { phase: Phase::Step, step: Some(0), at: utc("2026-12-07T10:00:00Z"), message_id: "a@x", subject: "Hi" };
        assert_eq!(advance_after_send(&s, &lt, &enrollment(Phase::Step, 0, 0), sent).phase, "last_chance");
    }

    #[test]
    fn resuming_keeps_an_open_tasks_timeout_and_never_times_out_one_without() {
        let (s, c) = (seq(None), cal());
        let lt = LeadTime { tz: chrono_tz::UTC, calendar: &c };
        let now = utc("2026-12-07T10:00:00Z");
        let mut e = enrollment(Phase::Task, 1, 1);
        assert_eq!(resume_schedule(&s, &lt, &e, now), (None, None));
        let timeout = utc("2026-12-09T10:00:00Z").timestamp_millis();
        e.due_at = Some(timeout);
        assert_eq!(resume_schedule(&s, &lt, &e, now), (Some(timeout), Some(timeout)));
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1, 0.5), chrono::Duration::seconds(60));
        assert_eq!(retry_delay(2, 0.5), chrono::Duration::seconds(120));
        assert_eq!(retry_delay(10, 0.5), chrono::Duration::seconds(3600));
        assert!(retry_delay(1, 0.0) < retry_delay(1, 0.99));
    }
}

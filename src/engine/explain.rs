//! `cadence explain` and `cadence simulate`: the engine's own rules, told.
//!
//! Both call the functions the engine uses ([`plan`], [`crate::schedule`])
//! rather than re-deriving them, so an explanation cannot disagree with
//! what the daemon does.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::plan::{self, LeadTime};
use crate::clock::from_ms;
use crate::config::{Config, Rep, StepKind};
use crate::domain::{EmailAddress, EnrollmentState};
use crate::ops::{Ctx, OpError};
use crate::schedule;
use crate::store::{rfc3339, EnrollmentRow, LeadRow, Phase};

/// Why a lead's next email is or is not going out.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub email: String,
    pub timezone: String,
    pub state: Option<String>,
    pub sequence: Option<String>,
    /// What comes next: `step 2 (bump)`, `last chance (breakup)`, `archive`.
    pub next: Option<String>,
    pub due_at: Option<String>,
    pub send_at: Option<String>,
    /// One line each: the window, holiday, cap, inbox lag, suppression...
    pub reasons: Vec<String>,
    /// The one-line answer.
    pub summary: String,
}

impl Explanation {
    pub fn to_text(&self) -> String {
        let mut s = format!("{} ({})\n", self.email, self.timezone);
        if let (Some(seq), Some(state)) = (&self.sequence, &self.state) {
            s.push_str(&format!("  sequence  {seq} ({state})\n"));
        }
        if let Some(n) = &self.next {
            s.push_str(&format!("  next      {n}\n"));
        }
        if let Some(d) = &self.due_at {
            s.push_str(&format!("  due       {d}\n"));
        }
        if let Some(d) = &self.send_at {
            s.push_str(&format!("  sends at  {d}\n"));
        }
        for r in &self.reasons {
            s.push_str(&format!("  - {r}\n"));
        }
        s.push_str(&format!("=> {}\n", self.summary));
        s
    }
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z").to_string()
}

/// What the enrollment does next, in words.
fn next_label(cfg: &Config, e: &EnrollmentRow) -> (Phase, String) {
    let Some(seq) = cfg.sequence(&e.sequence) else { return (Phase::Step, "sequence no longer configured".into()) };
    let (phase, step) = plan::effective_phase(seq, e);
    let label = match (phase, step) {
        (Phase::Step | Phase::TaskDue | Phase::Task, Some(i)) => match &seq.steps[i].kind {
            StepKind::Email { templates, .. } => format!(
                "email {} of {} ({})",
                i + 1,
                seq.steps.len(),
                templates.iter().map(|v| v.template.as_str()).collect::<Vec<_>>().join(" / ")
            ),
            StepKind::Task { task, .. } => format!("task {} ({task})", i + 1),
        },
        (Phase::LastChance, _) => format!("last chance ({})", seq.last_chance.as_ref().map_or("-", |l| l.template.as_str())),
        _ => "archive (no reply to the last chance)".into(),
    };
    (phase, label)
}

pub async fn explain(ctx: &Ctx, email: &str) -> Result<Explanation, OpError> {
    let cfg = &ctx.cfg;
    let lead: LeadRow = ctx.lead(email).await?;
    let tz = lead.tz(cfg.daemon.timezone);
    let now = ctx.clock.now();
    let mut x = Explanation {
        email: lead.email.clone(),
        timezone: tz.name().to_string(),
        state: None,
        sequence: None,
        next: None,
        due_at: None,
        send_at: None,
        reasons: Vec::new(),
        summary: String::new(),
    };
    if let Ok(addr) = EmailAddress::parse(&lead.email) {
        if let Some((pattern, why)) = ctx.store.suppression_for(&addr).await? {
            x.reasons.push(format!("suppressed: {pattern} ({why})"));
        }
    }
    for s in ctx.store.sends_for_lead(lead.id).await? {
        if s.state == "send_unknown" {
            x.reasons.push(format!(
                "email {} ({}) of {} has an unknown outcome (the daemon stopped mid-send); it is never resent",
                s.step.unwrap_or(0) + 1,
                s.message_id,
                from_ms(s.claimed_at).format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    let Some(e) = ctx.store.current_enrollment(lead.id).await? else {
        x.summary = "not enrolled in any sequence".into();
        return Ok(x);
    };
    x.state = Some(e.state.clone());
    x.sequence = Some(e.sequence.clone());
    let state = e.state();
    if !state.is_live() {
        x.summary = match state {
            EnrollmentState::Replied => "the lead replied: nothing more is sent".into(),
            EnrollmentState::Bounced => "the address bounced: it is suppressed".into(),
            EnrollmentState::Unsubscribed => "unsubscribed or suppressed: nothing more is sent".into(),
            EnrollmentState::Archived => "archived after the cadence limit with no reply".into(),
            _ => format!("the enrollment ended ({}){}", e.state, e.end_reason.as_ref().map_or(String::new(), |r| format!(": {r}"))),
        };
        return Ok(x);
    }
    let (phase, label) = next_label(cfg, &e);
    x.next = Some(label.clone());
    if let Some(d) = e.due_at {
        x.due_at = Some(local(from_ms(d), tz));
    }
    if state == EnrollmentState::Paused {
        x.summary = match e.paused_until {
            Some(u) => format!("paused until {} (out-of-office); then {label}", local(from_ms(u), tz)),
            None => "paused: `cadence resume` to continue (see the timeline for why)".into(),
        };
        return Ok(x);
    }
    let Some(seq) = cfg.sequence(&e.sequence) else {
        x.summary = format!("sequence `{}` is no longer configured", e.sequence);
        return Ok(x);
    };
    let Some(next_at) = e.next_at else {
        x.summary = if phase == Phase::Task {
            format!("waiting for the rep: {label} is open (`cadence tasks`) and has no timeout")
        } else {
            "being sent right now".into()
        };
        return Ok(x);
    };
    let next_at = from_ms(next_at);
    x.send_at = Some(local(next_at, tz));
    let lt = LeadTime::of(cfg, &lead);
    x.reasons.push(format!("send window {} in {}", seq.send_window, tz.name()));
    if let Some(due) = e.due_at.map(from_ms) {
        if let Some((_, deferrals)) = schedule::next_opening(due, &seq.send_window, lt.tz, lt.calendar) {
            if !deferrals.is_empty() {
                x.reasons.push(schedule::describe_deferrals(&deferrals));
            }
        }
    }
    if e.attempts > 0 {
        x.reasons.push(format!("{} temporary SMTP failure(s) so far; retrying with backoff", e.attempts));
    }
    if phase == Phase::Task {
        x.summary = format!("waiting for the rep: {label} is open (`cadence tasks`); it is skipped {}", local(next_at, tz));
        return Ok(x);
    }
    if phase == Phase::TaskDue {
        x.summary = if next_at <= now {
            format!("{label} is due: the rep gets it at the next pass")
        } else {
            format!("{label} goes to the rep {}; the next email waits for it", local(next_at, tz))
        };
        return Ok(x);
    }
    if phase == Phase::Archive {
        x.summary = if next_at <= now { "archiving at the next pass".into() } else { format!("will be archived {}", local(next_at, tz)) };
        return Ok(x);
    }
    if next_at > now {
        x.summary = format!("{label} goes out {}", local(next_at, tz));
        return Ok(x);
    }
    // Due now: what could hold it?
    let rep = cfg.rep(&e.rep);
    let mut held = Vec::new();
    if let Some(rep) = rep {
        let since = plan::day_start(now, rep.timezone).timestamp_millis();
        let (today, to_domain, last) = ctx.store.rep_usage(&rep.id, since, &lead.domain).await?;
        if today >= i64::from(rep.daily_limit) {
            held.push(format!(
                "daily cap: {today}/{} sent today by {} (resets at midnight {})",
                rep.daily_limit,
                rep.id,
                rep.timezone.name()
            ));
        }
        if let Some(cap) = rep.domain_daily_limit {
            if to_domain >= i64::from(cap) {
                held.push(format!("domain cap: {to_domain}/{cap} sent to {} today", lead.domain));
            }
        }
        if let Some(last) = last {
            let gap = chrono::Duration::from_std(rep.min_gap).unwrap_or_default();
            if from_ms(last) + gap > now {
                held.push(format!("min_gap: next email from {} no sooner than {}", rep.id, local(from_ms(last) + gap, rep.timezone)));
            }
        }
        if rep.imap.is_some() {
            match ctx.store.inbox_synced_at(&rep.id).await? {
                Some(at) if now - from_ms(at) <= chrono::Duration::from_std(cfg.daemon.max_inbox_lag).unwrap_or_default() => {}
                Some(at) => held.push(format!(
                    "inbox lag: {}'s inbox last synced {} (max_inbox_lag {:?}); sending waits so nothing goes out after a reply",
                    rep.id,
                    local(from_ms(at), rep.timezone),
                    cfg.daemon.max_inbox_lag
                )),
                None => held.push(format!("inbox lag: {}'s inbox has never synced; sending waits for it", rep.id)),
            }
        }
        let since = (now - chrono::Duration::hours(24)).timestamp_millis();
        if let Some(b) = ctx.store.rep_bounces(since).await?.into_iter().find(|b| b.rep == rep.id) {
            if crate::report::bounce_paused(cfg, &b) {
                held.push(format!(
                    "bounce pause: {} of {} emails from {} bounced in 24 hours (over daemon.bounce_pause_rate)",
                    b.bounces, b.sends, rep.id
                ));
            }
        }
    } else {
        held.push(format!("rep `{}` is not configured", e.rep));
    }
    if !schedule::is_open(now, &seq.send_window, lt.tz, lt.calendar) {
        held.push("the send window is closed right now".into());
    }
    x.summary = if held.is_empty() {
        format!("{label} is due now and goes out at the next pass")
    } else {
        format!("{label} is due but held: {}", held.join("; "))
    };
    x.reasons.extend(held);
    Ok(x)
}

/// One row of a simulation.
#[derive(Debug, Serialize)]
pub struct SimRow {
    pub n: usize,
    pub action: String,
    pub template: Option<String>,
    pub at: String,
    pub lead_time: String,
    pub rep_time: Option<String>,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct Simulation {
    pub sequence: String,
    pub timezone: String,
    pub start: String,
    pub rows: Vec<SimRow>,
}

impl Simulation {
    pub fn to_text(&self) -> String {
        let mut s = format!("{} for a lead in {}, enrolled {}:\n", self.sequence, self.timezone, self.start);
        for r in &self.rows {
            let rep = r.rep_time.as_ref().map_or(String::new(), |t| format!("  (rep: {t})"));
            s.push_str(&format!(
                "  {:>2}. {:<24} {}{rep}{}\n",
                r.n,
                r.action,
                r.lead_time,
                if r.note.is_empty() { String::new() } else { format!("  {}", r.note) }
            ));
        }
        s
    }
}

/// The times a new enrollment would get if nobody replied, from the same
/// planning code the engine runs (each email assumed sent when due).
pub fn simulate(
    cfg: &Config,
    sequence: &str,
    tz: Tz,
    region: Option<&str>,
    rep: Option<&Rep>,
    start: DateTime<Utc>,
) -> Result<Simulation, String> {
    let seq = cfg
        .sequence(sequence)
        .ok_or_else(|| format!("no sequence `{sequence}` (known: {})", cfg.sequences.keys().cloned().collect::<Vec<_>>().join(", ")))?;
    let calendar = cfg.calendar_for(region);
    let lt = LeadTime { tz, calendar };
    let (due, next) = plan::first_schedule(seq, &lt, start);
    let mut e = EnrollmentRow {
        id: 0,
        lead_id: 0,
        sequence: sequence.into(),
        rep: rep.map(|r| r.id.clone()).unwrap_or_default(),
        state: "active".into(),
        phase: "step".into(),
        step: 0,
        touches: 0,
        due_at: Some(due),
        next_at: next,
        paused_until: None,
        attempts: 0,
        thread_subject: None,
        thread_refs: String::new(),
        last_sent_at: None,
        enrolled_at: start.timestamp_millis(),
        updated_at: 0,
        ended_at: None,
        end_reason: None,
    };
    let mut rows = Vec::new();
    for n in 1..=64 {
        if e.state != "active" {
            break;
        }
        let Some(at) = e.next_at.map(from_ms) else { break };
        let (phase, step) = plan::effective_phase(seq, &e);
        let note = e
            .due_at
            .map(from_ms)
            .and_then(|d| schedule::next_opening(d, &seq.send_window, tz, calendar).filter(|_| phase != Phase::Archive))
            .map(|(_, d)| if d.is_empty() { String::new() } else { schedule::describe_deferrals(&d) })
            .unwrap_or_default();
        let (action, template) = match (phase, step) {
            (Phase::Step | Phase::TaskDue | Phase::Task, Some(i)) => match &seq.steps[i].kind {
                StepKind::Email { templates, .. } => {
                    (format!("email {}", i + 1), Some(templates.iter().map(|v| v.template.as_str()).collect::<Vec<_>>().join(" / ")))
                }
                StepKind::Task { task, .. } => (format!("task {} ({task})", i + 1), None),
            },
            (Phase::LastChance, _) => ("last chance".to_string(), seq.last_chance.as_ref().map(|l| l.template.clone())),
            _ => ("archive (stage lost)".to_string(), None),
        };
        rows.push(SimRow {
            n,
            action: match &template {
                Some(t) => format!("{action}: {t}"),
                None => action,
            },
            template,
            at: rfc3339(at.timestamp_millis()),
            lead_time: local(at, tz),
            rep_time: rep.map(|r| local(at, r.timezone)),
            note,
        });
        if phase == Phase::Archive {
            break;
        }
        if matches!(phase, Phase::TaskDue | Phase::Task) {
            // Assumed done when it falls due; the next step waits from then.
            if let Some(last) = rows.last_mut() {
                if last.note.is_empty() {
                    last.note = "if done at once; the next step waits for it".into();
                }
            }
            let a = plan::advance_after_task(seq, &lt, &EnrollmentRow { step: step.map_or(e.step, |i| i as i64), ..e.clone() }, at);
            e.state = a.state.as_str().into();
            e.phase = a.phase.into();
            e.step = a.step;
            e.due_at = a.due_at;
            e.next_at = a.next_at;
            continue;
        }
        let id = format!("sim-{n}@example.com");
        let a = plan::advance_after_send(seq, &lt, &e, plan::SentEmail { phase, step, at, message_id: &id, subject: "subject" });
        e.state = a.state.as_str().into();
        e.phase = a.phase.into();
        e.step = a.step;
        e.touches = a.touches;
        e.due_at = a.due_at;
        e.next_at = a.next_at;
        e.thread_refs = a.thread_refs;
    }
    Ok(Simulation { sequence: sequence.into(), timezone: tz.name().into(), start: local(start, tz), rows })
}

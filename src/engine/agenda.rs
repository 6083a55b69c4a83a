//! A rep's day: `cadence agenda` and the morning email on `[agenda]
//! schedule`.
//!
//! The practice this serves: a rep starts the day with what needs a human
//! (calls and other tasks, ordered by how close the lead is to closing),
//! replies nobody has answered yet, late-stage leads going quiet, and how
//! much email the daemon will send on the rep's behalf. The day is the
//! rep's calendar day in the rep's time zone.
//!
//! The morning email runs on the cron like the hygiene job (each fire once,
//! claimed in `cron_fires`), but per rep and in the rep's own time zone, so
//! "07:00" is seven in the morning for every rep; the job is `agenda:REP`.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::Engine;
use crate::config::{Config, Rep};
use crate::mailer::{new_message_id, Outgoing, RepMailer, SendError};
use crate::schedule;
use crate::store::{rfc3339, Store, StoreError, TaskFilter};
use crate::templates::AGENDA;

/// One rep's day.
#[derive(Clone, Debug, Serialize)]
pub struct RepAgenda {
    pub rep: String,
    pub name: String,
    pub timezone: String,
    /// The rep's calendar day (YYYY-MM-DD).
    pub date: String,
    /// Open tasks due by the end of the day (earlier ones are `overdue`),
    /// the lead closest to closing first, then by due time.
    pub tasks: Vec<AgendaTask>,
    /// Leads whose reply has no answering touch (call, meeting, note,
    /// email, task done) yet, oldest reply first.
    pub replies: Vec<AgendaReply>,
    /// The pipeline's last stage.
    pub last_stage: String,
    /// `[agenda] quiet_after`.
    pub quiet_after: String,
    /// Leads in the last stage with no touch for `quiet_after`.
    pub quiet: Vec<AgendaQuiet>,
    pub emails: EmailsToday,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgendaTask {
    pub id: i64,
    pub kind: String,
    pub email: String,
    pub name: String,
    pub company: Option<String>,
    pub stage: String,
    pub sequence: String,
    /// 1-based step.
    pub step: i64,
    pub due_at: String,
    /// Due before this day began.
    pub overdue: bool,
    pub timeout_at: Option<String>,
    pub instructions: String,
    #[serde(skip)]
    due_ms: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgendaReply {
    pub email: String,
    pub name: String,
    pub company: Option<String>,
    pub stage: String,
    pub at: String,
    /// The reply's text (quoted history stripped).
    pub text: Option<String>,
    #[serde(skip)]
    at_ms: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgendaQuiet {
    pub email: String,
    pub name: String,
    pub company: Option<String>,
    pub value: Option<f64>,
    /// The last touch or stage change.
    pub since: String,
    #[serde(skip)]
    since_ms: i64,
}

/// Emails the daemon will send for the rep on this day.
#[derive(Clone, Debug, Serialize)]
pub struct EmailsToday {
    /// Scheduled within the day, and due earlier but held (they go first).
    pub scheduled: u64,
    pub held_from_before: u64,
    /// Sent (or being sent) so far on this day.
    pub sent: u64,
    pub daily_limit: u32,
    /// What the daily limit lets out of `scheduled + held_from_before`.
    pub will_send: u64,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
    /// Scheduled emails per local hour (`09:00` → 5).
    pub by_hour: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgendaError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The agendas of `rep` (or of every rep) for `date` (default: each rep's
/// today).
pub async fn build(
    cfg: &Config,
    store: &Store,
    now: DateTime<Utc>,
    rep: Option<&str>,
    date: Option<NaiveDate>,
) -> Result<Vec<RepAgenda>, AgendaError> {
    let reps: Vec<&Rep> = match rep {
        Some(id) => vec![cfg.rep(id).ok_or_else(|| {
            AgendaError::Usage(format!("no rep `{id}` (known: {})", cfg.reps.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")))
        })?],
        None => cfg.reps.iter().collect(),
    };
    let mut out = Vec::new();
    for r in reps {
        let day = date.unwrap_or_else(|| now.with_timezone(&r.timezone).date_naive());
        out.push(for_rep(cfg, store, r, day).await?);
    }
    Ok(out)
}

fn name_of(first: &Option<String>, last: &Option<String>, email: &str) -> String {
    let n = [first.as_deref(), last.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    if n.is_empty() {
        email.to_string()
    } else {
        n
    }
}

async fn for_rep(cfg: &Config, store: &Store, rep: &Rep, day: NaiveDate) -> Result<RepAgenda, AgendaError> {
    let tz = rep.timezone;
    let start = schedule::local_instant(tz, day, NaiveTime::MIN);
    let end = schedule::local_instant(tz, day.succ_opt().unwrap_or(day), NaiveTime::MIN);
    let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());

    let mut tasks: Vec<AgendaTask> = store
        .open_tasks(&TaskFilter { rep: Some(rep.id.clone()), due_before: Some(end_ms) })
        .await?
        .into_iter()
        .map(|t| AgendaTask {
            id: t.id,
            name: name_of(&t.first_name, &t.last_name, &t.email),
            kind: t.kind,
            email: t.email,
            company: t.company,
            stage: t.stage,
            sequence: t.sequence,
            step: t.step + 1,
            due_at: rfc3339(t.due_at),
            overdue: t.due_at < start_ms,
            timeout_at: t.timeout_at.map(rfc3339),
            instructions: t.instructions,
            due_ms: t.due_at,
        })
        .collect();
    // Closest to closing first: a later stage ranks higher.
    tasks.sort_by(|a, b| cfg.stage_rank(&b.stage).cmp(&cfg.stage_rank(&a.stage)).then(a.due_ms.cmp(&b.due_ms)).then(a.id.cmp(&b.id)));

    let replies = store
        .replies_awaiting(&rep.id, end_ms)
        .await?
        .into_iter()
        .map(|r| AgendaReply {
            name: name_of(&r.first_name, &r.last_name, &r.email),
            email: r.email,
            company: r.company,
            stage: r.stage,
            at: rfc3339(r.at),
            text: r.detail,
            at_ms: r.at,
        })
        .collect();

    let last_stage = cfg.stages.last().cloned().unwrap_or_else(|| "closing".into());
    let quiet_after = cfg.agenda.quiet_after;
    let cutoff = (start - quiet_after.approx()).timestamp_millis();
    let quiet = store
        .quiet_leads(&rep.id, &last_stage, cutoff)
        .await?
        .into_iter()
        .map(|q| {
            let since = q.last_touch_at.unwrap_or(q.stage_changed_at).max(q.stage_changed_at);
            AgendaQuiet {
                name: name_of(&q.first_name, &q.last_name, &q.email),
                email: q.email,
                company: q.company,
                value: q.value,
                since: rfc3339(since),
                since_ms: since,
            }
        })
        .collect();

    let due = store.emails_due(&rep.id, start_ms, end_ms).await?;
    let held = store.emails_waiting(&rep.id, start_ms).await? as u64;
    let (sent, _, _) = store.rep_usage(&rep.id, start_ms, "").await?;
    let mut by_hour: Vec<(String, u64)> = Vec::new();
    for t in &due {
        let hour = crate::clock::from_ms(*t).with_timezone(&tz).format("%H:00").to_string();
        match by_hour.last_mut() {
            Some((h, n)) if *h == hour => *n += 1,
            _ => by_hour.push((hour, 1)),
        }
    }
    let room = u64::from(rep.daily_limit).saturating_sub(sent.max(0) as u64);
    let emails = EmailsToday {
        scheduled: due.len() as u64,
        held_from_before: held,
        sent: sent.max(0) as u64,
        daily_limit: rep.daily_limit,
        will_send: (due.len() as u64 + held).min(room),
        first_at: due.first().map(|t| rfc3339(*t)),
        last_at: due.last().map(|t| rfc3339(*t)),
        by_hour,
    };

    Ok(RepAgenda {
        rep: rep.id.clone(),
        name: rep.name.clone(),
        timezone: tz.name().to_string(),
        date: day.format("%Y-%m-%d").to_string(),
        tasks,
        replies,
        last_stage,
        quiet_after: quiet_after.to_string(),
        quiet,
        emails,
    })
}

fn hm(ms: i64, tz: Tz) -> String {
    crate::clock::from_ms(ms).with_timezone(&tz).format("%H:%M").to_string()
}

fn day_hm(ms: i64, tz: Tz) -> String {
    crate::clock::from_ms(ms).with_timezone(&tz).format("%a %m-%d %H:%M").to_string()
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

impl RepAgenda {
    fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(Tz::UTC)
    }

    pub fn to_text(&self) -> String {
        let tz = self.tz();
        let weekday = NaiveDate::parse_from_str(&self.date, "%Y-%m-%d").map(|d| d.format("%a ").to_string()).unwrap_or_default();
        let mut s = format!("Agenda for {} ({}), {weekday}{} ({})\n", self.name, self.rep, self.date, self.timezone);
        let who = |name: &str, company: &Option<String>| match company {
            Some(c) => format!("{name}, {c}"),
            None => name.to_string(),
        };

        s.push_str(&format!("\nTasks ({})\n", self.tasks.len()));
        if self.tasks.is_empty() {
            s.push_str("  none\n");
        }
        for t in &self.tasks {
            let when = if t.overdue { format!("overdue since {}", day_hm(t.due_ms, tz)) } else { hm(t.due_ms, tz) };
            s.push_str(&format!("  #{:<4} {:<8} {:<30} {:<13} {}\n", t.id, t.kind, clip(&who(&t.name, &t.company), 30), t.stage, when));
            for line in t.instructions.lines().filter(|l| !l.trim().is_empty()).take(3) {
                s.push_str(&format!("         {}\n", clip(line.trim(), 88)));
            }
        }

        s.push_str(&format!("\nReplies waiting for an answer ({})\n", self.replies.len()));
        if self.replies.is_empty() {
            s.push_str("  none\n");
        }
        for r in &self.replies {
            let text = r.text.as_deref().map(|t| format!("  \"{}\"", clip(t.lines().next().unwrap_or_default(), 40))).unwrap_or_default();
            s.push_str(&format!("  {}  {:<30} {:<13}{text}\n", day_hm(r.at_ms, tz), clip(&who(&r.name, &r.company), 30), r.stage));
        }

        s.push_str(&format!("\nIn {} with no touch for {} ({})\n", self.last_stage, self.quiet_after, self.quiet.len()));
        if self.quiet.is_empty() {
            s.push_str("  none\n");
        }
        for q in &self.quiet {
            let value = q.value.map(|v| format!("  {}", crate::report::fmt_money(v))).unwrap_or_default();
            s.push_str(&format!(
                "  {:<30} {:<30} last touch {}{value}\n",
                clip(&who(&q.name, &q.company), 30),
                clip(&q.email, 30),
                day_hm(q.since_ms, tz)
            ));
        }

        let e = &self.emails;
        s.push_str("\nEmails\n");
        let span = match (&e.first_at, &e.last_at) {
            (Some(a), Some(b)) => {
                let t =
                    |x: &str| DateTime::parse_from_rfc3339(x).map(|d| d.with_timezone(&tz).format("%H:%M").to_string()).unwrap_or_default();
                if a == b {
                    format!(" at {}", t(a))
                } else {
                    format!(" between {} and {}", t(a), t(b))
                }
            }
            _ => String::new(),
        };
        s.push_str(&format!("  {} scheduled{span}", e.scheduled));
        if e.held_from_before > 0 {
            s.push_str(&format!(", {} held from before", e.held_from_before));
        }
        s.push_str(&format!("; {} sent so far; daily limit {}: {} will go out\n", e.sent, e.daily_limit, e.will_send));
        if !e.by_hour.is_empty() {
            let hours: Vec<String> = e.by_hour.iter().map(|(h, n)| format!("{h} {n}")).collect();
            s.push_str(&format!("  {}\n", hours.join(" · ")));
        }
        s
    }

    /// The variables of `templates/agenda.hbs` (see
    /// [`crate::templates::sample_agenda_context`]).
    pub fn context(&self, rep: &Rep) -> serde_json::Value {
        serde_json::json!({
            "date": self.date,
            "rep": { "id": rep.id, "name": rep.name, "email": rep.email.as_str() },
            "tasks": self.tasks.len(),
            "replies": self.replies.len(),
            "quiet": self.quiet.len(),
            "emails": self.emails.will_send,
            "agenda": self.to_text(),
        })
    }
}

/// One morning email.
#[derive(Clone, Debug, Serialize)]
pub struct AgendaSend {
    pub rep: String,
    pub fire_at: String,
    pub message_id: String,
    /// `sent`, `failed` or `send_unknown`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fire older than this when first seen (the daemon was down) is not
/// sent: yesterday's agenda is no use today.
const STALE_FIRE: chrono::Duration = chrono::Duration::hours(12);

/// Sends each rep's agenda whose fire (in the rep's zone) at or before
/// `now` has not been sent yet, claiming each fire once across instances.
pub async fn run_due(engine: &Arc<Engine>, now: DateTime<Utc>) -> Result<Vec<AgendaSend>, AgendaError> {
    let cfg = engine.config();
    let Some(schedule) = cfg.agenda.schedule.as_ref() else { return Ok(Vec::new()) };
    let store = &engine.store;
    let mut out = Vec::new();
    for rep in &cfg.reps {
        let Some(fire) = super::hygiene::latest_fire(schedule, rep.timezone, now) else { continue };
        if now - fire > STALE_FIRE {
            continue;
        }
        let job = format!("agenda:{}", rep.id);
        if !store.claim_cron_fire(&job, fire.timestamp_millis(), now.timestamp_millis()).await? {
            continue;
        }
        let day = fire.with_timezone(&rep.timezone).date_naive();
        let agenda = for_rep(&cfg, store, rep, day).await?;
        let (subject, text, html) = render(&cfg, rep, &agenda);
        let message_id = new_message_id(rep.email.domain(), now);
        let outgoing = Outgoing {
            from_name: "cadence".into(),
            from: rep.email.clone(),
            to_name: rep.name.clone(),
            to: rep.email.clone(),
            subject: subject.clone(),
            text,
            html,
            message_id: message_id.clone(),
            in_reply_to: None,
            references: Vec::new(),
            // For the rep, not outreach: no unsubscribe headers.
            unsubscribe_mailto: String::new(),
            unsubscribe_url: String::new(),
            date: now,
        };
        let result = match RepMailer::new(rep, &cfg.root) {
            Ok(m) => m.send(&outgoing).await,
            Err(e) => Err(SendError::Local(e.to_string())),
        };
        let (state, error) = match result {
            Ok(()) => ("sent", None),
            Err(SendError::Unknown(e)) => ("send_unknown", Some(e)),
            Err(e) => ("failed", Some(e.to_string())),
        };
        if let Some(e) = &error {
            tracing::error!(rep = %rep.id, error = %e, "agenda: not sent");
        }
        let finished = engine.clock.now().timestamp_millis();
        store
            .record_internal_send(
                "agenda",
                &rep.id,
                rep.email.as_str(),
                &message_id,
                &subject,
                state,
                error.as_deref(),
                now.timestamp_millis(),
                finished,
            )
            .await?;
        store.finish_cron_fire(&job, fire.timestamp_millis(), finished).await?;
        out.push(AgendaSend { rep: rep.id.clone(), fire_at: rfc3339(fire.timestamp_millis()), message_id, state: state.into(), error });
    }
    Ok(out)
}

/// Through `templates/agenda.hbs` when there is one, else the plain text.
fn render(cfg: &Config, rep: &Rep, agenda: &RepAgenda) -> (String, String, Option<String>) {
    let fallback = || {
        let subject = format!(
            "Your day, {}: {} task(s), {} repl(ies) waiting, {} email(s)",
            agenda.date,
            agenda.tasks.len(),
            agenda.replies.len(),
            agenda.emails.will_send
        );
        (subject, agenda.to_text(), None)
    };
    if !cfg.templates.contains(AGENDA) {
        return fallback();
    }
    match cfg.templates.render(AGENDA, &agenda.context(rep)) {
        Ok(r) => (r.subject, r.text, r.html),
        Err(e) => {
            tracing::error!(error = %e, "agenda: the agenda template does not render; sending the plain agenda");
            fallback()
        }
    }
}

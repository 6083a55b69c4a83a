//! Pipeline hygiene on the `[hygiene] schedule` cron (DESIGN.md §5.10):
//! sweep what is overdue for archiving, flag stale leads, email the digest.
//!
//! Each fire runs exactly once, however many daemons share the database and
//! however often they restart: a fire is claimed by inserting its row into
//! `cron_fires` (`ON CONFLICT DO NOTHING`), and only the instance whose
//! insert landed carries it out, and it is claimed before anything is
//! done, so a crash can lose a digest but never send one twice. The digest
//! is recorded in `sends` (kind `digest`) with its outcome.
//!
//! Fires are computed from the injected clock, never the wall clock: the
//! latest fire at or before `now` is the one due. A daemon that was down
//! over several fires runs only the latest of them when it comes back, so a
//! week of downtime produces one digest, not five.
//!
//! The schedule is read in the daemon's time zone. Around a DST change a
//! local time can happen twice (fall back: 02:30 comes round again) or not
//! at all (spring forward: the cron crate skips it). A repeated local time
//! is one fire, keyed by its first instant, so the job does not run twice
//! in one night.

use std::sync::Arc;

use chrono::{DateTime, Duration, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::{Engine, EngineError};
use crate::config::Config;
use crate::domain::EmailAddress;
use crate::mailer::{new_message_id, Outgoing, RepMailer, SendError};
use crate::store::rfc3339;
use crate::templates::DIGEST;

/// The `cron_fires.job` of the hygiene job.
pub const JOB: &str = "hygiene";

/// Look-back windows for the latest fire, shortest first: each is tried
/// only when the previous one held no fire, so stepping through a window
/// visits few fires for any schedule dense enough to fill it.
const LOOKBACK: [Duration; 8] = [
    Duration::seconds(2),
    Duration::minutes(2),
    Duration::hours(2),
    Duration::days(2),
    Duration::days(16),
    Duration::days(64),
    Duration::days(400),
    Duration::days(4 * 366),
];
/// Fires stepped through at most in one window (a safety bound).
const MAX_STEPS: usize = 100_000;

/// What one hygiene run did.
#[derive(Clone, Debug, Serialize)]
pub struct HygieneRun {
    /// The schedule point this run carried out.
    pub fire_at: String,
    /// Sends the archive sweep's engine pass started.
    pub sends_started: u64,
    /// Leads newly flagged stale.
    /// Leads flagged stale by this run.
    pub stale_count: u64,
    /// The first of them (at most 100), by address.
    pub stale_flagged: Vec<String>,
    /// One entry per digest recipient.
    pub digest: Vec<DigestSend>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DigestSend {
    pub to: String,
    pub message_id: String,
    /// `sent`, `failed` or `send_unknown`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The first instant of the local time `t` shows in `tz`: the key of a
/// fire, the same for both occurrences of a repeated local time.
fn canonical(t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz).naive_local();
    match tz.from_local_datetime(&local) {
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        _ => t,
    }
}

/// Fires strictly after `t`, in order, each once (a repeated local time
/// yields only its first instant).
fn fires_after(schedule: &cron::Schedule, tz: Tz, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    // The crate enumerates local times and may hand back the earlier
    // instant of an ambiguous one even when that is before `t`.
    schedule.after(&t.with_timezone(&tz)).map(|f| f.with_timezone(&Utc)).filter(move |f| *f > t && canonical(*f, tz) == *f)
}

/// The first fire after `after` (the daemon sleeps until then).
pub fn next_fire(cfg: &Config, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let schedule = cfg.hygiene.schedule.as_ref()?;
    fires_after(schedule, cfg.daemon.timezone, after).next()
}

/// The latest fire at or before `now`, found by stepping forward through
/// the shortest look-back window that holds one.
pub fn latest_fire(schedule: &cron::Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    for window in LOOKBACK {
        let latest = fires_after(schedule, tz, now - window).take(MAX_STEPS).take_while(|f| *f <= now).last();
        if latest.is_some() {
            return latest;
        }
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum HygieneError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Runs the hygiene job if a fire at or before `now` has not run yet, and
/// this instance wins its claim. `None` when there was nothing to do.
pub async fn run_due(engine: &Arc<Engine>, now: DateTime<Utc>) -> Result<Option<HygieneRun>, HygieneError> {
    let cfg = engine.config();
    let Some(schedule) = cfg.hygiene.schedule.as_ref() else { return Ok(None) };
    let Some(fire) = latest_fire(schedule, cfg.daemon.timezone, now) else { return Ok(None) };
    let store = &engine.store;
    let now_ms = now.timestamp_millis();
    if !store.claim_cron_fire(JOB, fire.timestamp_millis(), now_ms).await? {
        return Ok(None);
    }
    tracing::info!(fire = %rfc3339(fire.timestamp_millis()), "hygiene: running");

    // (a) Archive what is overdue: the engine's pass archives every
    // enrollment whose archive time has come (and sends what is due).
    let sends_started = engine.pass().await?;
    engine.wait_idle().await;

    // (b) Flag leads that went stale.
    let stale_after = cfg.hygiene.stale_after;
    let cutoff = (now - stale_after.approx()).timestamp_millis();
    let detail = format!("no touch or stage change for {stale_after}");
    let (stale_count, stale_flagged) = store.flag_stale(now_ms, cutoff, &detail).await?;

    // (c) The digest.
    let digest = send_digest(&cfg, engine, now).await?;

    store.finish_cron_fire(JOB, fire.timestamp_millis(), now_ms).await?;
    let run = HygieneRun { fire_at: rfc3339(fire.timestamp_millis()), sends_started, stale_count, stale_flagged, digest };
    tracing::info!(fire = %run.fire_at, stale = run.stale_count, digests = run.digest.len(), "hygiene: done");
    Ok(Some(run))
}

/// Renders the report into `templates/digest.hbs` (plain report text when
/// that template is missing) and sends it to each of `digest_to` through
/// the first rep's transport.
async fn send_digest(cfg: &Config, engine: &Engine, now: DateTime<Utc>) -> Result<Vec<DigestSend>, HygieneError> {
    if cfg.hygiene.digest_to.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rep) = cfg.reps.first() else {
        tracing::warn!("hygiene: digest_to is set but there is no [[reps]] to send the digest through");
        return Ok(Vec::new());
    };
    let report = crate::report::build(cfg, &engine.store, now).await?;
    let (subject, text, html) = match cfg.templates.contains(DIGEST).then(|| cfg.templates.render(DIGEST, &report.digest_context())) {
        Some(Ok(r)) => (r.subject, r.text, r.html),
        Some(Err(e)) => {
            tracing::error!(error = %e, "hygiene: the digest template does not render; sending the plain report");
            (format!("Pipeline report for {}", report.date), report.to_text(), None)
        }
        None => (format!("Pipeline report for {}", report.date), report.to_text(), None),
    };
    let mailer = RepMailer::new(rep, &cfg.root);
    let mut out = Vec::new();
    for to in &cfg.hygiene.digest_to {
        let message_id = new_message_id(rep.email.domain(), now);
        let outgoing = digest_email(rep, to, &subject, &text, html.clone(), &message_id, now);
        let result = match &mailer {
            Ok(m) => m.send(&outgoing).await,
            Err(e) => Err(SendError::Local(e.to_string())),
        };
        let (state, error) = match result {
            Ok(()) => ("sent", None),
            Err(SendError::Unknown(e)) => ("send_unknown", Some(e)),
            Err(e) => ("failed", Some(e.to_string())),
        };
        if let Some(e) = &error {
            tracing::error!(to = %to, error = %e, "hygiene: the digest was not sent");
        }
        let finished = engine.clock.now().timestamp_millis();
        engine
            .store
            .record_internal_send(
                "digest",
                &rep.id,
                to.as_str(),
                &message_id,
                &subject,
                state,
                error.as_deref(),
                now.timestamp_millis(),
                finished,
            )
            .await?;
        out.push(DigestSend { to: to.to_string(), message_id, state: state.to_string(), error });
    }
    Ok(out)
}

fn digest_email(
    rep: &crate::config::Rep,
    to: &EmailAddress,
    subject: &str,
    text: &str,
    html: Option<String>,
    message_id: &str,
    now: DateTime<Utc>,
) -> Outgoing {
    Outgoing {
        from_name: rep.name.clone(),
        from: rep.email.clone(),
        to_name: String::new(),
        to: to.clone(),
        subject: subject.to_string(),
        text: text.to_string(),
        html,
        message_id: message_id.to_string(),
        in_reply_to: None,
        references: Vec::new(),
        // An internal report, not outreach: no unsubscribe headers.
        unsubscribe_mailto: String::new(),
        unsubscribe_url: String::new(),
        date: now,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sched(s: &str) -> cron::Schedule {
        cron::Schedule::from_str(s).unwrap()
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn latest_fire_is_at_or_before_now_in_the_daemon_zone() {
        let s = sched("0 0 7 * * Mon-Fri");
        // Monday 2026-03-02 07:00 Berlin = 06:00 UTC (CET).
        assert_eq!(latest_fire(&s, BERLIN, at("2026-03-02T06:00:00Z")), Some(at("2026-03-02T06:00:00Z")));
        assert_eq!(latest_fire(&s, BERLIN, at("2026-03-02T05:59:59Z")), Some(at("2026-02-27T06:00:00Z")), "Friday's, over the weekend");
        assert_eq!(latest_fire(&s, BERLIN, at("2026-03-02T06:00:00.500Z")), Some(at("2026-03-02T06:00:00Z")));
        // In summer time 07:00 Berlin is 05:00 UTC.
        assert_eq!(latest_fire(&s, BERLIN, at("2026-04-01T12:00:00Z")), Some(at("2026-04-01T05:00:00Z")));
        // A sparse schedule is still found (yearly, far back).
        let yearly = sched("0 0 9 1 Jan *");
        assert_eq!(latest_fire(&yearly, Tz::UTC, at("2026-12-31T00:00:00Z")), Some(at("2026-01-01T09:00:00Z")));
        // A dense one is found without stepping through a day of seconds.
        let every_second = sched("* * * * * *");
        assert_eq!(latest_fire(&every_second, Tz::UTC, at("2026-03-02T06:00:00.250Z")), Some(at("2026-03-02T06:00:00Z")));
    }

    #[test]
    fn next_fire_crosses_dst_on_local_time() {
        let s = sched("0 0 7 * * *");
        // Spring forward (Sunday 2026-03-29): 07:00 CET Saturday, 07:00 CEST Sunday.
        let sat = fires_after(&s, BERLIN, at("2026-03-28T00:00:00Z")).next().unwrap();
        assert_eq!(sat, at("2026-03-28T06:00:00Z"));
        let sun = fires_after(&s, BERLIN, sat).next().unwrap();
        assert_eq!(sun, at("2026-03-29T05:00:00Z"));
        assert_eq!(sun - sat, Duration::hours(23));
    }

    #[test]
    fn a_local_time_that_does_not_exist_is_skipped() {
        // 02:30 does not happen in Berlin on 2026-03-29.
        let s = sched("0 30 2 * * *");
        let fires: Vec<_> = fires_after(&s, BERLIN, at("2026-03-27T12:00:00Z")).take(3).collect();
        assert_eq!(fires, [at("2026-03-28T01:30:00Z"), at("2026-03-30T00:30:00Z"), at("2026-03-31T00:30:00Z")]);
    }

    #[test]
    fn a_repeated_local_time_is_one_fire() {
        // 02:30 happens twice in Berlin on 2026-10-25: 00:30 UTC (CEST), 01:30 UTC (CET).
        let s = sched("0 30 2 * * *");
        let fires: Vec<_> = fires_after(&s, BERLIN, at("2026-10-24T12:00:00Z")).take(2).collect();
        assert_eq!(fires, [at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")]);
        // During the repeated hour the latest fire is still the first 02:30.
        assert_eq!(latest_fire(&s, BERLIN, at("2026-10-25T01:45:00Z")), Some(at("2026-10-25T00:30:00Z")));
        assert_eq!(canonical(at("2026-10-25T01:30:00Z"), BERLIN), at("2026-10-25T00:30:00Z"));
        // Starting inside the repeat, the next fire is the next day's.
        assert_eq!(fires_after(&s, BERLIN, at("2026-10-25T01:15:00Z")).next(), Some(at("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn an_hourly_schedule_runs_once_for_the_repeated_hour() {
        // On fall-back night local 02:00 happens twice (00:00 and 01:00
        // UTC): one fire; 03:00 CET (02:00 UTC) follows.
        let s = sched("0 0 * * * *");
        let fires: Vec<_> = fires_after(&s, BERLIN, at("2026-10-24T23:30:00Z")).take(3).collect();
        assert_eq!(fires, [at("2026-10-25T00:00:00Z"), at("2026-10-25T02:00:00Z"), at("2026-10-25T03:00:00Z")]);
    }
}

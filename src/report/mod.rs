//! The pipeline report (DESIGN.md §6) and the manager digest built from it.
//!
//! Managers need to see at a glance where leads pile up, what is going
//! stale and where effort is wasted. The report answers with figures (per
//! stage, per sequence step, speed to lead) and red flags; every flag
//! carries its measured value and the threshold from `[report]` it was
//! compared with, so a reader (or a test) can tell how close to the line it
//! is, not only which side it is on.
//!
//! [`build`] reads only aggregates and capped lists from the store, so the
//! cost does not grow with the pipeline beyond the database's own counting.

mod text;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, StepKind};
use crate::engine::plan;
use crate::store::{rfc3339, Store, StoreError};

pub use text::{fmt_duration, fmt_money};

/// Rows a red flag lists at most (the count is always complete).
pub const FLAG_ITEMS: i64 = 50;
/// A rep's bounce rate is judged only after this many sends in 24 hours.
pub const BOUNCE_MIN_SENDS: i64 = 20;

/// The whole report; serialises as `cadence report --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub generated_at: String,
    /// The daemon's time zone, in which `date` is given.
    pub timezone: String,
    pub date: String,
    /// Every configured stage in order, then `won` and `lost`, then any
    /// stage found in the database that the config no longer names.
    pub stages: Vec<StageLine>,
    /// Active leads in open stages (not won or lost).
    pub open_leads: u64,
    pub open_value: f64,
    pub archived_leads: u64,
    pub flags: Vec<Flag>,
    /// Per sequence and step, then the sequence's last chance.
    pub steps: Vec<StepLine>,
    pub speed_to_lead: SpeedToLead,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageLine {
    pub stage: String,
    /// Active leads in this stage and their total value.
    pub leads: u64,
    pub value: f64,
    /// Archived leads in this stage (counted apart from the pipeline).
    pub archived: u64,
    /// `won` or `lost`.
    pub outcome: bool,
}

/// One red flag: measured `value`, the `threshold` it is compared with,
/// and whether it is raised.
#[derive(Clone, Debug, Serialize)]
pub struct Flag {
    pub name: &'static str,
    pub on: bool,
    pub value: Value,
    pub threshold: Value,
    pub detail: String,
    /// The leads (or reps) behind the flag, at most [`FLAG_ITEMS`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<FlagItem>,
    /// How many more there are than `items` shows.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize)]
pub struct FlagItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rep: Option<String>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepLine {
    pub sequence: String,
    /// `step` or `last_chance`.
    pub kind: String,
    /// 1-based step number (none for the last chance).
    pub step: Option<u32>,
    /// `1 intro`, `2 value-a / value-b`, `last chance (breakup)`.
    pub label: String,
    pub sent: u64,
    pub replied: u64,
    pub auto_replied: u64,
    pub bounced: u64,
    pub unsubscribed: u64,
    /// replied / sent; none before anything was sent.
    pub reply_rate: Option<f64>,
    /// For a task step (`kind` = `task`): how its tasks ended or stand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskFigures>,
    /// For a step with A/B variants: each variant's figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantLine>,
    /// Whether the variants' reply rates differ meaningfully yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_test: Option<VariantTest>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TaskFigures {
    pub open: u64,
    pub done: u64,
    pub skipped: u64,
    pub timed_out: u64,
    /// Closed because the lead replied or the enrollment stopped.
    pub cancelled: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VariantLine {
    /// The template.
    pub variant: String,
    pub weight: Option<u32>,
    pub sent: u64,
    pub replied: u64,
    pub reply_rate: Option<f64>,
}

/// A two-proportion z-test between the best and the worst reply rate.
#[derive(Clone, Debug, Serialize)]
pub struct VariantTest {
    /// `significant`, `not significant` or `not enough data`.
    pub verdict: &'static str,
    /// The two variants compared: highest reply rate first.
    pub compared: Vec<String>,
    pub z: Option<f64>,
    /// Two-sided.
    pub p_value: Option<f64>,
    /// Sends each variant needs before a verdict (`[report] variant_min_sends`).
    pub min_sends: u64,
}

/// The p-value under which a difference is called significant.
pub const SIGNIFICANCE: f64 = 0.05;

/// Two-proportion z-test (pooled): `(z, two-sided p)`; `None` when a
/// sample is empty or nobody (or everybody) replied in both.
pub fn two_proportion(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (p1 - p2) / se;
    Some((z, 2.0 * (1.0 - normal_cdf(z.abs()))))
}

/// The standard normal CDF, by Abramowitz and Stegun 7.1.26 (error < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn variant_test(lines: &[VariantLine], min_sends: u64) -> VariantTest {
    let rated: Vec<&VariantLine> = lines.iter().filter(|v| v.reply_rate.is_some()).collect();
    let best = rated.iter().max_by(|a, b| a.reply_rate.partial_cmp(&b.reply_rate).unwrap_or(std::cmp::Ordering::Equal));
    let worst = rated.iter().min_by(|a, b| a.reply_rate.partial_cmp(&b.reply_rate).unwrap_or(std::cmp::Ordering::Equal));
    let compared = match (best, worst) {
        (Some(b), Some(w)) if b.variant != w.variant => vec![b.variant.clone(), w.variant.clone()],
        _ => lines.iter().take(2).map(|v| v.variant.clone()).collect(),
    };
    let enough = lines.len() >= 2 && lines.iter().all(|v| v.sent >= min_sends);
    let (z, p) = match (enough, best, worst) {
        (true, Some(b), Some(w)) => match two_proportion(b.replied, b.sent, w.replied, w.sent) {
            Some((z, p)) => (Some(z), Some(p)),
            None => (Some(0.0), Some(1.0)),
        },
        _ => (None, None),
    };
    let verdict = match p {
        None => "not enough data",
        Some(p) if p < SIGNIFICANCE => "significant",
        Some(_) => "not significant",
    };
    VariantTest { verdict, compared, z, p_value: p, min_sends }
}

/// Time from enrollment to the first email, over enrollments that got one.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedToLead {
    pub enrollments: u64,
    pub median_secs: Option<i64>,
    pub p90_secs: Option<i64>,
}

/// Flag names, stable for JSON consumers.
pub mod flag {
    pub const BOTTLENECK: &str = "bottleneck";
    pub const THIN_FRONT: &str = "thin_front";
    pub const LAST_STAGE: &str = "last_stage_crowded";
    pub const OVERDUE: &str = "overdue";
    pub const STALE: &str = "stale";
    pub const CADENCE_LIMIT: &str = "cadence_limit";
    pub const SEND_UNKNOWN: &str = "send_unknown";
    pub const BOUNCE_PAUSE: &str = "bounce_pause";
    pub const OVERDUE_TASKS: &str = "overdue_tasks";
}

/// Builds the report as of `now`.
pub async fn build(cfg: &Config, store: &Store, now: DateTime<Utc>) -> Result<Report, StoreError> {
    let now_ms = now.timestamp_millis();
    let stages = stage_lines(cfg, &store.stage_counts().await?);
    let open: Vec<&StageLine> = stages.iter().filter(|s| !s.outcome).collect();
    let open_leads: u64 = open.iter().map(|s| s.leads).sum();
    let open_value: f64 = open.iter().map(|s| s.value).sum();
    let archived_leads = stages.iter().map(|s| s.archived).sum();

    let bounce = store.rep_bounces(now_ms - chrono::Duration::hours(24).num_milliseconds()).await?;
    let mut flags = pipeline_flags(cfg, &stages, open_leads);
    flags.push(overdue_flag(cfg, store, now, &bounce).await?);
    flags.push(stale_flag(cfg, store, now).await?);
    flags.push(cadence_limit_flag(store).await?);
    flags.push(unknown_flag(store).await?);
    flags.push(bounce_flag(cfg, &bounce));
    flags.push(overdue_tasks_flag(cfg, store, now).await?);

    let mut delays = store.first_email_delays().await?;
    delays.sort_unstable();
    let speed_to_lead = SpeedToLead {
        enrollments: delays.len() as u64,
        median_secs: percentile(&delays, 50).map(|ms| ms / 1000),
        p90_secs: percentile(&delays, 90).map(|ms| ms / 1000),
    };

    Ok(Report {
        generated_at: rfc3339(now_ms),
        timezone: cfg.daemon.timezone.name().to_string(),
        date: now.with_timezone(&cfg.daemon.timezone).format("%Y-%m-%d").to_string(),
        stages,
        open_leads,
        open_value,
        archived_leads,
        flags,
        steps: step_lines(cfg, store).await?,
        speed_to_lead,
    })
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p`% of the values at or below it.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn stage_lines(cfg: &Config, counts: &[crate::store::StageCount]) -> Vec<StageLine> {
    let mut names: Vec<String> = cfg.stages.clone();
    names.extend(["won".to_string(), "lost".to_string()]);
    for c in counts {
        if !names.contains(&c.stage) {
            names.push(c.stage.clone());
        }
    }
    names
        .into_iter()
        .map(|stage| {
            let mut line = StageLine { outcome: stage == "won" || stage == "lost", stage, leads: 0, value: 0.0, archived: 0 };
            for c in counts.iter().filter(|c| c.stage == line.stage) {
                if c.status == "archived" {
                    line.archived += c.leads as u64;
                } else {
                    line.leads += c.leads as u64;
                    line.value += c.value.unwrap_or(0.0);
                }
            }
            line
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Bottleneck, thin front and a crowded last stage: shape of the pipeline.
fn pipeline_flags(cfg: &Config, stages: &[StageLine], open_leads: u64) -> Vec<Flag> {
    let t = &cfg.report;
    let count = |name: &str| stages.iter().find(|s| s.stage == name).map_or(0, |s| s.leads);

    let biggest = stages.iter().filter(|s| !s.outcome).max_by_key(|s| s.leads);
    let (share, detail) = match biggest {
        Some(s) if open_leads > 0 => {
            let share = s.leads as f64 / open_leads as f64;
            (share, format!("{} holds {} of {} open leads ({})", s.stage, s.leads, open_leads, pct(share)))
        }
        _ => (0.0, "no open leads".to_string()),
    };
    let bottleneck = Flag {
        name: flag::BOTTLENECK,
        on: open_leads > 0 && share > t.bottleneck_share,
        value: json!(share),
        threshold: json!(t.bottleneck_share),
        detail,
        items: Vec::new(),
        more: 0,
    };

    let first = cfg.stages.first().map(String::as_str).unwrap_or("prospecting");
    let front = count(first);
    let thin = Flag {
        name: flag::THIN_FRONT,
        on: front < t.min_front,
        value: json!(front),
        threshold: json!(t.min_front),
        detail: format!("{front} lead(s) in {first}, the first stage"),
        items: Vec::new(),
        more: 0,
    };

    let last = cfg.stages.last().map(String::as_str).unwrap_or("closing");
    let at_last = count(last);
    let crowded = Flag {
        name: flag::LAST_STAGE,
        on: at_last > t.max_last_stage,
        value: json!(at_last),
        threshold: json!(t.max_last_stage),
        detail: format!("{at_last} lead(s) in {last}, the last stage"),
        items: Vec::new(),
        more: 0,
    };
    vec![bottleneck, thin, crowded]
}

/// Why a rep's due emails are not going out, judged once per rep.
struct RepState {
    sent_today: i64,
    daily_limit: Option<i64>,
    bounce_paused: bool,
    inbox_lagging: bool,
}

async fn overdue_flag(cfg: &Config, store: &Store, now: DateTime<Utc>, bounce: &[crate::store::RepBounces]) -> Result<Flag, StoreError> {
    let after = cfg.report.overdue_after;
    let cutoff = (now - after.approx()).timestamp_millis();
    let listed = store.overdue_enrollments(cutoff, FLAG_ITEMS).await?;
    let mut reps: BTreeMap<String, RepState> = BTreeMap::new();
    let mut items = Vec::new();
    for row in &listed.rows {
        if !reps.contains_key(&row.rep) {
            let state = match cfg.rep(&row.rep) {
                Some(rep) => {
                    let since = plan::day_start(now, rep.timezone).timestamp_millis();
                    let (sent_today, _, _) = store.rep_usage(&rep.id, since, "").await?;
                    let inbox_lagging = match &rep.imap {
                        Some(_) => {
                            let lag = chrono::Duration::from_std(cfg.daemon.max_inbox_lag).unwrap_or_default();
                            let synced = store.inbox_synced_at(&rep.id).await?;
                            synced.is_none_or(|s| plan::at(s) + lag < now)
                        }
                        None => false,
                    };
                    RepState {
                        sent_today,
                        daily_limit: Some(i64::from(rep.daily_limit)),
                        bounce_paused: bounce.iter().any(|b| b.rep == rep.id && bounce_paused(cfg, b)),
                        inbox_lagging,
                    }
                }
                None => RepState { sent_today: 0, daily_limit: None, bounce_paused: false, inbox_lagging: false },
            };
            reps.insert(row.rep.clone(), state);
        }
        let rep = &reps[&row.rep];
        let reason = if row.attempts > 0 {
            format!("failing server ({} failed attempt(s))", row.attempts)
        } else if rep.daily_limit.is_none() {
            format!("rep `{}` is not configured", row.rep)
        } else if rep.daily_limit.is_some_and(|l| rep.sent_today >= l) {
            format!("daily cap ({} of {} sent today)", rep.sent_today, rep.daily_limit.unwrap_or(0))
        } else if rep.bounce_paused {
            "bounce pause".to_string()
        } else if rep.inbox_lagging {
            "inbox lag".to_string()
        } else {
            "waiting for the daemon".to_string()
        };
        let what = match row.phase.as_str() {
            "last_chance" => "last chance".to_string(),
            "archive" => "archive".to_string(),
            _ => format!("step {}", row.step + 1),
        };
        let since = row.due_at.or(row.next_at).unwrap_or(cutoff);
        items.push(FlagItem {
            email: Some(row.email.clone()),
            rep: Some(row.rep.clone()),
            detail: format!("{} {what}, due {} ago: {reason}", row.sequence, fmt_duration((now_ms(now) - since) / 1000)),
        });
    }
    let total = listed.total as u64;
    Ok(Flag {
        name: flag::OVERDUE,
        on: total > 0,
        value: json!(total),
        threshold: json!(after.to_string()),
        detail: format!("{total} enrollment(s) late by more than {after}"),
        more: total.saturating_sub(items.len() as u64),
        items,
    })
}

fn now_ms(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis()
}

async fn stale_flag(cfg: &Config, store: &Store, now: DateTime<Utc>) -> Result<Flag, StoreError> {
    let after = cfg.hygiene.stale_after;
    let cutoff = (now - after.approx()).timestamp_millis();
    let listed = store.stale_leads(cutoff, FLAG_ITEMS).await?;
    let items: Vec<FlagItem> = listed
        .rows
        .iter()
        .map(|r| {
            let last = r.last_touch_at.unwrap_or(r.stage_changed_at).max(r.stage_changed_at);
            FlagItem {
                email: Some(r.email.clone()),
                rep: r.owner.clone(),
                detail: format!("{}, untouched for {}", r.stage, fmt_duration((now_ms(now) - last) / 1000)),
            }
        })
        .collect();
    let total = listed.total as u64;
    Ok(Flag {
        name: flag::STALE,
        on: total > 0,
        value: json!(total),
        threshold: json!(after.to_string()),
        detail: format!("{total} open lead(s) with no touch or stage change"),
        more: total.saturating_sub(items.len() as u64),
        items,
    })
}

async fn cadence_limit_flag(store: &Store) -> Result<Flag, StoreError> {
    let listed = store.cadence_limit_enrollments(FLAG_ITEMS).await?;
    let items: Vec<FlagItem> = listed
        .rows
        .iter()
        .map(|r| {
            let where_ = match (r.state.as_str(), r.phase.as_str()) {
                ("archived", _) => "archived",
                (_, "last_chance") => "last chance due",
                _ => "last chance sent, archive due",
            };
            FlagItem { email: Some(r.email.clone()), rep: None, detail: format!("{}: {where_}", r.sequence) }
        })
        .collect();
    let total = listed.total as u64;
    Ok(Flag {
        name: flag::CADENCE_LIMIT,
        on: total > 0,
        value: json!(total),
        threshold: json!(0),
        detail: format!("{total} lead(s) reached the cadence limit with no reply"),
        more: total.saturating_sub(items.len() as u64),
        items,
    })
}

async fn unknown_flag(store: &Store) -> Result<Flag, StoreError> {
    let listed = store.unknown_sends(FLAG_ITEMS).await?;
    let items: Vec<FlagItem> = listed
        .rows
        .iter()
        .map(|r| {
            let what = match (r.kind.as_str(), r.step) {
                ("last_chance", _) => "last chance".to_string(),
                ("step", Some(s)) => format!("step {}", s + 1),
                (k, _) => k.to_string(),
            };
            FlagItem {
                email: Some(r.email.clone().unwrap_or_else(|| r.recipient.clone())),
                rep: Some(r.rep.clone()),
                detail: format!("{what} at {}: outcome unknown", rfc3339(r.claimed_at)),
            }
        })
        .collect();
    let total = listed.total as u64;
    Ok(Flag {
        name: flag::SEND_UNKNOWN,
        on: total > 0,
        value: json!(total),
        threshold: json!(0),
        detail: format!("{total} send(s) cut off mid-SMTP; never resent"),
        more: total.saturating_sub(items.len() as u64),
        items,
    })
}

/// Open tasks not done `overdue_after` past their due time: count, the
/// oldest, and one item per rep.
async fn overdue_tasks_flag(cfg: &Config, store: &Store, now: DateTime<Utc>) -> Result<Flag, StoreError> {
    let after = cfg.report.overdue_after;
    let cutoff = (now - after.approx()).timestamp_millis();
    let per_rep = store.overdue_tasks(cutoff).await?;
    let total: u64 = per_rep.iter().map(|r| r.tasks as u64).sum();
    let oldest = per_rep.iter().map(|r| r.oldest_due_at).min();
    let items = per_rep
        .iter()
        .map(|r| FlagItem {
            email: None,
            rep: Some(r.rep.clone()),
            detail: format!("{} overdue task(s), oldest due {} ago", r.tasks, fmt_duration((now_ms(now) - r.oldest_due_at) / 1000)),
        })
        .collect();
    let detail = match oldest {
        Some(o) => format!("{total} task(s) open longer than {after}; oldest due {}", rfc3339(o)),
        None => format!("no task open longer than {after}"),
    };
    Ok(Flag { name: flag::OVERDUE_TASKS, on: total > 0, value: json!(total), threshold: json!(after.to_string()), detail, items, more: 0 })
}

fn bounce_rate(b: &crate::store::RepBounces) -> f64 {
    if b.sends == 0 {
        0.0
    } else {
        b.bounces as f64 / b.sends as f64
    }
}

/// DESIGN.md §5.2: more than `bounce_pause_rate` of the last 24 hours'
/// sends bounced, after at least [`BOUNCE_MIN_SENDS`].
pub fn bounce_paused(cfg: &Config, b: &crate::store::RepBounces) -> bool {
    b.sends >= BOUNCE_MIN_SENDS && bounce_rate(b) > cfg.daemon.bounce_pause_rate
}

fn bounce_flag(cfg: &Config, bounce: &[crate::store::RepBounces]) -> Flag {
    let judged: Vec<&crate::store::RepBounces> = bounce.iter().filter(|b| b.sends >= BOUNCE_MIN_SENDS).collect();
    let worst = judged.iter().map(|b| bounce_rate(b)).fold(0.0, f64::max);
    let items: Vec<FlagItem> = bounce
        .iter()
        .filter(|b| bounce_paused(cfg, b))
        .map(|b| FlagItem {
            email: None,
            rep: Some(b.rep.clone()),
            detail: format!("{} of {} sends bounced in 24 hours ({:.1}%): sending paused", b.bounces, b.sends, bounce_rate(b) * 100.0),
        })
        .collect();
    Flag {
        name: flag::BOUNCE_PAUSE,
        on: !items.is_empty(),
        value: json!(worst),
        threshold: json!(cfg.daemon.bounce_pause_rate),
        detail: format!("{} rep(s) paused for bounces (24 h, {BOUNCE_MIN_SENDS}+ sends)", items.len()),
        items,
        more: 0,
    }
}

async fn step_lines(cfg: &Config, store: &Store) -> Result<Vec<StepLine>, StoreError> {
    // Key: sequence, then 0 for steps (by index) and 1 for the last chance.
    type Key = (String, u8, i64);
    let key = |sequence: &str, kind: &str, step: Option<i64>| -> Key {
        if kind == "last_chance" {
            (sequence.to_string(), 1, 0)
        } else {
            (sequence.to_string(), 0, step.unwrap_or(0))
        }
    };
    let mut lines: BTreeMap<Key, StepLine> = BTreeMap::new();
    let line = |k: &Key| -> StepLine {
        let (sequence, kind, index) = k.clone();
        let seq = cfg.sequence(&sequence);
        let is_task = seq.and_then(|s| s.steps.get(index as usize)).is_some_and(|st| matches!(st.kind, StepKind::Task { .. }));
        let (kind, step, label) = if kind == 1 {
            let t = seq.and_then(|s| s.last_chance.as_ref()).map_or(String::new(), |l| format!(" ({})", l.template));
            ("last_chance", None, format!("last chance{t}"))
        } else if is_task {
            let names = seq.and_then(|s| s.steps.get(index as usize)).map(|st| match &st.kind {
                StepKind::Task { task, .. } => format!("task: {task}"),
                StepKind::Email { .. } => String::new(),
            });
            ("task", Some(index as u32 + 1), format!("{} {}", index + 1, names.unwrap_or_default()))
        } else {
            let names = seq.and_then(|s| s.steps.get(index as usize)).map(|st| match &st.kind {
                StepKind::Email { templates, .. } => templates.iter().map(|v| v.template.as_str()).collect::<Vec<_>>().join(" / "),
                StepKind::Task { task, .. } => format!("task: {task}"),
            });
            ("step", Some(index as u32 + 1), format!("{} {}", index + 1, names.unwrap_or_default()).trim_end().to_string())
        };
        StepLine {
            sequence,
            kind: kind.to_string(),
            step,
            label,
            sent: 0,
            replied: 0,
            auto_replied: 0,
            bounced: 0,
            unsubscribed: 0,
            reply_rate: None,
            tasks: is_task.then(TaskFigures::default),
            variants: Vec::new(),
            variant_test: None,
        }
    };
    for c in store.step_send_counts().await? {
        let k = key(&c.sequence, &c.kind, c.step);
        lines.entry(k.clone()).or_insert_with(|| line(&k)).sent += c.sent as u64;
    }
    for c in store.step_response_counts().await? {
        let k = key(&c.sequence, &c.kind, c.step);
        let l = lines.entry(k.clone()).or_insert_with(|| line(&k));
        let n = c.sends as u64;
        match c.touch.as_str() {
            "reply" => l.replied += n,
            "auto_reply" => l.auto_replied += n,
            "bounce" => l.bounced += n,
            "unsubscribe" => l.unsubscribed += n,
            _ => {}
        }
    }
    for c in store.task_step_counts().await? {
        let k = key(&c.sequence, "step", Some(c.step));
        let l = lines.entry(k.clone()).or_insert_with(|| line(&k));
        let f = l.tasks.get_or_insert_with(TaskFigures::default);
        let n = c.tasks as u64;
        match c.state.as_str() {
            "open" => f.open += n,
            "done" => f.done += n,
            "skipped" => f.skipped += n,
            "timed_out" => f.timed_out += n,
            _ => f.cancelled += n,
        }
    }
    for c in store.variant_counts().await? {
        let k = key(&c.sequence, "step", Some(c.step));
        let l = lines.entry(k.clone()).or_insert_with(|| line(&k));
        let weight = cfg.sequence(&c.sequence).and_then(|s| s.steps.get(c.step as usize)).and_then(|st| match &st.kind {
            StepKind::Email { templates, .. } => templates.iter().find(|v| v.template == c.variant).map(|v| v.weight),
            StepKind::Task { .. } => None,
        });
        let (sent, replied) = (c.sent as u64, c.replied as u64);
        l.variants.push(VariantLine {
            variant: c.variant,
            weight,
            sent,
            replied,
            reply_rate: (sent > 0).then(|| replied as f64 / sent as f64),
        });
    }
    Ok(lines
        .into_values()
        .map(|mut l| {
            l.reply_rate = (l.sent > 0).then(|| l.replied as f64 / l.sent as f64);
            if !l.variants.is_empty() {
                l.variant_test = Some(variant_test(&l.variants, cfg.report.variant_min_sends));
            }
            l
        })
        .collect())
}

impl Report {
    /// The flags that are raised.
    pub fn raised(&self) -> impl Iterator<Item = &Flag> {
        self.flags.iter().filter(|f| f.on)
    }

    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// The variables of `templates/digest.hbs` (see
    /// [`crate::templates::sample_digest_context`]): `date`, `stages`
    /// (name, leads, value), `flags` (kind, message: raised flags only) and
    /// `report` (the whole text report).
    pub fn digest_context(&self) -> Value {
        json!({
            "date": self.date,
            "stages": self.stages.iter().map(|s| json!({ "name": s.stage, "leads": s.leads, "value": fmt_money(s.value) })).collect::<Vec<_>>(),
            "flags": self.raised().map(|f| json!({ "kind": f.name, "message": format!("{} (threshold {})", f.detail, text::threshold_text(f)) })).collect::<Vec<_>>(),
            "report": self.to_text(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_proportions_match_the_textbook() {
        // 50/100 against 30/100: pooled 0.4, z = 2.887, p = 0.0039.
        let (z, p) = two_proportion(50, 100, 30, 100).unwrap();
        assert!((z - 2.8868).abs() < 1e-3, "{z}");
        assert!((p - 0.00389).abs() < 1e-4, "{p}");
        let (z, p) = two_proportion(10, 100, 10, 100).unwrap();
        assert_eq!(z, 0.0);
        assert!((p - 1.0).abs() < 1e-6);
        assert_eq!(two_proportion(0, 0, 1, 10), None);
        assert_eq!(two_proportion(0, 10, 0, 10), None, "no replies at all: nothing to compare");
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
    }

    #[test]
    fn variants_get_a_verdict_only_with_enough_sends() {
        let v = |name: &str, sent: u64, replied: u64| VariantLine {
            variant: name.into(),
            weight: Some(1),
            sent,
            replied,
            reply_rate: Some(replied as f64 / sent as f64),
        };
        let t = variant_test(&[v("a", 99, 50), v("b", 120, 10)], 100);
        assert_eq!((t.verdict, t.p_value), ("not enough data", None));
        let t = variant_test(&[v("a", 100, 30), v("b", 100, 50)], 100);
        assert_eq!(t.verdict, "significant");
        assert_eq!(t.compared, ["b", "a"]);
        let t = variant_test(&[v("a", 100, 30), v("b", 100, 33)], 100);
        assert_eq!(t.verdict, "not significant");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 90), Some(7));
        let v = [1, 2, 3, 10];
        assert_eq!(percentile(&v, 50), Some(2));
        assert_eq!(percentile(&v, 90), Some(10));
        let ten: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 50), Some(5));
        assert_eq!(percentile(&ten, 90), Some(9));
    }
}

//! Leads, enrollments, manual control, suppressions and the timeline.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::batch::{bind_rows, Rows};
use super::rows::{ENROLLMENT_COLS, LEAD_COLS};
use super::{dispatch, from_json_rows, json_agg, reserve_ids, Backend, Col, EnrollmentRow, LeadRow, Store, StoreError, TouchpointRow};
use crate::domain::{EmailAddress, EnrollmentState, LeadInput, TouchKind};

/// How to enroll: the sequence's side of it, decided by the caller.
pub struct EnrollPlan<'a> {
    pub sequence: &'a str,
    /// Rep to use when the lead has no owner yet (or `--rep` overrides).
    pub rep: &'a str,
    pub rep_overrides_owner: bool,
    /// Stage a new lead starts in (the pipeline's first stage).
    pub first_stage: &'a str,
    /// The sequence's `stage`: the lead moves there unless already further.
    pub enroll_stage: Option<&'a str>,
    pub stage_rank: &'a (dyn Fn(&str) -> usize + Sync),
    /// Given the merged lead, when step 1 falls due and when it may be sent.
    pub schedule: &'a (dyn Fn(&LeadRow) -> (i64, Option<i64>) + Sync),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enrolled {
    pub lead_id: i64,
    pub enrollment_id: i64,
    pub created_lead: bool,
    pub next_at: Option<i64>,
}

/// Why an enrollment was refused; nothing was changed.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    #[error("{email} is already {state} in sequence `{sequence}`")]
    AlreadyEnrolled { email: String, sequence: String, state: String },
    #[error("{email} is suppressed ({pattern}: {why})")]
    Suppressed { email: String, pattern: String, why: String },
}

/// A lead with its current (or latest) enrollment, for listings.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct LeadListRow {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub value: Option<f64>,
    pub owner: Option<String>,
    pub stage: String,
    pub status: String,
    pub last_touch_at: Option<i64>,
    pub sequence: Option<String>,
    pub rep: Option<String>,
    pub state: Option<String>,
    pub step: Option<i64>,
    pub next_at: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct LeadFilter {
    pub stage: Option<String>,
    pub sequence: Option<String>,
    pub rep: Option<String>,
    pub state: Option<String>,
    pub archived: bool,
}

/// Everything about one lead.
#[derive(Clone, Debug, Serialize)]
pub struct LeadDetail {
    pub lead: LeadRow,
    pub enrollments: Vec<EnrollmentRow>,
    pub touchpoints: Vec<TouchpointRow>,
}

/// A state change of a lead's live enrollment, logged as `touch`.
#[derive(Clone, Copy, Debug)]
pub struct Transition<'a> {
    pub from: &'a [EnrollmentState],
    pub to: EnrollmentState,
    pub next_at: Option<i64>,
    pub paused_until: Option<i64>,
    pub touch: TouchKind,
    pub detail: Option<&'a str>,
}

/// What matching an inbound message needs of a lead: who, which company,
/// its zone (for a return date), and the sequence of its current enrollment
/// (if it ever had one). Only these: a batch reads 500 of them, and reading
/// whole rows (`LeadRow`) took three times the instructions.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct MatchedLead {
    pub id: i64,
    pub email: String,
    pub domain: String,
    pub timezone: Option<String>,
    pub sequence: Option<String>,
}

impl MatchedLead {
    /// The lead's zone, or `default` (as [`LeadRow::tz`]).
    pub fn tz(&self, default: chrono_tz::Tz) -> chrono_tz::Tz {
        super::rows::zone_or(self.timezone.as_deref(), default)
    }
}

/// A touchpoint to record.
#[derive(Clone, Debug, Default)]
pub struct NewTouch<'a> {
    pub lead_id: i64,
    pub enrollment_id: Option<i64>,
    pub kind: Option<TouchKind>,
    pub at: i64,
    pub rep: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub step: Option<i64>,
}

pub(crate) const INSERT_TOUCH: &str =
    "INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, rep, subject, message_id, detail, step, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// Kinds that are not a touch of the lead (for staleness).
const UPDATE_LAST_TOUCH: &str =
    "UPDATE leads SET last_touch_at = $1, stale = 0 WHERE id = $2 AND (last_touch_at IS NULL OR last_touch_at < $1)";

/// Records a touchpoint inside an open transaction (any backend).
macro_rules! touch {
    ($tx:expr, $t:expr, $now:expr) => {{
        let t = &$t;
        let kind = t.kind.expect("touch kind").as_str();
        sqlx::query($crate::store::leads::INSERT_TOUCH)
            .bind(t.lead_id)
            .bind(t.enrollment_id)
            .bind(kind)
            .bind(t.at)
            .bind(t.rep)
            .bind(t.subject)
            .bind(t.message_id)
            .bind(t.detail)
            .bind(t.step)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        if $crate::store::leads::counts_as_touch(t.kind.expect("touch kind")) {
            sqlx::query($crate::store::leads::update_last_touch()).bind(t.at).bind(t.lead_id).execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use touch;

/// Records many touchpoints `(touch, recorded at)` inside an open
/// transaction in a few statements, whatever their number, with the same
/// rows and effect as [`touch!`] on each in turn.
macro_rules! touches {
    ($tx:expr, $pool:expr, $rows:expr) => {{
        let rows: &[($crate::store::leads::NewTouch, i64)] = $rows;
        if !rows.is_empty() {
            use $crate::store::batch::bind_rows;
            let (inserts, last_touches) = $crate::store::leads::touch_batch($pool, rows);
            for inserts in inserts {
                let sql = format!(
                    "INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, rep, subject, message_id, detail, step, created_at) \
                     SELECT lead_id, enrollment_id, kind, at, rep, subject, message_id, detail, step, created_at FROM {}",
                    inserts.table()
                );
                bind_rows!(sqlx::query(&sql), inserts).execute(&mut *$tx).await?;
            }
            let sql = format!(
                "UPDATE leads SET last_touch_at = v.touched_at, stale = 0 FROM {} \
                 WHERE leads.id = v.touched_id AND (leads.last_touch_at IS NULL OR leads.last_touch_at < v.touched_at)",
                last_touches.table()
            );
            bind_rows!(sqlx::query(&sql), last_touches).execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use touches;

/// The rows of [`touches!`]: those to insert (in chunks that each bind as
/// `VALUES`: a reply and its stage change are 1,000 touchpoints in a batch
/// of 500), and each touched lead's latest touch (those kinds that count as
/// one).
pub(crate) fn touch_batch<DB: Backend>(pool: &sqlx::Pool<DB>, rows: &[(NewTouch, i64)]) -> (Vec<Rows<'static>>, Rows<'static>) {
    #[derive(Serialize)]
    struct Row<'a> {
        lead_id: i64,
        enrollment_id: Option<i64>,
        kind: &'static str,
        at: i64,
        rep: Option<&'a str>,
        subject: Option<&'a str>,
        message_id: Option<&'a str>,
        detail: Option<&'a str>,
        step: Option<i64>,
        created_at: i64,
    }
    const COLS: &[(&str, Col)] = &[
        ("lead_id", Col::Int),
        ("enrollment_id", Col::Int),
        ("kind", Col::Text),
        ("at", Col::Int),
        ("rep", Col::Text),
        ("subject", Col::Text),
        ("message_id", Col::Text),
        ("detail", Col::Text),
        ("step", Col::Int),
        ("created_at", Col::Int),
    ];
    #[derive(Serialize)]
    struct Latest {
        touched_id: i64,
        touched_at: i64,
    }
    let mut latest: HashMap<i64, i64> = HashMap::new();
    let inserts: Vec<Row> = rows
        .iter()
        .map(|(t, created_at)| {
            let kind = t.kind.expect("touch kind");
            if counts_as_touch(kind) {
                let at = latest.entry(t.lead_id).or_insert(t.at);
                *at = (*at).max(t.at);
            }
            Row {
                lead_id: t.lead_id,
                enrollment_id: t.enrollment_id,
                kind: kind.as_str(),
                at: t.at,
                rep: t.rep,
                subject: t.subject,
                message_id: t.message_id,
                detail: t.detail,
                step: t.step,
                created_at: *created_at,
            }
        })
        .collect();
    let latest: Vec<Latest> = latest.into_iter().map(|(touched_id, touched_at)| Latest { touched_id, touched_at }).collect();
    let inserts = inserts.chunks(Rows::max_rows(pool, COLS.len())).map(|chunk| Rows::new(pool, COLS, chunk)).collect();
    (inserts, Rows::new(pool, &[("touched_id", Col::Int), ("touched_at", Col::Int)], &latest))
}

pub(crate) fn update_last_touch() -> &'static str {
    UPDATE_LAST_TOUCH
}

/// System bookkeeping does not make a lead look recently worked.
pub(crate) fn counts_as_touch(kind: TouchKind) -> bool {
    !matches!(kind, TouchKind::Stale | TouchKind::SendFailed | TouchKind::SendUnknown | TouchKind::Paused | TouchKind::TaskSkipped)
}

/// Orders a lead's enrollments current first: the live one, else the latest.
const CURRENT_FIRST: &str = "ORDER BY CASE WHEN state IN ('active', 'paused') THEN 0 ELSE 1 END, id DESC";

impl Store {
    /// Creates or updates the lead and enrolls it, atomically: a refusal
    /// changes nothing.
    pub async fn enroll(&self, now: i64, input: &LeadInput, plan: &EnrollPlan<'_>) -> Result<Result<Enrolled, Refusal>, StoreError> {
        let mut out = self.enroll_batch(now, std::slice::from_ref(input), plan).await?;
        Ok(out.pop().expect("one result per input"))
    }

    /// Enrolls many leads in one transaction (the importer's batches). Each
    /// input gets its own outcome; refused rows change nothing.
    pub async fn enroll_batch(
        &self,
        now: i64,
        inputs: &[LeadInput],
        plan: &EnrollPlan<'_>,
    ) -> Result<Vec<Result<Enrolled, Refusal>>, StoreError> {
        let lead_sql = format!("SELECT {LEAD_COLS} FROM leads WHERE email = $1");
        let insert_lead = format!(
            "INSERT INTO leads (email, domain, first_name, last_name, company, title, timezone, region, value, fields, owner, stage, status, stale, stage_changed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', 0, $13, $13, $13) RETURNING {LEAD_COLS}"
        );
        let update_lead = format!(
            "UPDATE leads SET first_name = $1, last_name = $2, company = $3, title = $4, timezone = $5, region = $6, value = $7, fields = $8, owner = $9, \
             stage = $10, status = 'active', stale = 0, stage_changed_at = $11, updated_at = $12 WHERE id = $13 RETURNING {LEAD_COLS}"
        );
        let mut emails = Vec::with_capacity(inputs.len());
        for input in inputs {
            emails.push(input.email.as_ref().ok_or_else(|| StoreError::Data("lead without email".into()))?);
        }
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            let mut results: Vec<Option<Result<Enrolled, Refusal>>> = vec![None; inputs.len()];
            // What the batch touches, looked up set-wise: leads that exist
            // and suppressions that match.
            let mut uniq: HashSet<&str> = HashSet::with_capacity(inputs.len());
            let addresses: Vec<&str> = emails.iter().map(|e| e.as_str()).filter(|e| uniq.insert(e)).collect();
            let keys = Rows::keys(pool, Col::Text, &addresses);
            let sql = format!("SELECT l.email FROM {} JOIN leads l ON l.email = v.key", keys.table());
            let existing: HashSet<String> = bind_rows!(sqlx::query_scalar(&sql), keys)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            let domains: HashSet<String> = emails.iter().map(|e| format!("@{}", e.domain())).collect();
            let patterns = addresses.iter().copied().chain(domains.iter().map(String::as_str));
            let keys = Rows::keys(pool, Col::Text, patterns);
            let sql = format!("SELECT s.pattern, s.reason FROM {} JOIN suppressions s ON s.pattern = v.key", keys.table());
            let suppressed: HashMap<String, String> =
                bind_rows!(sqlx::query_as(&sql), keys)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            // New, unsuppressed addresses seen once in the batch (nearly
            // every row of an import) are written set-wise; the rest go one
            // by one below, in input order.
            let mut fresh: Vec<usize> = Vec::with_capacity(inputs.len());
            let mut slow: Vec<usize> = Vec::new();
            let mut seen: HashSet<&str> = HashSet::with_capacity(inputs.len());
            for (i, email) in emails.iter().enumerate() {
                if !seen.insert(email.as_str()) || existing.contains(email.as_str()) {
                    slow.push(i);
                    continue;
                }
                let domain_pattern = format!("@{}", email.domain());
                let hit = [email.as_str(), domain_pattern.as_str()].into_iter().find_map(|p| suppressed.get(p).map(|why| (p.to_string(), why.clone())));
                if let Some((pattern, why)) = hit {
                    results[i] = Some(Err(Refusal::Suppressed { email: email.to_string(), pattern, why }));
                    continue;
                }
                fresh.push(i);
            }
            if !fresh.is_empty() {
                // A new lead starts in the sequence's stage (else the first).
                let stage = plan.enroll_stage.unwrap_or(plan.first_stage);
                let owner = plan.rep;
                let lead_ids = reserve_ids(pool, &mut tx, "leads", fresh.len()).await?;
                let enrollment_ids = reserve_ids(pool, &mut tx, "enrollments", fresh.len()).await?;
                let mut leads: Vec<LeadRow> = Vec::with_capacity(fresh.len());
                #[derive(Serialize)]
                struct NewEnrollment {
                    id: i64,
                    lead_id: i64,
                    due_at: i64,
                    next_at: Option<i64>,
                }
                let mut enrollments: Vec<NewEnrollment> = Vec::with_capacity(fresh.len());
                for ((&i, lead_id), enrollment_id) in fresh.iter().zip(lead_ids).zip(enrollment_ids) {
                    let input = &inputs[i];
                    let email = emails[i];
                    let lead = LeadRow {
                        id: lead_id,
                        email: email.as_str().to_string(),
                        domain: email.domain().to_string(),
                        first_name: input.first_name.clone(),
                        last_name: input.last_name.clone(),
                        company: input.company.clone(),
                        title: input.title.clone(),
                        timezone: input.timezone.map(|t| t.name().to_string()),
                        region: input.region.clone(),
                        value: input.value,
                        fields: serde_json::to_string(&input.fields).expect("string map serialises"),
                        owner: Some(owner.to_string()),
                        stage: stage.to_string(),
                        status: "active".into(),
                        stale: 0,
                        stage_changed_at: now,
                        last_touch_at: Some(now),
                        created_at: now,
                        updated_at: now,
                    };
                    let (due_at, next_at) = (plan.schedule)(&lead);
                    enrollments.push(NewEnrollment { id: enrollment_id, lead_id, due_at, next_at });
                    leads.push(lead);
                    results[i] = Some(Ok(Enrolled { lead_id, enrollment_id, created_lead: true, next_at }));
                }
                let lead_cols = [
                    ("id", Col::Int),
                    ("email", Col::Text),
                    ("domain", Col::Text),
                    ("first_name", Col::Text),
                    ("last_name", Col::Text),
                    ("company", Col::Text),
                    ("title", Col::Text),
                    ("timezone", Col::Text),
                    ("region", Col::Text),
                    ("value", Col::Float),
                    ("fields", Col::Text),
                ];
                let enrollment_cols = [("id", Col::Int), ("lead_id", Col::Int), ("due_at", Col::Int), ("next_at", Col::Int)];
                let touch_cols = [("id", Col::Int), ("lead_id", Col::Int)];
                let (enrolled_detail, stage_detail) = (format!("sequence {}", plan.sequence), format!("-> {stage}"));
                let per = Rows::max_rows(pool, lead_cols.len());
                for (leads, enrollments) in leads.chunks(per).zip(enrollments.chunks(per)) {
                    let rows = Rows::new(pool, &lead_cols, leads);
                    let sql = format!(
                        "INSERT INTO leads (id, email, domain, first_name, last_name, company, title, timezone, region, value, fields, \
                         owner, stage, status, stale, stage_changed_at, last_touch_at, created_at, updated_at) \
                         SELECT id, email, domain, first_name, last_name, company, title, timezone, region, value, fields, \
                         {owner}, {stage}, 'active', 0, {now}, {now}, {now}, {now} FROM {}",
                        rows.table(),
                        owner = rows.param(1),
                        stage = rows.param(2),
                        now = rows.param(3),
                    );
                    bind_rows!(sqlx::query(&sql), rows).bind(owner).bind(stage).bind(now).execute(&mut *tx).await?;
                    let rows = Rows::new(pool, &enrollment_cols, enrollments);
                    let sql = format!(
                        "INSERT INTO enrollments (id, lead_id, sequence, rep, state, phase, step, touches, due_at, next_at, enrolled_at, updated_at) \
                         SELECT id, lead_id, {}, {}, 'active', 'step', 0, 0, due_at, next_at, {now}, {now} FROM {}",
                        rows.param(1),
                        rows.param(2),
                        rows.table(),
                        now = rows.param(3),
                    );
                    bind_rows!(sqlx::query(&sql), rows).bind(plan.sequence).bind(owner).bind(now).execute(&mut *tx).await?;
                    // Two touchpoints per lead, enrolled then the stage it
                    // starts in, from the enrollments' ids (not `touches!`:
                    // the leads were written with their last touch already).
                    let rows = Rows::new(pool, &touch_cols, enrollments);
                    let sql = format!(
                        "INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, rep, detail, created_at) \
                         SELECT v.lead_id, v.id, k.kind, {now}, {rep}, k.detail, {now} FROM {} \
                         CROSS JOIN (SELECT {} AS kind, {} AS detail UNION ALL SELECT {}, {}) AS k",
                        rows.table(),
                        rows.param(3),
                        rows.param(4),
                        rows.param(5),
                        rows.param(6),
                        now = rows.param(1),
                        rep = rows.param(2),
                    );
                    bind_rows!(sqlx::query(&sql), rows)
                        .bind(now)
                        .bind(owner)
                        .bind(TouchKind::Enrolled.as_str())
                        .bind(&enrolled_detail)
                        .bind(TouchKind::StageChange.as_str())
                        .bind(&stage_detail)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for &i in &slow {
                let input = &inputs[i];
                let email = input.email.as_ref().ok_or_else(|| StoreError::Data("lead without email".into()))?;
                let existing: Option<LeadRow> = sqlx::query_as(&lead_sql).bind(email.as_str()).fetch_optional(&mut *tx).await?;
                let domain_pattern = format!("@{}", email.domain());
                let suppressed: Option<(String, String)> =
                    sqlx::query_as("SELECT pattern, reason FROM suppressions WHERE pattern = $1 OR pattern = $2 LIMIT 1")
                        .bind(email.as_str())
                        .bind(&domain_pattern)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((pattern, why)) = suppressed {
                    results[i] = Some(Err(Refusal::Suppressed { email: email.to_string(), pattern, why }));
                    continue;
                }
                if let Some(lead) = &existing {
                    let live: Option<(String, String)> =
                        sqlx::query_as("SELECT sequence, state FROM enrollments WHERE lead_id = $1 AND state IN ('active', 'paused')")
                            .bind(lead.id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if let Some((sequence, state)) = live {
                        results[i] = Some(Err(Refusal::AlreadyEnrolled { email: email.to_string(), sequence, state }));
                        continue;
                    }
                }
                // Merge: given values win, missing ones keep what is stored.
                let (mut stage, old_stage) = match &existing {
                    Some(l) if !l.is_archived() => (l.stage.clone(), Some(l.stage.clone())),
                    Some(l) => (plan.first_stage.to_string(), Some(l.stage.clone())),
                    None => (plan.first_stage.to_string(), None),
                };
                if let Some(target) = plan.enroll_stage {
                    if (plan.stage_rank)(target) > (plan.stage_rank)(&stage) || old_stage.is_none() {
                        stage = target.to_string();
                    }
                }
                let mut fields = existing.as_ref().map(LeadRow::custom_fields).unwrap_or_default();
                fields.extend(input.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                let fields = serde_json::to_string(&fields).expect("string map serialises");
                let pick = |given: &Option<String>, stored: Option<&Option<String>>| given.clone().or_else(|| stored.cloned().flatten());
                let owner = if plan.rep_overrides_owner {
                    plan.rep.to_string()
                } else {
                    existing.as_ref().and_then(|l| l.owner.clone()).unwrap_or_else(|| plan.rep.to_string())
                };
                let stage_changed = old_stage.as_deref() != Some(stage.as_str());
                let lead: LeadRow = match &existing {
                    None => {
                        sqlx::query_as(&insert_lead)
                            .bind(email.as_str())
                            .bind(email.domain())
                            .bind(&input.first_name)
                            .bind(&input.last_name)
                            .bind(&input.company)
                            .bind(&input.title)
                            .bind(input.timezone.map(|t| t.name().to_string()))
                            .bind(&input.region)
                            .bind(input.value)
                            .bind(&fields)
                            .bind(&owner)
                            .bind(&stage)
                            .bind(now)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                    Some(l) => {
                        sqlx::query_as(&update_lead)
                            .bind(pick(&input.first_name, Some(&l.first_name)))
                            .bind(pick(&input.last_name, Some(&l.last_name)))
                            .bind(pick(&input.company, Some(&l.company)))
                            .bind(pick(&input.title, Some(&l.title)))
                            .bind(input.timezone.map(|t| t.name().to_string()).or_else(|| l.timezone.clone()))
                            .bind(pick(&input.region, Some(&l.region)))
                            .bind(input.value.or(l.value))
                            .bind(&fields)
                            .bind(&owner)
                            .bind(&stage)
                            .bind(if stage_changed { now } else { l.stage_changed_at })
                            .bind(now)
                            .bind(l.id)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                };
                let (due_at, next_at) = (plan.schedule)(&lead);
                let enrollment_id: i64 = sqlx::query_scalar(
                    "INSERT INTO enrollments (lead_id, sequence, rep, state, phase, step, touches, due_at, next_at, enrolled_at, updated_at) \
                     VALUES ($1, $2, $3, 'active', 'step', 0, 0, $4, $5, $6, $6) RETURNING id",
                )
                .bind(lead.id)
                .bind(plan.sequence)
                .bind(&owner)
                .bind(due_at)
                .bind(next_at)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let detail = format!("sequence {}", plan.sequence);
                touch!(tx, NewTouch { lead_id: lead.id, enrollment_id: Some(enrollment_id), kind: Some(TouchKind::Enrolled), at: now, rep: Some(&owner), detail: Some(&detail), ..Default::default() }, now);
                if stage_changed {
                    let detail = match &old_stage {
                        Some(old) => format!("{old} -> {stage}"),
                        None => format!("-> {stage}"),
                    };
                    touch!(tx, NewTouch { lead_id: lead.id, enrollment_id: Some(enrollment_id), kind: Some(TouchKind::StageChange), at: now, rep: Some(&owner), detail: Some(&detail), ..Default::default() }, now);
                }
                results[i] = Some(Ok(Enrolled { lead_id: lead.id, enrollment_id, created_lead: existing.is_none(), next_at }));
            }
            tx.commit().await?;
            Ok(results.into_iter().map(|r| r.expect("every input has an outcome")).collect())
        })
    }

    pub async fn lead_by_email(&self, email: &str) -> Result<Option<LeadRow>, StoreError> {
        let sql = format!("SELECT {LEAD_COLS} FROM leads WHERE email = $1");
        let email = email.trim().to_lowercase();
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(&email).fetch_optional(pool).await?))
    }

    pub async fn lead_by_id(&self, id: i64) -> Result<Option<LeadRow>, StoreError> {
        let sql = format!("SELECT {LEAD_COLS} FROM leads WHERE id = $1");
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    pub async fn enrollment(&self, id: i64) -> Result<Option<EnrollmentRow>, StoreError> {
        let sql = format!("SELECT {ENROLLMENT_COLS} FROM enrollments WHERE id = $1");
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    /// The lead's live enrollment, else its latest one.
    pub async fn current_enrollment(&self, lead_id: i64) -> Result<Option<EnrollmentRow>, StoreError> {
        let sql = format!("SELECT {ENROLLMENT_COLS} FROM enrollments WHERE lead_id = $1 {CURRENT_FIRST} LIMIT 1");
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(lead_id).fetch_optional(pool).await?))
    }

    /// The leads with these ids or addresses, each with the sequence of its
    /// [`Store::current_enrollment`], in no particular order: what the
    /// inbox's batches match against, in one statement and one row.
    pub async fn leads_for_matching(&self, ids: &[i64], emails: &[&EmailAddress]) -> Result<Vec<MatchedLead>, StoreError> {
        if ids.is_empty() && emails.is_empty() {
            return Ok(Vec::new());
        }
        Ok(dispatch!(self, pool => {
            #[derive(Serialize)]
            struct Wanted<'a> {
                id: Option<i64>,
                email: Option<&'a str>,
            }
            let wanted: Vec<Wanted> = ids
                .iter()
                .map(|&id| Wanted { id: Some(id), email: None })
                .chain(emails.iter().map(|e| Wanted { id: None, email: Some(e.as_str()) }))
                .collect();
            let wanted = Rows::new(pool, &[("id", Col::Int), ("email", Col::Text)], &wanted);
            let sql = format!(
                "WITH w AS (SELECT id, email FROM {}) \
                 SELECT id, email, domain, timezone, (SELECT sequence FROM enrollments WHERE lead_id = leads.id {CURRENT_FIRST} LIMIT 1) AS sequence FROM leads \
                 WHERE id IN (SELECT id FROM w WHERE id IS NOT NULL UNION SELECT l.id FROM w JOIN leads l ON l.email = w.email)",
                wanted.table()
            );
            let sql = json_agg(pool, &sql, "id, email, domain, timezone, sequence");
            let json: String = bind_rows!(sqlx::query_scalar(&sql), wanted).fetch_one(pool).await?;
            from_json_rows(&json)?
        }))
    }

    pub async fn lead_detail(&self, email: &str) -> Result<Option<LeadDetail>, StoreError> {
        let Some(lead) = self.lead_by_email(email).await? else { return Ok(None) };
        let esql = format!("SELECT {ENROLLMENT_COLS} FROM enrollments WHERE lead_id = $1 ORDER BY id");
        let tsql = "SELECT id, lead_id, enrollment_id, kind, at, rep, subject, message_id, detail, step FROM touchpoints WHERE lead_id = $1 ORDER BY at, id";
        let (enrollments, touchpoints) = dispatch!(self, pool => (
            sqlx::query_as(&esql).bind(lead.id).fetch_all(pool).await?,
            sqlx::query_as(tsql).bind(lead.id).fetch_all(pool).await?,
        ));
        Ok(Some(LeadDetail { lead, enrollments, touchpoints }))
    }

    pub async fn list_leads(&self, f: &LeadFilter) -> Result<Vec<LeadListRow>, StoreError> {
        let mut sql = String::from(
            "SELECT l.id, l.email, l.first_name, l.last_name, l.company, l.value, l.owner, l.stage, l.status, l.last_touch_at, \
             e.sequence, e.rep, e.state, e.step, e.next_at \
             FROM leads l LEFT JOIN enrollments e ON e.id = (SELECT max(x.id) FROM enrollments x WHERE x.lead_id = l.id) \
             WHERE l.status = $1",
        );
        let mut binds: Vec<String> = vec![if f.archived { "archived" } else { "active" }.to_string()];
        for (col, val) in [("l.stage", &f.stage), ("e.sequence", &f.sequence), ("l.owner", &f.rep), ("e.state", &f.state)] {
            if let Some(v) = val {
                binds.push(v.clone());
                sql.push_str(&format!(" AND {col} = ${}", binds.len()));
            }
        }
        sql.push_str(" ORDER BY l.id");
        Ok(dispatch!(self, pool => {
            let mut q = sqlx::query_as(&sql);
            for b in &binds {
                q = q.bind(b);
            }
            q.fetch_all(pool).await?
        }))
    }

    /// Records a touchpoint on its own.
    pub async fn add_touch(&self, now: i64, t: NewTouch<'_>) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            touch!(tx, t, now);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Changes the state of the lead's live enrollment from one of `from` to
    /// `to`, recording a touchpoint. Returns the enrollment, or `None` when the
    /// lead has no enrollment in one of those states.
    pub async fn transition(&self, now: i64, lead_id: i64, t: &Transition<'_>) -> Result<Option<EnrollmentRow>, StoreError> {
        let Transition { from, to, next_at, paused_until, touch: touch_kind, detail } = *t;
        let states = from.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
        let select =
            format!("SELECT {ENROLLMENT_COLS} FROM enrollments WHERE lead_id = $1 AND state IN ({states}) ORDER BY id DESC LIMIT 1");
        let ended = !to.is_live();
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            let e: Option<EnrollmentRow> = sqlx::query_as(&select).bind(lead_id).fetch_optional(&mut *tx).await?;
            let Some(e) = e else { return Ok(None) };
            sqlx::query(
                "UPDATE enrollments SET state = $1, next_at = $2, paused_until = $3, updated_at = $4, \
                 ended_at = CASE WHEN $5 = 1 THEN $4 ELSE ended_at END, end_reason = CASE WHEN $5 = 1 THEN $6 ELSE end_reason END WHERE id = $7",
            )
            .bind(to.as_str())
            .bind(next_at)
            .bind(paused_until)
            .bind(now)
            .bind(i64::from(ended))
            .bind(touch_kind.as_str())
            .bind(e.id)
            .execute(&mut *tx)
            .await?;
            touch!(tx, NewTouch { lead_id, enrollment_id: Some(e.id), kind: Some(touch_kind), at: now, rep: Some(&e.rep), detail, ..Default::default() }, now);
            sqlx::query(super::tasks::CANCEL_DEAD_TASKS).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(e))
        })
    }

    /// Moves the lead to `stage` (logged). Returns the old stage, or `None`
    /// when it already was there.
    pub async fn set_stage(
        &self,
        now: i64,
        lead_id: i64,
        stage: &str,
        rep: Option<&str>,
        why: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            let old: Option<String> = sqlx::query_scalar("SELECT stage FROM leads WHERE id = $1").bind(lead_id).fetch_optional(&mut *tx).await?;
            let Some(old) = old else { return Err(StoreError::Data(format!("no lead {lead_id}"))) };
            if old == stage {
                return Ok(None);
            }
            sqlx::query("UPDATE leads SET stage = $1, stage_changed_at = $2, updated_at = $2, stale = 0 WHERE id = $3")
                .bind(stage)
                .bind(now)
                .bind(lead_id)
                .execute(&mut *tx)
                .await?;
            let detail = match why {
                Some(w) => format!("{old} -> {stage} ({w})"),
                None => format!("{old} -> {stage}"),
            };
            touch!(tx, NewTouch { lead_id, kind: Some(TouchKind::StageChange), at: now, rep, detail: Some(&detail), ..Default::default() }, now);
            tx.commit().await?;
            Ok(Some(old))
        })
    }

    /// Adds `pattern` (an address or `@domain`) to the suppression list and
    /// stops the live enrollments of matching leads. Returns how many were
    /// stopped.
    pub async fn suppress(&self, now: i64, pattern: &str, reason: &str, state: EnrollmentState) -> Result<u64, StoreError> {
        let pattern = pattern.trim().to_lowercase();
        let (by_domain, value) = match pattern.strip_prefix('@') {
            Some(d) => (true, d.to_string()),
            None => (false, pattern.clone()),
        };
        let find = if by_domain {
            "SELECT e.id, e.lead_id, e.rep FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.domain = $1 AND e.state IN ('active', 'paused')"
        } else {
            "SELECT e.id, e.lead_id, e.rep FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = $1 AND e.state IN ('active', 'paused')"
        };
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            sqlx::query("INSERT INTO suppressions (pattern, reason, created_at) VALUES ($1, $2, $3) ON CONFLICT (pattern) DO NOTHING")
                .bind(&pattern)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let live: Vec<(i64, i64, String)> = sqlx::query_as(find).bind(&value).fetch_all(&mut *tx).await?;
            for (eid, lead_id, rep) in &live {
                sqlx::query("UPDATE enrollments SET state = $1, next_at = NULL, updated_at = $2, ended_at = $2, end_reason = $3 WHERE id = $4")
                    .bind(state.as_str())
                    .bind(now)
                    .bind(reason)
                    .bind(eid)
                    .execute(&mut *tx)
                    .await?;
                let detail = format!("{pattern} suppressed: {reason}");
                touch!(tx, NewTouch { lead_id: *lead_id, enrollment_id: Some(*eid), kind: Some(TouchKind::Suppressed), at: now, rep: Some(rep), detail: Some(&detail), ..Default::default() }, now);
            }
            sqlx::query(super::tasks::CANCEL_DEAD_TASKS).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(live.len() as u64)
        })
    }

    /// The suppression entry matching an address, if any.
    pub async fn suppression_for(&self, email: &EmailAddress) -> Result<Option<(String, String)>, StoreError> {
        let domain = format!("@{}", email.domain());
        Ok(dispatch!(self, pool => sqlx::query_as("SELECT pattern, reason FROM suppressions WHERE pattern = $1 OR pattern = $2 LIMIT 1")
            .bind(email.as_str())
            .bind(&domain)
            .fetch_optional(pool)
            .await?))
    }
}

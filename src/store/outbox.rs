//! The outbox: claiming due work and acknowledging its outcome.
//!
//! The at-most-once rule lives here. A claim commits a `sends` row in state
//! `sending` (with a fresh Message-ID) and takes the enrollment off the due
//! index, all in one short transaction; SMTP happens after the commit; the
//! acknowledgement moves the row out of `sending` only if it is still there.
//! A row left in `sending` by a crash becomes `send_unknown` and is never
//! sent again.

use std::collections::{HashMap, HashSet};

use super::leads::{touch, NewTouch};
use super::{begin_sql, claim_lock, dispatch, single_instance, skip_locked, EnrollmentRow, LeadRow, SendRow, Store, StoreError};
use crate::domain::{EnrollmentState, TouchKind};

/// The row an acknowledgement moved.
#[derive(sqlx::FromRow)]
struct AckedSend {
    enrollment_id: Option<i64>,
    lead_id: Option<i64>,
    rep: String,
    step: Option<i64>,
    message_id: String,
    subject: Option<String>,
    recipient: String,
}

/// A rep's sending so far in the current period, as the claim sees it.
#[derive(Clone, Debug, Default)]
pub struct RepUsage {
    /// Emails claimed since the start of the rep's calendar day.
    pub today: i64,
    /// The latest claim time (for `min_gap`).
    pub last_claim_at: Option<i64>,
}

/// What the claim should do with one due enrollment.
pub enum Decision<T> {
    /// Send it: commit a `sending` row. `T` travels to the sender.
    Send(NewSend, T),
    /// Not now: act again at this time (window closed, paused rep...).
    Defer(i64),
    /// Leave it due (a cap is full); `rep_full` excludes the rep from the
    /// rest of this claim.
    Hold { rep_full: bool },
    /// The send cannot be made (render error): pause, log `send_failed`.
    Fail(String),
    /// Archive the lead (the end of a cadence with no reply).
    Archive(String),
    /// The enrollment is complete (no last chance, no archive).
    Complete(String),
    /// A task step fell due: create the task and wait for the rep.
    CreateTask(super::NewTask),
    /// The open task timed out: close it and move on.
    TaskTimeout(Advance),
}

/// The outbox row to create for a claimed send.
#[derive(Clone, Debug)]
pub struct NewSend {
    pub kind: &'static str,
    pub step: i64,
    pub template: String,
    pub template_hash: Option<String>,
    pub sequence_hash: Option<String>,
    pub variant: Option<String>,
    pub recipient: String,
    pub recipient_domain: String,
    pub message_id: String,
    pub subject: String,
}

/// The decisions the claim asks of its caller (the engine), which knows
/// the config, templates and clock. Called inside the claim transaction:
/// no I/O.
pub trait ClaimPolicy {
    type Payload;
    /// Start of the rep's current calendar day (daily cap).
    fn day_start(&self, rep: &str) -> i64;
    /// Domain counts are only queried for reps that have a domain cap.
    fn has_domain_cap(&self, rep: &str) -> bool;
    fn decide(&mut self, e: &EnrollmentRow, lead: &LeadRow, usage: &RepUsage, domain_today: i64) -> Decision<Self::Payload>;
}

/// A claimed send, committed as `sending`.
pub struct Claimed<T> {
    pub send_id: i64,
    pub enrollment: EnrollmentRow,
    pub lead: LeadRow,
    pub send: NewSend,
    pub payload: T,
}

/// Where an enrollment goes after a send (computed by the engine).
#[derive(Clone, Debug, PartialEq)]
pub struct Advance {
    pub state: EnrollmentState,
    pub phase: &'static str,
    pub step: i64,
    pub touches: i64,
    pub due_at: Option<i64>,
    pub next_at: Option<i64>,
    /// The thread after this send (space-separated Message-IDs).
    pub thread_refs: String,
    pub thread_subject: Option<String>,
}

/// The outcome of one claimed send.
#[derive(Clone, Debug)]
pub enum Ack {
    Sent {
        touch: TouchKind,
        advance: Advance,
    },
    /// The server may have it: never resent; the enrollment moves on.
    Unknown {
        error: String,
        advance: Advance,
    },
    /// Try again at `next_at`.
    Retry {
        error: String,
        next_at: Option<i64>,
        attempts: i64,
    },
    /// Give up on this send and pause the enrollment.
    Failed {
        error: String,
    },
    /// The server refused the recipient for good.
    Bounced {
        error: String,
    },
}

const ENROLLMENT_COLS: &str = "id, lead_id, sequence, rep, state, phase, step, touches, due_at, next_at, paused_until, attempts, thread_subject, thread_refs, last_sent_at, enrolled_at, updated_at, ended_at, end_reason";
const LEAD_COLS: &str = "id, email, domain, first_name, last_name, company, title, timezone, region, value, fields, owner, stage, status, stale, stage_changed_at, last_touch_at, created_at, updated_at";

/// Moves an enrollment on after a (possibly) delivered send.
macro_rules! advance_enrollment {
    ($tx:expr, $eid:expr, $now:expr, $a:expr) => {{
        let a: &Advance = $a;
        let ended = !a.state.is_live();
        sqlx::query(
            "UPDATE enrollments SET state = $1, phase = $2, step = $3, touches = $4, due_at = $5, next_at = $6, thread_refs = $7, \
             thread_subject = COALESCE($8, thread_subject), attempts = 0, last_sent_at = $9, updated_at = $9, \
             ended_at = CASE WHEN $10 = 1 THEN $9 ELSE ended_at END, end_reason = CASE WHEN $10 = 1 THEN 'completed' ELSE end_reason END \
             WHERE id = $11 AND state = 'active'",
        )
        .bind(a.state.as_str())
        .bind(a.phase)
        .bind(a.step)
        .bind(a.touches)
        .bind(a.due_at)
        .bind(a.next_at)
        .bind(&a.thread_refs)
        .bind(&a.thread_subject)
        .bind($now)
        .bind(i64::from(ended))
        .bind($eid)
        .execute(&mut *$tx)
        .await?;
        // Thread and touch count advance even when a reply stopped the
        // enrollment mid-send: the email went out.
        sqlx::query("UPDATE enrollments SET thread_refs = $1, touches = $2, last_sent_at = $3 WHERE id = $4 AND state <> 'active'")
            .bind(&a.thread_refs)
            .bind(a.touches)
            .bind($now)
            .bind($eid)
            .execute(&mut *$tx)
            .await?;
    }};
}

impl Store {
    /// Claims up to `limit` due sends in one transaction, oldest due first,
    /// scanning at most `scan` due rows (held rows are skipped over, so a
    /// full cap never starves other reps).
    pub async fn claim<P: ClaimPolicy>(
        &self,
        now: i64,
        limit: usize,
        scan: usize,
        policy: &mut P,
    ) -> Result<Vec<Claimed<P::Payload>>, StoreError> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_with(begin_sql(pool)).await?;
            if let Some(lock) = claim_lock(pool) {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let mut claimed = Vec::new();
            let mut usage: HashMap<String, RepUsage> = HashMap::new();
            let mut domain_counts: HashMap<(String, String), i64> = HashMap::new();
            let mut full: HashSet<String> = HashSet::new();
            let (mut after_at, mut after_id) = (i64::MIN, i64::MIN);
            let mut scanned = 0;
            'outer: while claimed.len() < limit && scanned < scan {
                let mut sql = format!(
                    "SELECT {ENROLLMENT_COLS} FROM enrollments WHERE state = 'active' AND next_at IS NOT NULL AND next_at <= $1 \
                     AND (next_at > $2 OR (next_at = $2 AND id > $3))"
                );
                if !full.is_empty() {
                    let reps: Vec<String> = full.iter().map(|r| format!("'{}'", r.replace('\'', "''"))).collect();
                    // Manual work is never held by a rep's send caps.
                    sql.push_str(&format!(" AND (rep NOT IN ({}) OR phase IN {})", reps.join(", "), super::tasks::TASK_PHASES));
                }
                let page = (limit - claimed.len()).clamp(16, 512);
                sql.push_str(&format!(" ORDER BY next_at, id LIMIT {page}{}", skip_locked(pool)));
                let rows: Vec<EnrollmentRow> = sqlx::query_as(&sql).bind(now).bind(after_at).bind(after_id).fetch_all(&mut *tx).await?;
                if rows.is_empty() {
                    break;
                }
                let ids: Vec<String> = rows.iter().map(|e| e.lead_id.to_string()).collect();
                let lsql = format!("SELECT {LEAD_COLS} FROM leads WHERE id IN ({})", ids.join(","));
                let leads: Vec<LeadRow> = sqlx::query_as(&lsql).fetch_all(&mut *tx).await?;
                let leads: HashMap<i64, LeadRow> = leads.into_iter().map(|l| (l.id, l)).collect();
                for e in rows {
                    scanned += 1;
                    after_at = e.next_at.unwrap_or(i64::MIN);
                    after_id = e.id;
                    if full.contains(&e.rep) && !super::tasks::is_task_phase(&e.phase) {
                        continue;
                    }
                    let Some(lead) = leads.get(&e.lead_id) else { continue };
                    if !usage.contains_key(&e.rep) {
                        let since = policy.day_start(&e.rep);
                        let (today, last): (i64, Option<i64>) = sqlx::query_as(
                            "SELECT COUNT(*), MAX(claimed_at) FROM sends WHERE rep = $1 AND claimed_at >= $2 AND state IN ('sending', 'sent', 'send_unknown', 'bounced')",
                        )
                        .bind(&e.rep)
                        .bind(since)
                        .fetch_one(&mut *tx)
                        .await?;
                        let last = match last {
                            Some(l) => Some(l),
                            None => sqlx::query_scalar("SELECT MAX(claimed_at) FROM sends WHERE rep = $1").bind(&e.rep).fetch_one(&mut *tx).await?,
                        };
                        usage.insert(e.rep.clone(), RepUsage { today, last_claim_at: last });
                    }
                    let key = (e.rep.clone(), lead.domain.clone());
                    if policy.has_domain_cap(&e.rep) && !domain_counts.contains_key(&key) {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM sends WHERE rep = $1 AND recipient_domain = $2 AND claimed_at >= $3 AND state IN ('sending', 'sent', 'send_unknown', 'bounced')",
                        )
                        .bind(&e.rep)
                        .bind(&lead.domain)
                        .bind(policy.day_start(&e.rep))
                        .fetch_one(&mut *tx)
                        .await?;
                        domain_counts.insert(key.clone(), n);
                    }
                    let domain_today = domain_counts.get(&key).copied().unwrap_or(0);
                    let decision = policy.decide(&e, lead, &usage[&e.rep], domain_today);
                    match decision {
                        Decision::Send(send, payload) => {
                            let send_id: i64 = sqlx::query_scalar(
                                "INSERT INTO sends (enrollment_id, lead_id, rep, kind, step, template, template_hash, sequence_hash, variant, recipient, recipient_domain, \
                                 message_id, subject, state, attempt, claimed_by, claimed_at) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'sending', $14, $15, $16) RETURNING id",
                            )
                            .bind(e.id)
                            .bind(e.lead_id)
                            .bind(&e.rep)
                            .bind(send.kind)
                            .bind(send.step)
                            .bind(&send.template)
                            .bind(&send.template_hash)
                            .bind(&send.sequence_hash)
                            .bind(&send.variant)
                            .bind(&send.recipient)
                            .bind(&send.recipient_domain)
                            .bind(&send.message_id)
                            .bind(&send.subject)
                            .bind(e.attempts + 1)
                            .bind(&self.instance)
                            .bind(now)
                            .fetch_one(&mut *tx)
                            .await?;
                            sqlx::query("UPDATE enrollments SET next_at = NULL, updated_at = $1 WHERE id = $2").bind(now).bind(e.id).execute(&mut *tx).await?;
                            let u = usage.get_mut(&e.rep).expect("usage loaded");
                            u.today += 1;
                            u.last_claim_at = Some(now);
                            *domain_counts.entry(key).or_default() += 1;
                            claimed.push(Claimed { send_id, enrollment: e, lead: lead.clone(), send, payload });
                            if claimed.len() >= limit {
                                break 'outer;
                            }
                        }
                        Decision::Defer(at) => {
                            sqlx::query("UPDATE enrollments SET next_at = $1, updated_at = $2 WHERE id = $3").bind(at).bind(now).bind(e.id).execute(&mut *tx).await?;
                        }
                        Decision::Hold { rep_full } => {
                            if rep_full {
                                full.insert(e.rep.clone());
                            }
                        }
                        Decision::Fail(why) => {
                            sqlx::query("UPDATE enrollments SET state = 'paused', next_at = NULL, updated_at = $1 WHERE id = $2").bind(now).bind(e.id).execute(&mut *tx).await?;
                            touch!(tx, NewTouch { lead_id: e.lead_id, enrollment_id: Some(e.id), kind: Some(TouchKind::SendFailed), at: now, rep: Some(&e.rep), detail: Some(&why), step: Some(e.step + 1), ..Default::default() }, now);
                        }
                        Decision::Archive(why) => {
                            sqlx::query("UPDATE enrollments SET state = 'archived', next_at = NULL, updated_at = $1, ended_at = $1, end_reason = 'archived' WHERE id = $2")
                                .bind(now).bind(e.id).execute(&mut *tx).await?;
                            let old_stage = lead.stage.clone();
                            sqlx::query("UPDATE leads SET status = 'archived', stage = 'lost', stage_changed_at = $1, updated_at = $1 WHERE id = $2")
                                .bind(now).bind(e.lead_id).execute(&mut *tx).await?;
                            if old_stage != "lost" {
                                let detail = format!("{old_stage} -> lost (archived)");
                                touch!(tx, NewTouch { lead_id: e.lead_id, enrollment_id: Some(e.id), kind: Some(TouchKind::StageChange), at: now, rep: Some(&e.rep), detail: Some(&detail), ..Default::default() }, now);
                            }
                            touch!(tx, NewTouch { lead_id: e.lead_id, enrollment_id: Some(e.id), kind: Some(TouchKind::Archived), at: now, rep: Some(&e.rep), detail: Some(&why), ..Default::default() }, now);
                        }
                        Decision::CreateTask(t) => {
                            super::tasks::create_task!(tx, &e, &t, now);
                        }
                        Decision::TaskTimeout(advance) => {
                            super::tasks::timeout_task!(tx, &e, &advance, now);
                        }
                        Decision::Complete(why) => {
                            sqlx::query("UPDATE enrollments SET state = 'completed', next_at = NULL, updated_at = $1, ended_at = $1, end_reason = $2 WHERE id = $3")
                                .bind(now).bind(&why).bind(e.id).execute(&mut *tx).await?;
                        }
                    }
                }
            }
            tx.commit().await?;
            Ok(claimed)
        })
    }

    /// Records the outcome of a claimed send. Only a row still `sending`
    /// moves; the enrollment advances only if it is still active (a reply may
    /// have stopped it while the send was in flight). Returns false when the
    /// row was no longer `sending` (already acknowledged or recovered).
    pub async fn ack(&self, now: i64, send_id: i64, ack: &Ack) -> Result<bool, StoreError> {
        Ok(self.ack_many(&[(now, send_id, ack)]).await?.pop().expect("one result per acknowledgement"))
    }

    /// Several acknowledgements `(now, send_id, outcome)` in one
    /// transaction, each as [`Store::ack`] would record it: the engine
    /// commits the outcomes of sends that finish together at once. All or
    /// none are recorded.
    pub async fn ack_many(&self, acks: &[(i64, i64, &Ack)]) -> Result<Vec<bool>, StoreError> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_with(begin_sql(pool)).await?;
            let mut out = Vec::with_capacity(acks.len());
            for &(now, send_id, ack) in acks {
                let (state, error) = match ack {
                    Ack::Sent { .. } => ("sent", None),
                    Ack::Unknown { error, .. } => ("send_unknown", Some(error.as_str())),
                    Ack::Retry { error, .. } => ("retry", Some(error.as_str())),
                    Ack::Failed { error } => ("failed", Some(error.as_str())),
                    Ack::Bounced { error } => ("bounced", Some(error.as_str())),
                };
                let row: Option<AckedSend> = sqlx::query_as(
                    "UPDATE sends SET state = $1, error = $2, finished_at = $3 WHERE id = $4 AND state = 'sending' AND claimed_by = $5 \
                     RETURNING enrollment_id, lead_id, rep, step, message_id, subject, recipient",
                )
                .bind(state)
                .bind(error)
                .bind(now)
                .bind(send_id)
                .bind(&self.instance)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(AckedSend { enrollment_id, lead_id, rep, step, message_id, subject, recipient }) = row else {
                    out.push(false);
                    continue;
                };
                // A send of no enrollment (a digest) has nothing more to record.
                let (Some(eid), Some(lead_id)) = (enrollment_id, lead_id) else {
                    out.push(true);
                    continue;
                };
                let step1 = step.map(|s| s + 1);
                match ack {
                    Ack::Sent { touch: kind, advance } => {
                        advance_enrollment!(tx, eid, now, advance);
                        touch!(tx, NewTouch { lead_id, enrollment_id: Some(eid), kind: Some(*kind), at: now, rep: Some(&rep), subject: subject.as_deref(), message_id: Some(&message_id), detail: None, step: step1 }, now);
                    }
                    Ack::Unknown { error, advance } => {
                        advance_enrollment!(tx, eid, now, advance);
                        touch!(tx, NewTouch { lead_id, enrollment_id: Some(eid), kind: Some(TouchKind::SendUnknown), at: now, rep: Some(&rep), subject: subject.as_deref(), message_id: Some(&message_id), detail: Some(error), step: step1 }, now);
                    }
                    Ack::Retry { next_at, attempts, .. } => {
                        sqlx::query("UPDATE enrollments SET next_at = $1, attempts = $2, updated_at = $3 WHERE id = $4 AND state = 'active'")
                            .bind(next_at).bind(attempts).bind(now).bind(eid).execute(&mut *tx).await?;
                    }
                    Ack::Failed { error } => {
                        sqlx::query("UPDATE enrollments SET state = 'paused', next_at = NULL, updated_at = $1 WHERE id = $2 AND state = 'active'")
                            .bind(now).bind(eid).execute(&mut *tx).await?;
                        touch!(tx, NewTouch { lead_id, enrollment_id: Some(eid), kind: Some(TouchKind::SendFailed), at: now, rep: Some(&rep), subject: subject.as_deref(), message_id: Some(&message_id), detail: Some(error), step: step1 }, now);
                    }
                    Ack::Bounced { error } => {
                        sqlx::query("UPDATE enrollments SET state = 'bounced', next_at = NULL, updated_at = $1, ended_at = $1, end_reason = 'bounce' WHERE id = $2 AND state IN ('active', 'paused')")
                            .bind(now).bind(eid).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO suppressions (pattern, reason, created_at) VALUES ($1, 'bounce', $2) ON CONFLICT (pattern) DO NOTHING")
                            .bind(&recipient).bind(now).execute(&mut *tx).await?;
                        touch!(tx, NewTouch { lead_id, enrollment_id: Some(eid), kind: Some(TouchKind::Bounce), at: now, rep: Some(&rep), subject: subject.as_deref(), message_id: Some(&message_id), detail: Some(error), step: step1 }, now);
                    }
                }
                out.push(true);
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Takes over a `sending` row of a dead process, so that this process
    /// may acknowledge it (only the claimer acknowledges).
    pub async fn adopt(&self, send_id: i64) -> Result<bool, StoreError> {
        let n = dispatch!(self, pool => sqlx::query("UPDATE sends SET claimed_by = $1 WHERE id = $2 AND state = 'sending'")
            .bind(&self.instance).bind(send_id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Sends left `sending` by a process that is gone. On SQLite (one
    /// daemon) that is every one not claimed by this process; on PostgreSQL
    /// those whose claimer has not heartbeaten since `alive_since`.
    pub async fn orphaned_sends(&self, alive_since: i64) -> Result<Vec<SendRow>, StoreError> {
        const COLS: &str = "id, enrollment_id, lead_id, rep, kind, step, template, recipient, message_id, subject, state, attempt, claimed_by, claimed_at, finished_at, error";
        Ok(dispatch!(self, pool => {
            if single_instance(pool) {
                let sql = format!("SELECT {COLS} FROM sends WHERE state = 'sending' AND (claimed_by IS NULL OR claimed_by <> $1) ORDER BY id");
                sqlx::query_as(&sql).bind(&self.instance).fetch_all(pool).await?
            } else {
                let sql = format!(
                    "SELECT {COLS} FROM sends WHERE state = 'sending' AND (claimed_by IS NULL OR (claimed_by <> $1 AND claimed_by NOT IN \
                     (SELECT id FROM instances WHERE heartbeat_at >= $2))) ORDER BY id"
                );
                sqlx::query_as(&sql).bind(&self.instance).bind(alive_since).fetch_all(pool).await?
            }
        }))
    }

    /// Sends by state, for explain and the report.
    pub async fn sends_for_lead(&self, lead_id: i64) -> Result<Vec<SendRow>, StoreError> {
        let sql = "SELECT id, enrollment_id, lead_id, rep, kind, step, template, recipient, message_id, subject, state, attempt, claimed_by, claimed_at, finished_at, error \
                   FROM sends WHERE lead_id = $1 ORDER BY id";
        Ok(dispatch!(self, pool => sqlx::query_as(sql).bind(lead_id).fetch_all(pool).await?))
    }

    /// Emails a rep has sent (or is sending) since `since`, total and to one domain.
    pub async fn rep_usage(&self, rep: &str, since: i64, domain: &str) -> Result<(i64, i64, Option<i64>), StoreError> {
        Ok(dispatch!(self, pool => {
            let (today, last): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MAX(claimed_at) FROM sends WHERE rep = $1 AND claimed_at >= $2 AND state IN ('sending', 'sent', 'send_unknown', 'bounced')",
            ).bind(rep).bind(since).fetch_one(pool).await?;
            let dom: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sends WHERE rep = $1 AND recipient_domain = $2 AND claimed_at >= $3 AND state IN ('sending', 'sent', 'send_unknown', 'bounced')",
            ).bind(rep).bind(domain).bind(since).fetch_one(pool).await?;
            (today, dom, last)
        }))
    }

    /// The earliest time anything is scheduled (for the daemon's sleep).
    pub async fn next_wakeup(&self) -> Result<Option<i64>, StoreError> {
        Ok(dispatch!(self, pool => {
            let a: Option<i64> = sqlx::query_scalar("SELECT MIN(next_at) FROM enrollments WHERE state = 'active' AND next_at IS NOT NULL").fetch_one(pool).await?;
            let b: Option<i64> = sqlx::query_scalar("SELECT MIN(paused_until) FROM enrollments WHERE state = 'paused' AND paused_until IS NOT NULL").fetch_one(pool).await?;
            match (a, b) { (Some(a), Some(b)) => Some(a.min(b)), (a, b) => a.or(b) }
        }))
    }

    /// Paused enrollments whose automatic pause has ended.
    pub async fn due_resumes(&self, now: i64, limit: i64) -> Result<Vec<EnrollmentRow>, StoreError> {
        let sql = format!("SELECT {ENROLLMENT_COLS} FROM enrollments WHERE state = 'paused' AND paused_until IS NOT NULL AND paused_until <= $1 ORDER BY paused_until LIMIT {limit}");
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(now).fetch_all(pool).await?))
    }

    /// Resumes a paused enrollment (manual or automatic), scheduled at `next_at`.
    pub async fn resume(
        &self,
        now: i64,
        enrollment_id: i64,
        due_at: Option<i64>,
        next_at: Option<i64>,
        detail: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_with(begin_sql(pool)).await?;
            let r: Option<(i64, String)> = sqlx::query_as(
                "UPDATE enrollments SET state = 'active', paused_until = NULL, attempts = 0, due_at = COALESCE($1, due_at), next_at = $2, updated_at = $3 \
                 WHERE id = $4 AND state = 'paused' RETURNING lead_id, rep",
            )
            .bind(due_at).bind(next_at).bind(now).bind(enrollment_id)
            .fetch_optional(&mut *tx).await?;
            let Some((lead_id, rep)) = r else { return Ok(false) };
            touch!(tx, NewTouch { lead_id, enrollment_id: Some(enrollment_id), kind: Some(TouchKind::Resumed), at: now, rep: Some(&rep), detail: Some(detail), ..Default::default() }, now);
            tx.commit().await?;
            Ok(true)
        })
    }
}

//! The outbox: claiming due work and acknowledging its outcome.
//!
//! The at-most-once rule lives here. A claim commits a `sends` row in state
//! `sending` (with a fresh Message-ID) and takes the enrollment off the due
//! index, all in one short transaction; SMTP happens after the commit; the
//! acknowledgement moves the row out of `sending` only if it is still there.
//! A row left in `sending` by a crash becomes `send_unknown` and is never
//! sent again.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::batch::{bind_rows, Rows};
use super::leads::{touch, touches, NewTouch};
use super::rows::{ENROLLMENT_COLS, LEAD_COLS};
use super::{
    claim_lock, dispatch, from_json_rows, json_agg, reserve_ids, single_instance, skip_locked, Col, EnrollmentRow, LeadRow, SendRow, Store,
    StoreError,
};
use crate::domain::{EnrollmentState, TouchKind};

/// The row an acknowledgement moved.
#[derive(sqlx::FromRow)]
struct AckedSend {
    id: i64,
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

/// Commits the decided sends as `sending` and takes their enrollments off
/// the due index: two statements for the whole claim. Evaluates to the
/// [`Claimed`] sends, in the order decided.
macro_rules! insert_sends {
    ($tx:expr, $pool:expr, $instance:expr, $now:expr, $decided:expr) => {{
        let decided: Vec<(EnrollmentRow, LeadRow, NewSend, _)> = $decided;
        let mut claimed = Vec::with_capacity(decided.len());
        if !decided.is_empty() {
            let ids = reserve_ids($pool, &mut $tx, "sends", decided.len()).await?;
            let rows: Vec<SendInsert> = decided.iter().zip(&ids).map(|((e, _, send, _), &id)| SendInsert::new(id, e, send)).collect();
            let rows = Rows::new($pool, SendInsert::COLS, &rows);
            let sql = format!(
                "INSERT INTO sends (id, enrollment_id, lead_id, rep, kind, step, template, template_hash, sequence_hash, variant, recipient, recipient_domain, \
                 message_id, subject, state, attempt, claimed_by, claimed_at) \
                 SELECT id, eid, lead_id, rep, kind, step, template, template_hash, sequence_hash, variant, recipient, recipient_domain, \
                 message_id, subject, 'sending', attempt, {}, {} FROM {}",
                rows.param(1),
                rows.param(2),
                rows.table()
            );
            bind_rows!(sqlx::query(&sql), rows).bind($instance).bind($now).execute(&mut *$tx).await?;
            let enrollments = Rows::keys($pool, Col::Int, decided.iter().map(|(e, ..)| e.id));
            let sql = format!("UPDATE enrollments SET next_at = NULL, updated_at = {} WHERE id IN (SELECT key FROM {})", enrollments.param(1), enrollments.table());
            bind_rows!(sqlx::query(&sql), enrollments).bind($now).execute(&mut *$tx).await?;
            for ((e, lead, send, payload), send_id) in decided.into_iter().zip(ids) {
                claimed.push(Claimed { send_id, enrollment: e, lead, send, payload });
            }
        }
        claimed
    }};
}

/// One `sends` row of a claim, for the JSON parameter of [`insert_sends!`].
#[derive(Serialize)]
struct SendInsert<'a> {
    id: i64,
    eid: i64,
    lead_id: i64,
    rep: &'a str,
    kind: &'a str,
    step: i64,
    template: &'a str,
    template_hash: Option<&'a str>,
    sequence_hash: Option<&'a str>,
    variant: Option<&'a str>,
    recipient: &'a str,
    recipient_domain: &'a str,
    message_id: &'a str,
    subject: &'a str,
    attempt: i64,
}

impl<'a> SendInsert<'a> {
    const COLS: &'static [(&'static str, Col)] = &[
        ("id", Col::Int),
        ("eid", Col::Int),
        ("lead_id", Col::Int),
        ("rep", Col::Text),
        ("kind", Col::Text),
        ("step", Col::Int),
        ("template", Col::Text),
        ("template_hash", Col::Text),
        ("sequence_hash", Col::Text),
        ("variant", Col::Text),
        ("recipient", Col::Text),
        ("recipient_domain", Col::Text),
        ("message_id", Col::Text),
        ("subject", Col::Text),
        ("attempt", Col::Int),
    ];

    fn new(id: i64, e: &'a EnrollmentRow, send: &'a NewSend) -> Self {
        SendInsert {
            id,
            eid: e.id,
            lead_id: e.lead_id,
            rep: &e.rep,
            kind: send.kind,
            step: send.step,
            template: &send.template,
            template_hash: send.template_hash.as_deref(),
            sequence_hash: send.sequence_hash.as_deref(),
            variant: send.variant.as_deref(),
            recipient: &send.recipient,
            recipient_domain: &send.recipient_domain,
            message_id: &send.message_id,
            subject: &send.subject,
            attempt: e.attempts + 1,
        }
    }
}

/// Moves enrollments on after (possibly) delivered sends, `(enrollment id,
/// at, advance)`: two statements for the whole batch.
macro_rules! advance_enrollments {
    ($tx:expr, $pool:expr, $advances:expr) => {{
        let advances: &[(i64, i64, &Advance)] = $advances;
        if !advances.is_empty() {
            #[derive(Serialize)]
            struct Row<'a> {
                eid: i64,
                at: i64,
                to_state: &'static str,
                to_phase: &'static str,
                to_step: i64,
                to_touches: i64,
                to_due_at: Option<i64>,
                to_next_at: Option<i64>,
                refs: &'a str,
                subj: Option<&'a str>,
                ended: i64,
            }
            let rows: Vec<Row> = advances
                .iter()
                .map(|&(eid, at, a)| Row {
                    eid,
                    at,
                    to_state: a.state.as_str(),
                    to_phase: a.phase,
                    to_step: a.step,
                    to_touches: a.touches,
                    to_due_at: a.due_at,
                    to_next_at: a.next_at,
                    refs: &a.thread_refs,
                    subj: a.thread_subject.as_deref(),
                    ended: i64::from(!a.state.is_live()),
                })
                .collect();
            let rows = Rows::new(
                $pool,
                &[
                    ("eid", Col::Int),
                    ("at", Col::Int),
                    ("to_state", Col::Text),
                    ("to_phase", Col::Text),
                    ("to_step", Col::Int),
                    ("to_touches", Col::Int),
                    ("to_due_at", Col::Int),
                    ("to_next_at", Col::Int),
                    ("refs", Col::Text),
                    ("subj", Col::Text),
                    ("ended", Col::Int),
                ],
                &rows,
            );
            let v = rows.table();
            // Thread and touch count advance even when a reply stopped the
            // enrollment mid-send (the email went out); the rest only while
            // it is still active. One statement: one pass over the batch.
            let live = "enrollments.state = 'active'";
            let sql = format!(
                "UPDATE enrollments SET thread_refs = v.refs, touches = v.to_touches, last_sent_at = v.at, \
                 state = CASE WHEN {live} THEN v.to_state ELSE enrollments.state END, \
                 phase = CASE WHEN {live} THEN v.to_phase ELSE enrollments.phase END, \
                 step = CASE WHEN {live} THEN v.to_step ELSE enrollments.step END, \
                 due_at = CASE WHEN {live} THEN v.to_due_at ELSE enrollments.due_at END, \
                 next_at = CASE WHEN {live} THEN v.to_next_at ELSE enrollments.next_at END, \
                 thread_subject = CASE WHEN {live} THEN COALESCE(v.subj, enrollments.thread_subject) ELSE enrollments.thread_subject END, \
                 attempts = CASE WHEN {live} THEN 0 ELSE enrollments.attempts END, \
                 updated_at = CASE WHEN {live} THEN v.at ELSE enrollments.updated_at END, \
                 ended_at = CASE WHEN {live} AND v.ended = 1 THEN v.at ELSE enrollments.ended_at END, \
                 end_reason = CASE WHEN {live} AND v.ended = 1 THEN 'completed' ELSE enrollments.end_reason END \
                 FROM {v} WHERE enrollments.id = v.eid"
            );
            bind_rows!(sqlx::query(&sql), rows).execute(&mut *$tx).await?;
        }
    }};
}

/// A rep's claims of one day, counted up to a send id. A claim counts
/// only the rows after it (a primary-key range) instead of the whole day,
/// which grew with the day's volume: 17 ms a claim at 100,000 sends.
/// Rows are counted whatever their state, and the few that stopped
/// counting (`retry`, `failed`) are subtracted at each claim. Ids grow in
/// commit order among claims: SQLite has one writer, and PostgreSQL claims
/// reserve their ids under the claim lock.
#[derive(Clone, Debug)]
pub(crate) struct DayCount {
    since: i64,
    upto_id: i64,
    claimed: i64,
    last_claim_at: Option<i64>,
}

/// The [`RepUsage`] of a rep's day starting at `since`, read inside a
/// claim after the claim lock.
macro_rules! day_usage {
    ($store:expr, $tx:expr, $rep:expr, $since:expr) => {{
        let (rep, since): (&str, i64) = ($rep, $since);
        let cached = $store.day_counts.lock().expect("day counts").get(rep).filter(|c| c.since == since).cloned();
        // `rep || ''` and `claimed_at + 0` keep the planners off the
        // (rep, claimed_at) index, whose range is the whole day: the
        // primary key's range after `upto_id` is what is new.
        let (mut c, (n, upto, last)): (DayCount, (i64, Option<i64>, Option<i64>)) = match cached {
            Some(c) => {
                let new = sqlx::query_as(
                    "SELECT COUNT(*), MAX(id), MAX(claimed_at) FROM sends WHERE id > $1 AND rep || '' = $2 AND claimed_at + 0 >= $3",
                )
                .bind(c.upto_id)
                .bind(rep)
                .bind(since)
                .fetch_one(&mut *$tx)
                .await?;
                (c, new)
            }
            None => {
                // The day so far, and the last id it covers: every send, so
                // that the next claim's range starts after all of them even
                // when this rep has none today. One statement: one snapshot.
                let day = sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM sends WHERE rep = $1 AND claimed_at >= $2), (SELECT MAX(id) FROM sends), \
                     (SELECT MAX(claimed_at) FROM sends WHERE rep = $1)",
                )
                .bind(rep)
                .bind(since)
                .fetch_one(&mut *$tx)
                .await?;
                (DayCount { since, upto_id: 0, claimed: 0, last_claim_at: None }, day)
            }
        };
        c.claimed += n;
        c.upto_id = upto.unwrap_or(c.upto_id);
        c.last_claim_at = c.last_claim_at.max(last);
        let uncounted: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sends WHERE state IN ('retry', 'failed') AND claimed_at >= $1 AND rep || '' = $2")
                .bind(since)
                .bind(rep)
                .fetch_one(&mut *$tx)
                .await?;
        let usage = RepUsage { today: c.claimed - uncounted, last_claim_at: c.last_claim_at };
        $store.day_counts.lock().expect("day counts").insert(rep.to_string(), c);
        usage
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
            let mut tx = self.begin_write(pool).await?;
            // The claim lock is taken only once the first due page and its
            // leads are read: finding due rows needs no turn (other daemons
            // skip the rows this one has locked), counting the caps does.
            // Most of a claim is statements, so the shorter the turn the
            // more daemons' claims overlap.
            let mut lock = claim_lock(pool);
            // Sends decided on, written together at the end.
            let mut decided = Vec::new();
            let mut usage: HashMap<String, RepUsage> = HashMap::new();
            let mut domain_counts: HashMap<(String, String), i64> = HashMap::new();
            let mut full: HashSet<String> = HashSet::new();
            let (mut after_at, mut after_id) = (i64::MIN, i64::MIN);
            let mut scanned = 0;
            'outer: while decided.len() < limit && scanned < scan {
                let mut sql = format!(
                    "SELECT {ENROLLMENT_COLS} FROM enrollments WHERE state = 'active' AND next_at IS NOT NULL AND next_at <= $1 \
                     AND (next_at > $2 OR (next_at = $2 AND id > $3))"
                );
                if !full.is_empty() {
                    let reps: Vec<String> = full.iter().map(|r| format!("'{}'", r.replace('\'', "''"))).collect();
                    // Manual work is never held by a rep's send caps.
                    sql.push_str(&format!(" AND (rep NOT IN ({}) OR phase IN {})", reps.join(", "), super::tasks::TASK_PHASES));
                }
                let page = (limit - decided.len()).clamp(16, 512);
                sql.push_str(&format!(" ORDER BY next_at, id LIMIT {page}{}", skip_locked(pool)));
                let json: String = sqlx::query_scalar(&json_agg(pool, &sql, ENROLLMENT_COLS)).bind(now).bind(after_at).bind(after_id).fetch_one(&mut *tx).await?;
                let mut rows: Vec<EnrollmentRow> = from_json_rows(&json)?;
                if rows.is_empty() {
                    break;
                }
                // An aggregate's input order is not promised.
                rows.sort_unstable_by_key(|e| (e.next_at, e.id));
                let ids = Rows::keys(pool, Col::Int, rows.iter().map(|e| e.lead_id));
                let lsql = format!("SELECT {LEAD_COLS} FROM leads WHERE id IN (SELECT key FROM {})", ids.table());
                let lsql = json_agg(pool, &lsql, LEAD_COLS);
                let json: String = bind_rows!(sqlx::query_scalar(&lsql), ids).fetch_one(&mut *tx).await?;
                let leads: Vec<LeadRow> = from_json_rows(&json)?;
                let leads: HashMap<i64, LeadRow> = leads.into_iter().map(|l| (l.id, l)).collect();
                for e in rows {
                    scanned += 1;
                    after_at = e.next_at.unwrap_or(i64::MIN);
                    after_id = e.id;
                    if full.contains(&e.rep) && !super::tasks::is_task_phase(&e.phase) {
                        continue;
                    }
                    let Some(lead) = leads.get(&e.lead_id) else { continue };
                    // Every usage count below is read after the lock, so it
                    // includes every claim committed by another daemon.
                    if let Some(lock) = lock.take() {
                        sqlx::query(lock).execute(&mut *tx).await?;
                    }
                    if !usage.contains_key(&e.rep) {
                        let u = day_usage!(self, tx, &e.rep, policy.day_start(&e.rep));
                        usage.insert(e.rep.clone(), u);
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
                            let u = usage.get_mut(&e.rep).expect("usage loaded");
                            u.today += 1;
                            u.last_claim_at = Some(now);
                            *domain_counts.entry(key).or_default() += 1;
                            decided.push((e, lead.clone(), send, payload));
                            if decided.len() >= limit {
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
            let claimed = insert_sends!(tx, pool, &self.instance, now, decided);
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
    /// none are recorded. The sends, the enrollments they advance and the
    /// touchpoints are each written in one statement for the batch; the
    /// rarer outcomes (retry, failure, bounce) row by row.
    pub async fn ack_many(&self, acks: &[(i64, i64, &Ack)]) -> Result<Vec<bool>, StoreError> {
        #[derive(Serialize)]
        struct Finish<'a> {
            send_id: i64,
            to_state: &'static str,
            err: Option<&'a str>,
            at: i64,
        }
        let finishes: Vec<Finish> = acks
            .iter()
            .map(|&(now, send_id, ack)| {
                let (to_state, err) = match ack {
                    Ack::Sent { .. } => ("sent", None),
                    Ack::Unknown { error, .. } => ("send_unknown", Some(error.as_str())),
                    Ack::Retry { error, .. } => ("retry", Some(error.as_str())),
                    Ack::Failed { error } => ("failed", Some(error.as_str())),
                    Ack::Bounced { error } => ("bounced", Some(error.as_str())),
                };
                Finish { send_id, to_state, err, at: now }
            })
            .collect();
        dispatch!(self, pool => {
            // Bound before the write turn is taken.
            let finishes = Rows::new(pool, &[("send_id", Col::Int), ("to_state", Col::Text), ("err", Col::Text), ("at", Col::Int)], &finishes);
            let mut tx = self.begin_write(pool).await?;
            let sql = format!(
                "UPDATE sends SET state = v.to_state, error = v.err, finished_at = v.at \
                 FROM {} WHERE sends.id = v.send_id AND sends.state = 'sending' AND sends.claimed_by = {} \
                 RETURNING id, enrollment_id, lead_id, rep, step, message_id, subject, recipient",
                finishes.table(),
                finishes.param(1)
            );
            let moved: Vec<AckedSend> = bind_rows!(sqlx::query_as(&sql), finishes).bind(&self.instance).fetch_all(&mut *tx).await?;
            let moved: HashMap<i64, AckedSend> = moved.into_iter().map(|m| (m.id, m)).collect();
            let mut out = Vec::with_capacity(acks.len());
            let mut advances: Vec<(i64, i64, &Advance)> = Vec::new();
            let mut new_touches: Vec<(NewTouch, i64)> = Vec::new();
            for &(now, send_id, ack) in acks {
                let Some(AckedSend { enrollment_id, lead_id, rep, step, message_id, subject, recipient, .. }) = moved.get(&send_id) else {
                    out.push(false);
                    continue;
                };
                out.push(true);
                // A send of no enrollment (a digest) has nothing more to record.
                let (Some(eid), Some(lead_id)) = (*enrollment_id, *lead_id) else { continue };
                let sent = NewTouch {
                    lead_id,
                    enrollment_id: Some(eid),
                    at: now,
                    rep: Some(rep),
                    subject: subject.as_deref(),
                    message_id: Some(message_id),
                    step: step.map(|s| s + 1),
                    ..Default::default()
                };
                let touch = match ack {
                    Ack::Sent { touch: kind, advance } => {
                        advances.push((eid, now, advance));
                        NewTouch { kind: Some(*kind), ..sent }
                    }
                    Ack::Unknown { error, advance } => {
                        advances.push((eid, now, advance));
                        NewTouch { kind: Some(TouchKind::SendUnknown), detail: Some(error), ..sent }
                    }
                    Ack::Retry { next_at, attempts, .. } => {
                        sqlx::query("UPDATE enrollments SET next_at = $1, attempts = $2, updated_at = $3 WHERE id = $4 AND state = 'active'")
                            .bind(next_at).bind(attempts).bind(now).bind(eid).execute(&mut *tx).await?;
                        continue;
                    }
                    Ack::Failed { error } => {
                        sqlx::query("UPDATE enrollments SET state = 'paused', next_at = NULL, updated_at = $1 WHERE id = $2 AND state = 'active'")
                            .bind(now).bind(eid).execute(&mut *tx).await?;
                        NewTouch { kind: Some(TouchKind::SendFailed), detail: Some(error), ..sent }
                    }
                    Ack::Bounced { error } => {
                        sqlx::query("UPDATE enrollments SET state = 'bounced', next_at = NULL, updated_at = $1, ended_at = $1, end_reason = 'bounce' WHERE id = $2 AND state IN ('active', 'paused')")
                            .bind(now).bind(eid).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO suppressions (pattern, reason, created_at) VALUES ($1, 'bounce', $2) ON CONFLICT (pattern) DO NOTHING")
                            .bind(recipient).bind(now).execute(&mut *tx).await?;
                        NewTouch { kind: Some(TouchKind::Bounce), detail: Some(error), ..sent }
                    }
                };
                new_touches.push((touch, now));
            }
            advance_enrollments!(tx, pool, &advances);
            touches!(tx, pool, &new_touches);
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
            let mut tx = self.begin_write(pool).await?;
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

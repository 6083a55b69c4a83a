//! The reads behind the pipeline report, and the writes of the hygiene job
//! (stale flags, cron fires, the digest's outbox row).
//!
//! The report's figures are aggregates computed by the database (counts
//! and sums grouped by stage, step and rep), so building it costs a handful
//! of queries whatever the size of the pipeline; only the lists a red flag
//! shows are fetched row by row, and those are capped by the caller.

use super::leads::{touch, NewTouch};
use super::{dispatch, Store, StoreError};
use crate::domain::TouchKind;

/// Sends that left (or may have left) the building: what "sent" counts.
const DELIVERED: &str = "('sent', 'bounced', 'send_unknown')";

/// Leads and value of one stage and status.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StageCount {
    pub stage: String,
    pub status: String,
    pub leads: i64,
    pub value: Option<f64>,
}

/// Emails sent by one sequence step (`kind` is `step` or `last_chance`;
/// `step` is the 0-based index).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StepSendCount {
    pub sequence: String,
    pub kind: String,
    pub step: Option<i64>,
    pub sent: i64,
}

/// Sends of one step that drew a response of `touch` kind (reply,
/// auto_reply, bounce, unsubscribe): each response is attributed to the
/// latest email sent to the lead before it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StepResponseCount {
    pub sequence: String,
    pub kind: String,
    pub step: Option<i64>,
    pub touch: String,
    pub sends: i64,
}

/// An active enrollment whose next action is late.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OverdueRow {
    pub enrollment_id: i64,
    pub email: String,
    pub sequence: String,
    pub rep: String,
    pub phase: String,
    pub step: i64,
    pub due_at: Option<i64>,
    pub next_at: Option<i64>,
    pub attempts: i64,
}

/// A lead nobody has touched or moved for a while.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StaleRow {
    pub email: String,
    pub stage: String,
    pub owner: Option<String>,
    pub last_touch_at: Option<i64>,
    pub stage_changed_at: i64,
}

/// An enrollment that used up its cadence without a reply.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CadenceLimitRow {
    pub email: String,
    pub sequence: String,
    pub state: String,
    pub phase: String,
}

/// A send whose outcome is unknown (interrupted mid-SMTP).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UnknownSendRow {
    pub email: Option<String>,
    pub recipient: String,
    pub rep: String,
    pub kind: String,
    pub step: Option<i64>,
    pub claimed_at: i64,
}

/// A rep's sends and bounces over a period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RepBounces {
    pub rep: String,
    pub sends: i64,
    pub bounces: i64,
}

/// A count per rep.
type PerRep = (String, i64);

/// A page of a red flag's rows and how many there are in all.
#[derive(Clone, Debug)]
pub struct Listed<T> {
    pub total: i64,
    pub rows: Vec<T>,
}

/// A lead never touched counts as touched at 0, in the form the index
/// `leads_unflagged_touch` is built on (migration 0004).
const STALE_WHERE: &str =
    "status = 'active' AND stage NOT IN ('won', 'lost') AND stage_changed_at < $1 AND COALESCE(last_touch_at, 0) < $1";
const OVERDUE_WHERE: &str = "e.state = 'active' AND e.next_at IS NOT NULL \
     AND (e.next_at < $1 OR (e.attempts > 0 AND e.due_at IS NOT NULL AND e.due_at < $1))";
const LIMIT_WHERE: &str = "(e.state IN ('active', 'paused') AND e.phase IN ('last_chance', 'archive')) OR e.state = 'archived'";

impl Store {
    /// Leads and total value per stage and status.
    pub async fn stage_counts(&self) -> Result<Vec<StageCount>, StoreError> {
        let sql = "SELECT stage, status, COUNT(*) AS leads, SUM(value) AS value FROM leads GROUP BY stage, status ORDER BY stage, status";
        Ok(dispatch!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Emails sent per sequence step.
    pub async fn step_send_counts(&self) -> Result<Vec<StepSendCount>, StoreError> {
        let sql = format!(
            "SELECT e.sequence AS sequence, s.kind AS kind, s.step AS step, COUNT(*) AS sent \
             FROM sends s JOIN enrollments e ON e.id = s.enrollment_id \
             WHERE s.kind <> 'digest' AND s.state IN {DELIVERED} \
             GROUP BY e.sequence, s.kind, s.step"
        );
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
    }

    /// Responses per sequence step: each reply, auto-reply, bounce or
    /// unsubscribe goes to the latest email sent to that lead (in the
    /// touchpoint's enrollment, when it has one) at or before it. A send
    /// counts once per kind however many responses of that kind it drew.
    pub async fn step_response_counts(&self) -> Result<Vec<StepResponseCount>, StoreError> {
        let sql = format!(
            "SELECT e.sequence AS sequence, s.kind AS kind, s.step AS step, t.kind AS touch, COUNT(DISTINCT s.id) AS sends \
             FROM touchpoints t \
             JOIN sends s ON s.id = ( \
                 SELECT s2.id FROM sends s2 \
                 WHERE s2.lead_id = t.lead_id AND s2.kind <> 'digest' AND s2.state IN {DELIVERED} AND s2.claimed_at <= t.at \
                   AND (t.enrollment_id IS NULL OR s2.enrollment_id = t.enrollment_id) \
                 ORDER BY s2.claimed_at DESC, s2.id DESC LIMIT 1) \
             JOIN enrollments e ON e.id = s.enrollment_id \
             WHERE t.kind IN ('reply', 'auto_reply', 'bounce', 'unsubscribe') \
             GROUP BY e.sequence, s.kind, s.step, t.kind"
        );
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
    }

    /// Milliseconds from enrollment to the first email, per enrollment that
    /// got one.
    pub async fn first_email_delays(&self) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT MIN(t.at) - e.enrolled_at FROM enrollments e JOIN touchpoints t ON t.enrollment_id = e.id \
                   WHERE t.kind = 'email_sent' GROUP BY e.id, e.enrolled_at";
        Ok(dispatch!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await?))
    }

    /// Active enrollments whose next action was due before `cutoff` and has
    /// not happened, or that keep failing on a step due before `cutoff`;
    /// oldest first.
    pub async fn overdue_enrollments(&self, cutoff: i64, limit: i64) -> Result<Listed<OverdueRow>, StoreError> {
        let count = format!("SELECT COUNT(*) FROM enrollments e WHERE {OVERDUE_WHERE}");
        let list = format!(
            "SELECT e.id AS enrollment_id, l.email AS email, e.sequence AS sequence, e.rep AS rep, e.phase AS phase, e.step AS step, \
             e.due_at AS due_at, e.next_at AS next_at, e.attempts AS attempts \
             FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE {OVERDUE_WHERE} \
             ORDER BY COALESCE(e.due_at, e.next_at), e.id LIMIT {limit}"
        );
        Ok(dispatch!(self, pool => Listed {
            total: sqlx::query_scalar(&count).bind(cutoff).fetch_one(pool).await?,
            rows: sqlx::query_as(&list).bind(cutoff).fetch_all(pool).await?,
        }))
    }

    /// Active leads in open stages with no touch and no stage change since
    /// `cutoff`; longest untouched first.
    pub async fn stale_leads(&self, cutoff: i64, limit: i64) -> Result<Listed<StaleRow>, StoreError> {
        let count = format!("SELECT COUNT(*) FROM leads WHERE {STALE_WHERE}");
        let list = format!(
            "SELECT email, stage, owner, last_touch_at, stage_changed_at FROM leads WHERE {STALE_WHERE} \
             ORDER BY COALESCE(last_touch_at, stage_changed_at), id LIMIT {limit}"
        );
        Ok(dispatch!(self, pool => Listed {
            total: sqlx::query_scalar(&count).bind(cutoff).fetch_one(pool).await?,
            rows: sqlx::query_as(&list).bind(cutoff).fetch_all(pool).await?,
        }))
    }

    /// Enrollments that reached the cadence limit with no reply: waiting
    /// for the last chance, waiting for the archive after it, or archived.
    pub async fn cadence_limit_enrollments(&self, limit: i64) -> Result<Listed<CadenceLimitRow>, StoreError> {
        let count = format!("SELECT COUNT(*) FROM enrollments e WHERE {LIMIT_WHERE}");
        let list = format!(
            "SELECT l.email AS email, e.sequence AS sequence, e.state AS state, e.phase AS phase \
             FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE {LIMIT_WHERE} \
             ORDER BY CASE WHEN e.state = 'archived' THEN 1 ELSE 0 END, e.updated_at DESC, e.id DESC LIMIT {limit}"
        );
        Ok(dispatch!(self, pool => Listed {
            total: sqlx::query_scalar(&count).fetch_one(pool).await?,
            rows: sqlx::query_as(&list).fetch_all(pool).await?,
        }))
    }

    /// Sends whose outcome is unknown; newest first.
    pub async fn unknown_sends(&self, limit: i64) -> Result<Listed<UnknownSendRow>, StoreError> {
        let count = "SELECT COUNT(*) FROM sends WHERE state = 'send_unknown'";
        let list = format!(
            "SELECT l.email AS email, s.recipient AS recipient, s.rep AS rep, s.kind AS kind, s.step AS step, s.claimed_at AS claimed_at \
             FROM sends s LEFT JOIN leads l ON l.id = s.lead_id WHERE s.state = 'send_unknown' \
             ORDER BY s.claimed_at DESC, s.id DESC LIMIT {limit}"
        );
        Ok(dispatch!(self, pool => Listed {
            total: sqlx::query_scalar(count).fetch_one(pool).await?,
            rows: sqlx::query_as(&list).fetch_all(pool).await?,
        }))
    }

    /// [`Store::rep_bounces`], but empty when nobody bounced since `since`:
    /// the engine asks before every pass, and a day of sends need only be
    /// counted when there is a bounce to weigh against it.
    pub async fn rep_bounces_if_any(&self, since: i64) -> Result<Vec<RepBounces>, StoreError> {
        let sql = "SELECT 1 FROM touchpoints WHERE kind = 'bounce' AND at >= $1 AND rep IS NOT NULL LIMIT 1";
        let any: Option<i32> = dispatch!(self, pool => sqlx::query_scalar(sql).bind(since).fetch_optional(pool).await?);
        if any.is_none() {
            return Ok(Vec::new());
        }
        self.rep_bounces(since).await
    }

    /// Per rep: emails sent since `since` (digests excluded) and bounces
    /// recorded since then (synchronous refusals and bounce reports alike).
    pub async fn rep_bounces(&self, since: i64) -> Result<Vec<RepBounces>, StoreError> {
        let sends_sql =
            format!("SELECT rep, COUNT(*) FROM sends WHERE claimed_at >= $1 AND kind <> 'digest' AND state IN {DELIVERED} GROUP BY rep");
        let bounce_sql = "SELECT rep, COUNT(*) FROM touchpoints WHERE kind = 'bounce' AND at >= $1 AND rep IS NOT NULL GROUP BY rep";
        let (sends, bounces): (Vec<PerRep>, Vec<PerRep>) = dispatch!(self, pool => (
            sqlx::query_as(&sends_sql).bind(since).fetch_all(pool).await?,
            sqlx::query_as(bounce_sql).bind(since).fetch_all(pool).await?,
        ));
        let mut out: Vec<RepBounces> = sends.into_iter().map(|(rep, sends)| RepBounces { rep, sends, bounces: 0 }).collect();
        for (rep, n) in bounces {
            match out.iter_mut().find(|r| r.rep == rep) {
                Some(r) => r.bounces = n,
                None => out.push(RepBounces { rep, sends: 0, bounces: n }),
            }
        }
        out.sort_by(|a, b| a.rep.cmp(&b.rep));
        Ok(out)
    }

    /// Flags the leads that became stale (see [`Store::stale_leads`]) and
    /// are not flagged yet, with one `stale` touchpoint each; returns their
    /// addresses. A later touch or stage change clears the flag.
    pub async fn flag_stale(&self, now: i64, cutoff: i64, detail: &str) -> Result<(u64, Vec<String>), StoreError> {
        // A page per transaction: a million stale leads (a first start on an
        // old database) never hold the write lock, or memory, all at once.
        // Longest untouched first, in the order of the partial index on the
        // unflagged leads' last touch: the search reads only the leads
        // touched before the cutoff (ordered by id it read every lead: 0.2
        // to 2 s per run with a million, the most of a `tick` then).
        const PAGE: usize = 1000;
        const LISTED: usize = 100;
        let sql = format!(
            "UPDATE leads SET stale = 1 WHERE id IN (SELECT id FROM leads WHERE stale = 0 AND {STALE_WHERE} \
             ORDER BY COALESCE(last_touch_at, 0), id LIMIT {PAGE}) \
             RETURNING id, email, owner"
        );
        let (mut count, mut listed) = (0u64, Vec::new());
        loop {
            let page: Vec<(i64, String, Option<String>)> = dispatch!(self, pool => {
                let mut tx = self.begin_write(pool).await?;
                let flagged: Vec<(i64, String, Option<String>)> = sqlx::query_as(&sql).bind(cutoff).fetch_all(&mut *tx).await?;
                for (lead_id, _, owner) in &flagged {
                    touch!(tx, NewTouch { lead_id: *lead_id, kind: Some(TouchKind::Stale), at: now, rep: owner.as_deref(), detail: Some(detail), ..Default::default() }, now);
                }
                tx.commit().await?;
                flagged
            });
            count += page.len() as u64;
            let last = page.len() < PAGE;
            listed.extend(page.into_iter().map(|(_, email, _)| email).take(LISTED.saturating_sub(listed.len())));
            if last {
                break;
            }
        }
        listed.sort();
        Ok((count, listed))
    }

    /// Claims one fire of a cron job for this instance. True exactly once
    /// per `(job, fire_at)`, across restarts and instances.
    ///
    /// The daemon asks after every pass; a fire this process has already
    /// asked about is answered from memory, so the database sees one write
    /// per fire rather than one per pass (on SQLite each such write waited
    /// for the write lock, holding up the daemon's loop behind the sends).
    pub async fn claim_cron_fire(&self, job: &str, fire_at: i64, now: i64) -> Result<bool, StoreError> {
        if self.cron_asked.lock().expect("cron fires").get(job) == Some(&fire_at) {
            return Ok(false);
        }
        let sql =
            "INSERT INTO cron_fires (job, fire_at, claimed_by, claimed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (job, fire_at) DO NOTHING";
        let n = dispatch!(self, pool => sqlx::query(sql).bind(job).bind(fire_at).bind(&self.instance).bind(now).execute(pool).await?.rows_affected());
        self.cron_asked.lock().expect("cron fires").insert(job.to_string(), fire_at);
        Ok(n == 1)
    }

    /// Marks a claimed fire as carried out.
    pub async fn finish_cron_fire(&self, job: &str, fire_at: i64, now: i64) -> Result<(), StoreError> {
        let sql = "UPDATE cron_fires SET done_at = $1 WHERE job = $2 AND fire_at = $3";
        dispatch!(self, pool => { sqlx::query(sql).bind(now).bind(job).bind(fire_at).execute(pool).await?; });
        Ok(())
    }

    /// The latest claimed fire of a job: `(fire_at, claimed_at, done_at)`.
    pub async fn last_cron_fire(&self, job: &str) -> Result<Option<(i64, i64, Option<i64>)>, StoreError> {
        let sql = "SELECT fire_at, claimed_at, done_at FROM cron_fires WHERE job = $1 ORDER BY fire_at DESC LIMIT 1";
        Ok(dispatch!(self, pool => sqlx::query_as(sql).bind(job).fetch_optional(pool).await?))
    }

    /// Records an internal email (the digest, a rep's agenda: `template`)
    /// once its outcome is known (`sent`, `failed` or `send_unknown`), as
    /// kind `digest` so no lead figure counts it. The fire's claim is what
    /// keeps it from going out twice; the row is the outbox's record of it.
    /// It is written after the send, never left `sending`, because it has no
    /// enrollment for the engine's crash recovery to move on.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_internal_send(
        &self,
        template: &str,
        rep: &str,
        recipient: &str,
        message_id: &str,
        subject: &str,
        state: &str,
        error: Option<&str>,
        claimed_at: i64,
        finished_at: i64,
    ) -> Result<i64, StoreError> {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        let sql = "INSERT INTO sends (enrollment_id, lead_id, rep, kind, template, recipient, recipient_domain, message_id, subject, state, attempt, claimed_by, claimed_at, finished_at, error) \
                   VALUES (NULL, NULL, $1, 'digest', $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11) RETURNING id";
        Ok(dispatch!(self, pool => sqlx::query_scalar(sql)
            .bind(rep).bind(template).bind(recipient).bind(domain).bind(message_id).bind(subject).bind(state).bind(&self.instance)
            .bind(claimed_at).bind(finished_at).bind(error)
            .fetch_one(pool).await?))
    }
}

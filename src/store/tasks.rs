//! Tasks (the manual steps of a sequence) and the reads behind a rep's
//! agenda and the report's task and variant figures.
//!
//! A task step is a phase of its enrollment, not a job of its own: when the
//! step falls due the claim creates the `tasks` row and parks the
//! enrollment in phase `task` with `next_at` at the timeout, so the engine
//! finds a task to time out through the same due index as an email to send.
//! Closing a task (done, skipped, timed out) and moving the enrollment on
//! happen in one transaction that locks the enrollment first, the same
//! order the claim takes, so a rep's "done" and the timeout cannot both win.

use serde::Serialize;

use super::leads::{touch, NewTouch};
use super::{dispatch, Advance, Store, StoreError};
use crate::domain::TouchKind;

/// Phases whose work is a rep's, not an email: no send cap holds them.
pub(crate) fn is_task_phase(phase: &str) -> bool {
    phase == "task_due" || phase == "task"
}

/// The SQL form of [`is_task_phase`].
pub(crate) const TASK_PHASES: &str = "('task_due', 'task')";

/// Open tasks of enrollments that ended (a reply, an unsubscribe, a
/// colleague's reply...) are cancelled: the rep has nothing to do there.
/// Written from the open tasks (few, indexed) to their enrollments: as
/// `enrollment_id IN (ended enrollments)`, SQLite listed every ended
/// enrollment each time (2.6 ms at 10,000; run once per inbox batch).
pub(crate) const CANCEL_DEAD_TASKS: &str = "UPDATE tasks SET state = 'cancelled', finished_at = $1 \
     WHERE state = 'open' AND EXISTS (SELECT 1 FROM enrollments e WHERE e.id = tasks.enrollment_id AND e.state NOT IN ('active', 'paused'))";

/// The task a due task step creates (decided by the engine).
#[derive(Clone, Debug)]
pub struct NewTask {
    pub step: i64,
    /// `call`, `linkedin` or `custom`.
    pub kind: String,
    /// The rendered instructions.
    pub instructions: String,
    pub due_at: i64,
    pub timeout_at: Option<i64>,
}

/// Where a task ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEnd {
    Done,
    Skipped,
    TimedOut,
}

impl TaskEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEnd::Done => "done",
            TaskEnd::Skipped => "skipped",
            TaskEnd::TimedOut => "timed_out",
        }
    }
}

/// Creates a task for a claimed enrollment and parks the enrollment on it
/// (inside the claim's transaction).
macro_rules! create_task {
    ($tx:expr, $e:expr, $t:expr, $now:expr) => {{
        let e: &$crate::store::EnrollmentRow = $e;
        let t: &$crate::store::NewTask = $t;
        sqlx::query(
            "INSERT INTO tasks (enrollment_id, lead_id, rep, step, kind, instructions, due_at, timeout_at, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9)",
        )
        .bind(e.id)
        .bind(e.lead_id)
        .bind(&e.rep)
        .bind(t.step)
        .bind(&t.kind)
        .bind(&t.instructions)
        .bind(t.due_at)
        .bind(t.timeout_at)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(
            "UPDATE enrollments SET phase = 'task', step = $1, due_at = $2, next_at = $2, attempts = 0, updated_at = $3 WHERE id = $4",
        )
        .bind(t.step)
        .bind(t.timeout_at)
        .bind($now)
        .bind(e.id)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use create_task;

/// Moves an enrollment on from its task (phase `task`): state, phase, step
/// and times from `advance`; the thread and touch count stay. A paused
/// enrollment moves on but stays paused (its resume reschedules it).
macro_rules! leave_task {
    ($tx:expr, $eid:expr, $now:expr, $a:expr) => {{
        let a: &$crate::store::Advance = $a;
        let ended = !a.state.is_live();
        sqlx::query(
            "UPDATE enrollments SET state = CASE WHEN $1 = 1 THEN $2 ELSE state END, phase = $3, step = $4, due_at = $5, \
             next_at = CASE WHEN state = 'active' AND $1 = 0 THEN $6 ELSE NULL END, updated_at = $7, \
             ended_at = CASE WHEN $1 = 1 THEN $7 ELSE ended_at END, end_reason = CASE WHEN $1 = 1 THEN 'completed' ELSE end_reason END \
             WHERE id = $8 AND state IN ('active', 'paused') AND phase = 'task'",
        )
        .bind(i64::from(ended))
        .bind(a.state.as_str())
        .bind(a.phase)
        .bind(a.step)
        .bind(a.due_at)
        .bind(a.next_at)
        .bind($now)
        .bind($eid)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
    }};
}

/// Times out the open task of a claimed enrollment and moves it on
/// (inside the claim's transaction).
macro_rules! timeout_task {
    ($tx:expr, $e:expr, $a:expr, $now:expr) => {{
        let e: &$crate::store::EnrollmentRow = $e;
        let closed: Option<(i64, String)> = sqlx::query_as(
            "UPDATE tasks SET state = 'timed_out', finished_at = $1 WHERE enrollment_id = $2 AND state = 'open' RETURNING id, kind",
        )
        .bind($now)
        .bind(e.id)
        .fetch_optional(&mut *$tx)
        .await?;
        $crate::store::tasks::leave_task!($tx, e.id, $now, $a);
        let detail = match &closed {
            Some((id, kind)) => format!("{kind} task {id} timed out"),
            None => "task timed out".to_string(),
        };
        $crate::store::leads::touch!(
            $tx,
            $crate::store::leads::NewTouch {
                lead_id: e.lead_id,
                enrollment_id: Some(e.id),
                kind: Some($crate::domain::TouchKind::TaskSkipped),
                at: $now,
                rep: Some(&e.rep),
                detail: Some(&detail),
                step: Some(e.step + 1),
                ..Default::default()
            },
            $now
        );
    }};
}
pub(crate) use leave_task;
pub(crate) use timeout_task;

/// How a task is closed by hand.
#[derive(Clone, Copy, Debug)]
pub struct TaskClose<'a> {
    pub end: TaskEnd,
    /// The rep's outcome note.
    pub note: Option<&'a str>,
    /// The touchpoint logged, with `detail`.
    pub touch: TouchKind,
    pub detail: &'a str,
    /// Where the enrollment goes, computed by the caller from it as it is.
    pub advance: &'a Advance,
}

/// A task with its lead, as listed.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub enrollment_id: i64,
    pub lead_id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub stage: String,
    pub rep: String,
    pub sequence: String,
    pub step: i64,
    pub kind: String,
    pub instructions: String,
    pub due_at: i64,
    pub timeout_at: Option<i64>,
    pub state: String,
    pub note: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

const TASK_COLS: &str = "t.id AS id, t.enrollment_id AS enrollment_id, t.lead_id AS lead_id, l.email AS email, l.first_name AS first_name, \
     l.last_name AS last_name, l.company AS company, l.stage AS stage, t.rep AS rep, e.sequence AS sequence, t.step AS step, t.kind AS kind, \
     t.instructions AS instructions, t.due_at AS due_at, t.timeout_at AS timeout_at, t.state AS state, t.note AS note, \
     t.created_at AS created_at, t.finished_at AS finished_at";
const TASK_FROM: &str = "FROM tasks t JOIN leads l ON l.id = t.lead_id JOIN enrollments e ON e.id = t.enrollment_id";

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub rep: Option<String>,
    /// Only open tasks due before this time.
    pub due_before: Option<i64>,
}

/// A reply with no answering touch yet.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct AwaitingReply {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub stage: String,
    pub at: i64,
    pub detail: Option<String>,
}

/// A lead in the last stage nobody has touched lately.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct QuietLead {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub value: Option<f64>,
    pub last_touch_at: Option<i64>,
    pub stage_changed_at: i64,
}

/// How the tasks of one step ended (or stand), for the report.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TaskStepCount {
    pub sequence: String,
    pub step: i64,
    pub state: String,
    pub tasks: i64,
}

/// Open tasks past the threshold, per rep.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OverdueTasks {
    pub rep: String,
    pub tasks: i64,
    pub oldest_due_at: i64,
}

/// Sends and replies of one variant of one step.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VariantCount {
    pub sequence: String,
    pub step: i64,
    pub variant: String,
    pub sent: i64,
    pub replied: i64,
}

/// Answers to a reply: a person did something for the lead.
const ANSWERS: &str = "('email_sent', 'call', 'meeting', 'note', 'task_done')";
/// Sends that left (or may have left): what "sent" counts.
const DELIVERED: &str = "('sent', 'bounced', 'send_unknown')";

impl Store {
    pub async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        let sql = format!("SELECT {TASK_COLS} {TASK_FROM} WHERE t.id = $1");
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    /// Open tasks, oldest due first.
    pub async fn open_tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRow>, StoreError> {
        let mut sql = format!("SELECT {TASK_COLS} {TASK_FROM} WHERE t.state = 'open' AND t.due_at < $1");
        if f.rep.is_some() {
            sql.push_str(" AND t.rep = $2");
        }
        sql.push_str(" ORDER BY t.due_at, t.id");
        let before = f.due_before.unwrap_or(i64::MAX);
        Ok(dispatch!(self, pool => {
            let mut q = sqlx::query_as(&sql).bind(before);
            if let Some(r) = &f.rep {
                q = q.bind(r);
            }
            q.fetch_all(pool).await?
        }))
    }

    /// Closes an open task by hand and moves its enrollment on, logging
    /// the touchpoint. False when the task was no longer open.
    pub async fn finish_task(&self, now: i64, task_id: i64, c: &TaskClose<'_>) -> Result<bool, StoreError> {
        let TaskClose { end, note, touch: touch_kind, detail, advance } = *c;
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            // The enrollment first (it is what the claim locks first).
            let owner: Option<(i64, i64, String, i64)> = sqlx::query_as(
                "UPDATE enrollments SET updated_at = $1 WHERE id = (SELECT enrollment_id FROM tasks WHERE id = $2) RETURNING id, lead_id, rep, step",
            )
            .bind(now).bind(task_id).fetch_optional(&mut *tx).await?;
            let Some((eid, lead_id, rep, step)) = owner else { return Ok(false) };
            let closed = sqlx::query("UPDATE tasks SET state = $1, note = $2, finished_at = $3 WHERE id = $4 AND state = 'open'")
                .bind(end.as_str()).bind(note).bind(now).bind(task_id)
                .execute(&mut *tx).await?.rows_affected();
            if closed == 0 {
                return Ok(false);
            }
            leave_task!(tx, eid, now, advance);
            touch!(tx, NewTouch { lead_id, enrollment_id: Some(eid), kind: Some(touch_kind), at: now, rep: Some(&rep), detail: Some(detail), step: Some(step + 1), ..Default::default() }, now);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A rep's leads whose latest reply (up to `until`) has no answering
    /// touch after it; oldest reply first.
    pub async fn replies_awaiting(&self, rep: &str, until: i64) -> Result<Vec<AwaitingReply>, StoreError> {
        let sql = format!(
            "SELECT l.email AS email, l.first_name AS first_name, l.last_name AS last_name, l.company AS company, l.stage AS stage, \
             r.at AS at, r.detail AS detail \
             FROM touchpoints r JOIN leads l ON l.id = r.lead_id \
             WHERE r.kind = 'reply' AND r.at < $1 AND l.owner = $2 AND l.status = 'active' AND l.stage NOT IN ('won', 'lost') \
               AND r.id = (SELECT r2.id FROM touchpoints r2 WHERE r2.lead_id = r.lead_id AND r2.kind = 'reply' AND r2.at < $1 ORDER BY r2.at DESC, r2.id DESC LIMIT 1) \
               AND NOT EXISTS (SELECT 1 FROM touchpoints a WHERE a.lead_id = r.lead_id AND a.kind IN {ANSWERS} AND a.at >= r.at) \
             ORDER BY r.at, l.id"
        );
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).bind(until).bind(rep).fetch_all(pool).await?))
    }

    /// A rep's active leads in `stage` with no touch and no stage change
    /// since `cutoff`; longest quiet first.
    pub async fn quiet_leads(&self, rep: &str, stage: &str, cutoff: i64) -> Result<Vec<QuietLead>, StoreError> {
        let sql = "SELECT email, first_name, last_name, company, value, last_touch_at, stage_changed_at FROM leads \
                   WHERE owner = $1 AND stage = $2 AND status = 'active' AND stage_changed_at < $3 AND (last_touch_at IS NULL OR last_touch_at < $3) \
                   ORDER BY COALESCE(last_touch_at, stage_changed_at), id";
        Ok(dispatch!(self, pool => sqlx::query_as(sql).bind(rep).bind(stage).bind(cutoff).fetch_all(pool).await?))
    }

    /// When a rep's active enrollments next email, for those due in
    /// `[from, to)` (tasks and archives are not emails).
    pub async fn emails_due(&self, rep: &str, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT next_at FROM enrollments WHERE state = 'active' AND rep = $1 AND phase IN ('step', 'last_chance') \
                   AND next_at IS NOT NULL AND next_at >= $2 AND next_at < $3 ORDER BY next_at";
        Ok(dispatch!(self, pool => sqlx::query_scalar(sql).bind(rep).bind(from).bind(to).fetch_all(pool).await?))
    }

    /// Emails of a rep's active enrollments already due before `before`
    /// and not yet sent (held by a cap or a closed window).
    pub async fn emails_waiting(&self, rep: &str, before: i64) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM enrollments WHERE state = 'active' AND rep = $1 AND phase IN ('step', 'last_chance') \
                   AND next_at IS NOT NULL AND next_at < $2";
        Ok(dispatch!(self, pool => sqlx::query_scalar(sql).bind(rep).bind(before).fetch_one(pool).await?))
    }

    /// Tasks per sequence step and state.
    pub async fn task_step_counts(&self) -> Result<Vec<TaskStepCount>, StoreError> {
        let sql = "SELECT e.sequence AS sequence, t.step AS step, t.state AS state, COUNT(*) AS tasks \
                   FROM tasks t JOIN enrollments e ON e.id = t.enrollment_id GROUP BY e.sequence, t.step, t.state";
        Ok(dispatch!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Open tasks due before `cutoff`, per rep, with the oldest due time.
    pub async fn overdue_tasks(&self, cutoff: i64) -> Result<Vec<OverdueTasks>, StoreError> {
        let sql = "SELECT rep, COUNT(*) AS tasks, MIN(due_at) AS oldest_due_at FROM tasks WHERE state = 'open' AND due_at < $1 GROUP BY rep ORDER BY rep";
        Ok(dispatch!(self, pool => sqlx::query_as(sql).bind(cutoff).fetch_all(pool).await?))
    }

    /// Per step variant: emails sent, and how many of them drew a reply
    /// (a reply goes to the latest email sent to the lead before it, as in
    /// the per-step figures).
    pub async fn variant_counts(&self) -> Result<Vec<VariantCount>, StoreError> {
        let sql = format!(
            "SELECT e.sequence AS sequence, s.step AS step, s.variant AS variant, COUNT(*) AS sent, \
             SUM(CASE WHEN EXISTS ( \
                 SELECT 1 FROM touchpoints t WHERE t.kind = 'reply' AND t.lead_id = s.lead_id AND s.id = ( \
                     SELECT s2.id FROM sends s2 WHERE s2.lead_id = t.lead_id AND s2.kind <> 'digest' AND s2.state IN {DELIVERED} \
                       AND s2.claimed_at <= t.at AND (t.enrollment_id IS NULL OR s2.enrollment_id = t.enrollment_id) \
                     ORDER BY s2.claimed_at DESC, s2.id DESC LIMIT 1) \
             ) THEN 1 ELSE 0 END) AS replied \
             FROM sends s JOIN enrollments e ON e.id = s.enrollment_id \
             WHERE s.variant IS NOT NULL AND s.kind = 'step' AND s.state IN {DELIVERED} \
             GROUP BY e.sequence, s.step, s.variant ORDER BY e.sequence, s.step, s.variant"
        );
        Ok(dispatch!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
    }
}

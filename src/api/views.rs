//! What the API answers with: the stored rows reshaped for clients (times in
//! RFC 3339, steps 1-based), matching `cadence show --json` and
//! `cadence leads --json`, and described in the OpenAPI document.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{rfc3339, EnrollmentRow, LeadDetail, LeadListRow, TouchpointRow};

/// One row of `GET /api/v1/leads`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeadSummary {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub value: Option<f64>,
    pub owner: Option<String>,
    pub stage: String,
    /// `active` or `archived`.
    pub status: String,
    /// Latest enrollment's sequence.
    pub sequence: Option<String>,
    /// Latest enrollment's state.
    pub state: Option<String>,
    /// 1-based step of the latest enrollment.
    pub step: Option<i64>,
    /// When the next email may go out (RFC 3339).
    pub next_at: Option<String>,
    pub last_touch_at: Option<String>,
}

impl From<LeadListRow> for LeadSummary {
    fn from(r: LeadListRow) -> Self {
        LeadSummary {
            email: r.email,
            first_name: r.first_name,
            last_name: r.last_name,
            company: r.company,
            value: r.value,
            owner: r.owner,
            stage: r.stage,
            status: r.status,
            sequence: r.sequence,
            state: r.state,
            step: r.step.map(|s| s + 1),
            next_at: r.next_at.map(rfc3339),
            last_touch_at: r.last_touch_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeadList {
    pub leads: Vec<LeadSummary>,
    pub count: usize,
}

/// `GET /api/v1/leads/{email}`: the lead, its enrollments and its full
/// touchpoint timeline (oldest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct LeadView {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub timezone: Option<String>,
    pub region: Option<String>,
    pub value: Option<f64>,
    pub fields: BTreeMap<String, String>,
    pub owner: Option<String>,
    pub stage: String,
    pub status: String,
    pub created_at: String,
    pub last_touch_at: Option<String>,
    pub enrollments: Vec<EnrollmentView>,
    pub touchpoints: Vec<TouchpointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentView {
    pub id: i64,
    pub sequence: String,
    pub rep: String,
    pub state: String,
    /// `step`, `last_chance` or `archive`: what happens next.
    pub phase: String,
    /// 1-based.
    pub step: i64,
    pub touches: i64,
    pub due_at: Option<String>,
    pub next_at: Option<String>,
    pub paused_until: Option<String>,
    pub enrolled_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    /// Message-IDs of the thread, oldest first.
    pub thread: Vec<String>,
}

impl From<&EnrollmentRow> for EnrollmentView {
    fn from(e: &EnrollmentRow) -> Self {
        EnrollmentView {
            id: e.id,
            sequence: e.sequence.clone(),
            rep: e.rep.clone(),
            state: e.state.clone(),
            phase: e.phase.clone(),
            step: e.step + 1,
            touches: e.touches,
            due_at: e.due_at.map(rfc3339),
            next_at: e.next_at.map(rfc3339),
            paused_until: e.paused_until.map(rfc3339),
            enrolled_at: rfc3339(e.enrolled_at),
            ended_at: e.ended_at.map(rfc3339),
            end_reason: e.end_reason.clone(),
            thread: e.refs(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TouchpointView {
    /// `email_sent`, `reply`, `note`, `stage_change`, `unsubscribe`...
    pub kind: String,
    pub at: String,
    pub rep: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub detail: Option<String>,
    pub step: Option<i64>,
}

impl From<&TouchpointRow> for TouchpointView {
    fn from(t: &TouchpointRow) -> Self {
        TouchpointView {
            kind: t.kind.clone(),
            at: rfc3339(t.at),
            rep: t.rep.clone(),
            subject: t.subject.clone(),
            message_id: t.message_id.clone(),
            detail: t.detail.clone(),
            step: t.step,
        }
    }
}

impl From<LeadDetail> for LeadView {
    fn from(d: LeadDetail) -> Self {
        let fields = d.lead.custom_fields();
        let l = d.lead;
        LeadView {
            email: l.email,
            first_name: l.first_name,
            last_name: l.last_name,
            company: l.company,
            title: l.title,
            timezone: l.timezone,
            region: l.region,
            value: l.value,
            fields,
            owner: l.owner,
            stage: l.stage,
            status: l.status,
            created_at: rfc3339(l.created_at),
            last_touch_at: l.last_touch_at.map(rfc3339),
            enrollments: d.enrollments.iter().map(EnrollmentView::from).collect(),
            touchpoints: d.touchpoints.iter().map(TouchpointView::from).collect(),
        }
    }
}

/// `201` answer of `POST /api/v1/enrollments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolledView {
    pub email: String,
    pub lead_id: i64,
    pub enrollment_id: i64,
    /// False when an existing lead was enrolled again (its fields updated).
    pub created_lead: bool,
    pub sequence: String,
    /// The lead's owner after enrollment.
    pub owner: Option<String>,
    /// When the first email may go out (RFC 3339).
    pub next_at: Option<String>,
}

/// Answer of pause, resume and stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlView {
    pub email: String,
    pub stage: String,
    /// The live or latest enrollment's state after the change.
    pub state: Option<String>,
    pub next_at: Option<String>,
    /// For a stage change: the stage before it (absent when unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_stage: Option<String>,
}

/// Answer of `POST .../notes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoteView {
    pub email: String,
    pub kind: String,
}

/// One stage of the pipeline report.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageCount {
    pub stage: String,
    pub leads: u64,
    /// Sum of the leads' deal values.
    pub value: f64,
}

/// `GET /api/v1/report`: leads and value per stage over the caller's leads,
/// and for the manager the whole pipeline report of DESIGN §6 (the same
/// document as `cadence report --json`), which covers every rep.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportView {
    pub generated_at: String,
    pub stages: Vec<StageCount>,
    pub total_leads: u64,
    pub total_value: f64,
    /// Manager token only: red flags, per-step figures, speed to lead.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub full: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
}

/// One task, as `cadence tasks --json` and `GET /api/v1/tasks` show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: i64,
    /// `call`, `linkedin` or `custom`.
    pub kind: String,
    /// `open`, `done`, `skipped`, `timed_out` or `cancelled`.
    pub state: String,
    pub rep: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub stage: String,
    pub sequence: String,
    /// 1-based step of the sequence.
    pub step: i64,
    /// The rendered instructions (a call script...).
    pub instructions: String,
    pub due_at: String,
    /// When it is skipped automatically (none: it waits).
    pub timeout_at: Option<String>,
    /// Open past `[report] overdue_after`.
    pub overdue: bool,
    pub note: Option<String>,
    pub finished_at: Option<String>,
}

impl TaskView {
    /// `overdue_cutoff`: open tasks due before it are overdue.
    pub fn new(t: crate::store::TaskRow, overdue_cutoff: i64) -> TaskView {
        TaskView {
            overdue: t.state == "open" && t.due_at < overdue_cutoff,
            id: t.id,
            kind: t.kind,
            state: t.state,
            rep: t.rep,
            email: t.email,
            first_name: t.first_name,
            last_name: t.last_name,
            company: t.company,
            stage: t.stage,
            sequence: t.sequence,
            step: t.step + 1,
            instructions: t.instructions,
            due_at: rfc3339(t.due_at),
            timeout_at: t.timeout_at.map(rfc3339),
            note: t.note,
            finished_at: t.finished_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    pub count: usize,
}

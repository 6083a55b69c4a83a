//! Rows as stored. Times are milliseconds since the epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::from_ms;
use crate::domain::EnrollmentState;

/// The columns of [`LeadRow`], for SELECTs.
pub(crate) const LEAD_COLS: &str = "id, email, domain, first_name, last_name, company, title, timezone, region, value, fields, owner, stage, status, stale, stage_changed_at, last_touch_at, created_at, updated_at";
/// The columns of [`EnrollmentRow`], for SELECTs.
pub(crate) const ENROLLMENT_COLS: &str = "id, lead_id, sequence, rep, state, phase, step, touches, due_at, next_at, paused_until, attempts, thread_subject, thread_refs, last_sent_at, enrolled_at, updated_at, ended_at, end_reason";

#[derive(Clone, Debug, sqlx::FromRow, Serialize, Deserialize)]
pub struct LeadRow {
    pub id: i64,
    pub email: String,
    pub domain: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub timezone: Option<String>,
    pub region: Option<String>,
    pub value: Option<f64>,
    /// JSON object.
    pub fields: String,
    pub owner: Option<String>,
    pub stage: String,
    pub status: String,
    pub stale: i64,
    pub stage_changed_at: i64,
    pub last_touch_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl LeadRow {
    pub fn custom_fields(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.fields).unwrap_or_default()
    }

    pub fn full_name(&self) -> String {
        [self.first_name.as_deref(), self.last_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ")
    }

    /// The lead's zone, or `default` when unset or no longer valid.
    pub fn tz(&self, default: chrono_tz::Tz) -> chrono_tz::Tz {
        zone_or(self.timezone.as_deref(), default)
    }

    pub fn is_archived(&self) -> bool {
        self.status == "archived"
    }
}

/// A lead's stored zone, or `default` when unset or no longer valid.
pub(crate) fn zone_or(timezone: Option<&str>, default: chrono_tz::Tz) -> chrono_tz::Tz {
    timezone.and_then(|t| t.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize, Deserialize)]
pub struct EnrollmentRow {
    pub id: i64,
    pub lead_id: i64,
    pub sequence: String,
    pub rep: String,
    pub state: String,
    pub phase: String,
    pub step: i64,
    pub touches: i64,
    pub due_at: Option<i64>,
    pub next_at: Option<i64>,
    pub paused_until: Option<i64>,
    pub attempts: i64,
    pub thread_subject: Option<String>,
    pub thread_refs: String,
    pub last_sent_at: Option<i64>,
    pub enrolled_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

impl EnrollmentRow {
    pub fn state(&self) -> EnrollmentState {
        EnrollmentState::parse(&self.state).unwrap_or(EnrollmentState::Failed)
    }

    pub fn phase(&self) -> Phase {
        Phase::parse(&self.phase)
    }

    /// Message-IDs of the thread, oldest first.
    pub fn refs(&self) -> Vec<String> {
        self.thread_refs.split_whitespace().map(str::to_string).collect()
    }
}

/// What an active enrollment does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Send step `step` of the sequence.
    Step,
    /// Step `step` is a task: create it for the rep when due (in the
    /// window). Kept apart from `Step` so the claim can tell manual work,
    /// which no send cap holds, from emails.
    TaskDue,
    /// The task of step `step` is open; `next_at` is its timeout.
    Task,
    /// Send the last-chance email.
    LastChance,
    /// Archive the lead (no email).
    Archive,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Step => "step",
            Phase::TaskDue => "task_due",
            Phase::Task => "task",
            Phase::LastChance => "last_chance",
            Phase::Archive => "archive",
        }
    }
    pub fn parse(s: &str) -> Phase {
        match s {
            "last_chance" => Phase::LastChance,
            "task_due" => Phase::TaskDue,
            "task" => Phase::Task,
            "archive" => Phase::Archive,
            _ => Phase::Step,
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct TouchpointRow {
    pub id: i64,
    pub lead_id: i64,
    pub enrollment_id: Option<i64>,
    pub kind: String,
    pub at: i64,
    pub rep: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub detail: Option<String>,
    pub step: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct SendRow {
    pub id: i64,
    pub enrollment_id: Option<i64>,
    pub lead_id: Option<i64>,
    pub rep: String,
    pub kind: String,
    pub step: Option<i64>,
    pub template: Option<String>,
    pub recipient: String,
    pub message_id: String,
    pub subject: Option<String>,
    pub state: String,
    pub attempt: i64,
    pub claimed_by: Option<String>,
    pub claimed_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// Formats stored milliseconds as RFC 3339 for JSON output.
pub fn rfc3339(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

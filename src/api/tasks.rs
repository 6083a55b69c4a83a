//! `/api/v1/tasks`: the manual steps waiting for a rep. A rep's token sees
//! and closes only that rep's tasks (another rep's answer 404, the same as
//! a task that does not exist); the manager's sees all.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::views::{TaskList, TaskView};
use super::ApiState;
use crate::ops::OpError;
use crate::store::TaskEnd;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Only this rep's tasks (the manager's token; a rep sees only its own anyway).
    pub rep: Option<String>,
    /// Only tasks open longer than `[report] overdue_after`.
    pub overdue: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoneRequest {
    /// The outcome, logged on the lead's timeline.
    pub note: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    description = "Open tasks, oldest due first; a rep's token lists only that rep's tasks.",
    params(TaskQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TaskList),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 422, description = "Unknown filter or rep", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    who: Principal,
    query: Result<Query<TaskQuery>, QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    let Query(q) = query?;
    let asked = q.rep.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let rep = match who.owner_filter() {
        // A rep asking for another rep's tasks sees none of them.
        Some(own) if asked.as_deref().is_some_and(|a| a != own) => return Ok(Json(TaskList { tasks: vec![], count: 0 })),
        Some(own) => Some(own.to_string()),
        None => asked,
    };
    let ctx = state.ctx();
    let cutoff = ctx.overdue_cutoff();
    let tasks: Vec<TaskView> = ctx
        .tasks(rep.as_deref(), q.overdue.unwrap_or(false))
        .await
        .map_err(|e| ApiError::from(e).with_field("rep"))?
        .into_iter()
        .map(|t| TaskView::new(t, cutoff))
        .collect();
    Ok(Json(TaskList { count: tasks.len(), tasks }))
}

async fn finish(state: &ApiState, who: &Principal, id: i64, end: TaskEnd, note: Option<&str>) -> Result<Json<TaskView>, ApiError> {
    let ctx = state.ctx();
    let task = ctx.finish_task(id, end, note, who.owner_filter()).await.map_err(|e| match e {
        OpError::Invalid(f) => ApiError::invalid("note", f.to_string()),
        e => ApiError::from(e),
    })?;
    // The next step may be due at once.
    state.engine.wake.notify_one();
    Ok(Json(TaskView::new(task, ctx.overdue_cutoff())))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/done",
    tag = "tasks",
    description = "The task is done: the sequence moves on, its next step's wait counting from now. A done call is logged as a `call` touchpoint (other kinds as `task_done`), with the note.",
    params(("id" = i64, Path, description = "The task's id")),
    request_body(content = Option<DoneRequest>, description = "Optional: `{note}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TaskView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such task (or another rep's)", body = ErrorBody),
        (status = 409, description = "The task is no longer open", body = ErrorBody),
        (status = 422, description = "Invalid note", body = ErrorBody),
    )
)]
pub async fn done(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<TaskView>, ApiError> {
    // The body is optional: none, or `{note}`.
    let req: DoneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DoneRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("note", format!("the body is not {{\"note\": \"...\"}}: {e}")))?
    };
    finish(&state, &who, id, TaskEnd::Done, req.note.as_deref()).await
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/skip",
    tag = "tasks",
    description = "Skip the task: the sequence moves on; logged as `task_skipped`.",
    params(("id" = i64, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TaskView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such task (or another rep's)", body = ErrorBody),
        (status = 409, description = "The task is no longer open", body = ErrorBody),
    )
)]
pub async fn skip(State(state): State<ApiState>, who: Principal, Path(id): Path<i64>) -> Result<Json<TaskView>, ApiError> {
    finish(&state, &who, id, TaskEnd::Skipped, None).await
}

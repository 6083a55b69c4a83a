//! `/api/v1`: enrollments, leads, manual control and the report.
//!
//! Handlers only translate: they check who may see the lead, turn the
//! request into the arguments of [`crate::ops::Ctx`] (the same calls the
//! CLI makes, so validation and refusals are identical) and shape the answer.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::error::{ApiError, ErrorBody, JsonBody};
use super::views::*;
use super::ApiState;
use crate::domain::{EnrollmentState, LeadInput, TouchKind, LEAD_COLUMNS};
use crate::store::{rfc3339, LeadFilter, LeadRow};

/// `POST /api/v1/enrollments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    pub email: String,
    /// A sequence name (file stem under `config/sequences/`).
    pub sequence: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    /// IANA name, e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    /// Picks the holiday calendar.
    pub region: Option<String>,
    /// Deal value (non-negative).
    pub value: Option<f64>,
    /// Custom fields for templates (`{{fields.KEY}}`).
    pub fields: Option<BTreeMap<String, String>>,
    /// The owning rep. A rep's token enrolls for that rep (this may be
    /// omitted or must name it); the manager's token must name one when
    /// several reps are configured.
    pub rep: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeadQuery {
    /// Only leads in this stage.
    pub stage: Option<String>,
    /// Only leads whose latest enrollment is in this sequence.
    pub sequence: Option<String>,
    /// Only leads whose latest enrollment is in this state (`active`, `paused`, `replied`...).
    pub state: Option<String>,
    /// Only this rep's leads (the manager's token; a rep sees only its own anyway).
    pub rep: Option<String>,
    /// Archived leads instead of open ones.
    pub archived: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    /// A pipeline stage, or `won` / `lost`.
    pub stage: String,
}

#[derive(Debug, Default, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum NoteKind {
    #[default]
    Note,
    Call,
    Meeting,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// `note` (default), `call` or `meeting`.
    #[serde(default)]
    pub kind: NoteKind,
    /// May span lines.
    pub text: String,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// The lead, if it exists and the caller may see it; otherwise the same 404
/// either way.
async fn visible_lead(state: &ApiState, who: &Principal, email: &str) -> Result<LeadRow, ApiError> {
    match state.engine.store.lead_by_email(email).await? {
        Some(lead) if who.may_see(lead.owner.as_deref()) => Ok(lead),
        _ => Err(ApiError::no_lead(email)),
    }
}

async fn control_view(state: &ApiState, email: &str, previous_stage: Option<String>) -> Result<ControlView, ApiError> {
    let lead = state.ctx().lead(email).await?;
    let e = state.engine.store.current_enrollment(lead.id).await?;
    Ok(ControlView {
        email: lead.email,
        stage: lead.stage,
        state: e.as_ref().map(|e| e.state.clone()),
        next_at: e.and_then(|e| e.next_at).map(rfc3339),
        previous_stage,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/enrollments",
    tag = "leads",
    description = "Create or update the lead and enroll it in a sequence.",
    request_body = EnrollmentRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Enrolled", body = EnrolledView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "Already enrolled, suppressed, or another rep's lead; nothing changed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid input; `field` names it", body = ErrorBody),
    )
)]
pub async fn enroll(
    State(state): State<ApiState>,
    who: Principal,
    JsonBody(req): JsonBody<EnrollmentRequest>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<EnrolledView>), ApiError> {
    let ctx = state.ctx();
    let value = req.value.map(|v| v.to_string());
    let mut pairs: Vec<(&str, &str)> = vec![("email", req.email.as_str())];
    for (k, v) in [
        ("first_name", &req.first_name),
        ("last_name", &req.last_name),
        ("company", &req.company),
        ("title", &req.title),
        ("timezone", &req.timezone),
        ("region", &req.region),
        ("value", &value),
    ] {
        if let Some(v) = v {
            pairs.push((k, v.as_str()));
        }
    }
    for (k, v) in req.fields.iter().flatten() {
        if LEAD_COLUMNS.contains(&k.trim()) {
            return Err(ApiError::invalid(
                format!("fields.{k}"),
                format!("`{k}` is a lead field: give it at the top level, not in `fields`"),
            ));
        }
        pairs.push((k.as_str(), v.as_str()));
    }
    let input = LeadInput::from_pairs(pairs)?;
    let Some(email) = input.email.clone() else {
        return Err(ApiError::invalid("email", "an email address is required"));
    };
    if ctx.cfg.sequence(&req.sequence).is_none() {
        let known = ctx.cfg.sequences.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(ApiError::invalid("sequence", format!("no sequence `{}` (known: {known})", req.sequence)));
    }
    let rep = match &who {
        Principal::Manager => non_empty(&req.rep),
        Principal::Rep(id) => {
            if non_empty(&req.rep).is_some_and(|r| &r != id) {
                return Err(ApiError::invalid("rep", "a rep's token enrolls for that rep only"));
            }
            Some(id.clone())
        }
    };
    if let Some(r) = &rep {
        if ctx.cfg.rep(r).is_none() {
            return Err(ApiError::invalid("rep", format!("no rep `{r}`")));
        }
    }
    if let Principal::Rep(id) = &who {
        // Enrolling with an explicit rep takes the lead over; a rep may not
        // take another rep's lead.
        if let Some(existing) = state.engine.store.lead_by_email(email.as_str()).await? {
            if existing.owner.as_deref().is_some_and(|o| o != id) {
                return Err(ApiError::refused(format!("{email} is another rep's lead")));
            }
        }
    }
    let enrolled = ctx.enroll(&input, &req.sequence, rep.as_deref()).await.map_err(|e| ApiError::from(e).with_field("rep"))?;
    // The daemon sends step 1 now instead of at its next tick.
    state.engine.wake.notify_one();
    let lead = ctx.lead(email.as_str()).await?;
    let location = format!("/api/v1/leads/{}", lead.email);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(EnrolledView {
            email: lead.email,
            lead_id: enrolled.lead_id,
            enrollment_id: enrolled.enrollment_id,
            created_lead: enrolled.created_lead,
            sequence: req.sequence,
            owner: lead.owner,
            next_at: enrolled.next_at.map(rfc3339),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/leads",
    tag = "leads",
    description = "Open leads (or archived ones), filtered; a rep's token lists only that rep's leads.",
    params(LeadQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LeadList),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 422, description = "Unknown filter or value", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    who: Principal,
    query: Result<Query<LeadQuery>, QueryRejection>,
) -> Result<Json<LeadList>, ApiError> {
    let Query(q) = query?;
    let cfg = state.engine.config();
    let stage = non_empty(&q.stage);
    if let Some(s) = &stage {
        if !cfg.is_stage(s) {
            return Err(ApiError::invalid("stage", format!("unknown stage `{s}` (stages: {}, won, lost)", cfg.stages.join(", "))));
        }
    }
    let st = non_empty(&q.state);
    if let Some(s) = &st {
        if EnrollmentState::parse(s).is_none() {
            let known = EnrollmentState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            return Err(ApiError::invalid("state", format!("unknown state `{s}` (states: {known})")));
        }
    }
    let asked = non_empty(&q.rep);
    let rep = match who.owner_filter() {
        // A rep asking for another rep's leads sees none of them.
        Some(own) if asked.as_deref().is_some_and(|a| a != own) => return Ok(Json(LeadList { leads: vec![], count: 0 })),
        Some(own) => Some(own.to_string()),
        None => asked,
    };
    let filter = LeadFilter { stage, sequence: non_empty(&q.sequence), rep, state: st, archived: q.archived.unwrap_or(false) };
    let leads: Vec<LeadSummary> = state.engine.store.list_leads(&filter).await?.into_iter().map(LeadSummary::from).collect();
    Ok(Json(LeadList { count: leads.len(), leads }))
}

#[utoipa::path(
    get,
    path = "/api/v1/leads/{email}",
    tag = "leads",
    description = "One lead with its enrollments and its full touchpoint timeline.",
    params(("email" = String, Path, description = "The lead's email address")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LeadView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such lead (or another rep's)", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<ApiState>, who: Principal, Path(email): Path<String>) -> Result<Json<LeadView>, ApiError> {
    match state.engine.store.lead_detail(&email).await? {
        Some(d) if who.may_see(d.lead.owner.as_deref()) => Ok(Json(LeadView::from(d))),
        _ => Err(ApiError::no_lead(&email)),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/leads/{email}/pause",
    tag = "control",
    description = "Pause the lead's active enrollment.",
    params(("email" = String, Path, description = "The lead's email address")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ControlView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such lead (or another rep's)", body = ErrorBody),
        (status = 409, description = "No active enrollment", body = ErrorBody),
    )
)]
pub async fn pause(State(state): State<ApiState>, who: Principal, Path(email): Path<String>) -> Result<Json<ControlView>, ApiError> {
    let lead = visible_lead(&state, &who, &email).await?;
    state.ctx().pause(&lead.email).await?;
    Ok(Json(control_view(&state, &lead.email, None).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/leads/{email}/resume",
    tag = "control",
    description = "Resume a paused enrollment; the next step is rescheduled like any other.",
    params(("email" = String, Path, description = "The lead's email address")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ControlView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such lead (or another rep's)", body = ErrorBody),
        (status = 409, description = "No paused enrollment", body = ErrorBody),
    )
)]
pub async fn resume(State(state): State<ApiState>, who: Principal, Path(email): Path<String>) -> Result<Json<ControlView>, ApiError> {
    let lead = visible_lead(&state, &who, &email).await?;
    state.ctx().resume(&lead.email).await?;
    state.engine.wake.notify_one();
    Ok(Json(control_view(&state, &lead.email, None).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/leads/{email}/stage",
    tag = "control",
    description = "Move the lead to a stage (or `won` / `lost`); logged as a touchpoint.",
    params(("email" = String, Path, description = "The lead's email address")),
    request_body = StageRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ControlView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such lead (or another rep's)", body = ErrorBody),
        (status = 422, description = "Unknown stage", body = ErrorBody),
    )
)]
pub async fn stage(
    State(state): State<ApiState>,
    who: Principal,
    Path(email): Path<String>,
    JsonBody(req): JsonBody<StageRequest>,
) -> Result<Json<ControlView>, ApiError> {
    let lead = visible_lead(&state, &who, &email).await?;
    let previous = state.ctx().stage(&lead.email, req.stage.trim()).await.map_err(|e| ApiError::from(e).with_field("stage"))?;
    Ok(Json(control_view(&state, &lead.email, previous).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/leads/{email}/notes",
    tag = "control",
    description = "Log a manual touchpoint: a note, a call or a meeting.",
    params(("email" = String, Path, description = "The lead's email address")),
    request_body = NoteRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = NoteView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such lead (or another rep's)", body = ErrorBody),
        (status = 422, description = "Invalid kind or text", body = ErrorBody),
    )
)]
pub async fn note(
    State(state): State<ApiState>,
    who: Principal,
    Path(email): Path<String>,
    JsonBody(req): JsonBody<NoteRequest>,
) -> Result<(StatusCode, Json<NoteView>), ApiError> {
    let lead = visible_lead(&state, &who, &email).await?;
    let kind = match req.kind {
        NoteKind::Note => TouchKind::Note,
        NoteKind::Call => TouchKind::Call,
        NoteKind::Meeting => TouchKind::Meeting,
    };
    if req.text.trim().is_empty() {
        return Err(ApiError::invalid("text", "the note is empty"));
    }
    state.ctx().note(&lead.email, kind, &req.text).await?;
    Ok((StatusCode::CREATED, Json(NoteView { email: lead.email, kind: kind.as_str().to_string() })))
}

#[utoipa::path(
    get,
    path = "/api/v1/report",
    tag = "report",
    description = "Pipeline report: leads and total value per stage (a rep's token counts that rep's leads); with the manager token also the full report (red flags, per-step figures, speed to lead) under `full`.",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReportView),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
pub async fn report(State(state): State<ApiState>, who: Principal) -> Result<Json<ReportView>, ApiError> {
    let cfg = state.engine.config();
    let filter = LeadFilter { rep: who.owner_filter().map(str::to_string), ..Default::default() };
    let rows = state.engine.store.list_leads(&filter).await?;
    let names = cfg.stages.iter().cloned().chain(["won".to_string(), "lost".to_string()]);
    let mut stages: Vec<StageCount> = names.map(|stage| StageCount { stage, leads: 0, value: 0.0 }).collect();
    for r in &rows {
        let i = match stages.iter().position(|s| s.stage == r.stage) {
            Some(i) => i,
            // A stage removed from the config still has its leads counted.
            None => {
                stages.push(StageCount { stage: r.stage.clone(), leads: 0, value: 0.0 });
                stages.len() - 1
            }
        };
        stages[i].leads += 1;
        stages[i].value += r.value.unwrap_or(0.0);
    }
    let full = match who.owner_filter() {
        None => Some(
            serde_json::to_value(crate::report::build(&cfg, &state.engine.store, state.engine.clock.now()).await?)
                .map_err(|e| ApiError::from(crate::store::StoreError::Data(e.to_string())))?,
        ),
        Some(_) => None,
    };
    Ok(Json(ReportView {
        full,
        generated_at: rfc3339(state.engine.clock.now_ms()),
        total_leads: rows.len() as u64,
        total_value: stages.iter().map(|s| s.value).sum(),
        stages,
    }))
}

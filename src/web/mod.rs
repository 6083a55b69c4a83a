//! The pipeline board served at `/` by `cadence run`: one column per stage
//! (plus won and lost) with its leads and their value, the report's red
//! flags, each lead's timeline, and moving a lead by dragging its card.
//!
//! Server-rendered HTML and one small vanilla script (`assets/board.js`,
//! compiled into the binary with `include_str!`): no front-end build, so
//! `cargo build` is the whole build. Moving, pausing and resuming call the
//! same [`crate::ops::Ctx`] operations as the CLI and the API, so a move
//! logs the same touchpoint as `cadence stage`.
//!
//! Live updates are short polling of [`Store::board_stamp`], a cheap
//! change stamp, every two seconds; the page fetches the columns again
//! only when it changes. Polling rather than server-sent events because
//! the engine has no change feed to subscribe to (the stamp covers changes
//! made by other processes too: `cadence tick`, a second daemon), and
//! because an open event stream would hold the daemon's graceful shutdown
//! until the browser went away.
//!
//! These routes are the board's own, not the public API: they are not in
//! the OpenAPI document and they authenticate by session cookie, not bearer
//! token (see [`session`]).
//!
//! [`Store::board_stamp`]: crate::store::Store::board_stamp

pub mod render;
pub mod session;

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::auth::{configured_tokens, identify, Principal};
use crate::api::error::{ApiError, JsonBody};
use crate::api::ApiState;
use crate::engine::explain::explain;
use crate::store::{BoardFilter, LeadRow};
use render::{Filters, Live, Page};
use session::{Checked, Session};

/// How many held cards one `/board/why` request explains at most.
pub const WHY_BATCH: usize = 50;

/// The board's routes, merged into the API router by [`crate::api::router`].
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/session", post(sign_in))
        .route("/session/end", post(sign_out))
        .route("/board/live", get(live))
        .route("/board/stamp", get(stamp))
        .route("/board/why", get(why))
        .route("/board/leads/{id}", get(timeline))
        .route("/board/leads/{id}/stage", post(move_stage))
        .route("/board/leads/{id}/pause", post(pause))
        .route("/board/leads/{id}/resume", post(resume))
        .route("/board/assets/board.js", get(script))
        .route("/board/assets/board.css", get(style))
        .route("/board/assets/favicon.svg", get(icon))
        .layer(axum::middleware::map_response(harden))
}

/// Headers every board response carries: no inline script or style, no
/// framing (clickjacking a drag), no caching of lead data.
async fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

/// `?rep=&sequence=&state=`; empty means all.
#[derive(Debug, Default, Deserialize)]
pub struct BoardQuery {
    pub rep: Option<String>,
    pub sequence: Option<String>,
    pub state: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl BoardQuery {
    /// A rep sees only its own leads, whatever it asks for.
    fn filters(self, who: &Principal) -> Filters {
        let rep = match who {
            Principal::Manager => non_empty(self.rep),
            Principal::Rep(id) => Some(id.clone()),
        };
        Filters { rep, sequence: non_empty(self.sequence), state: non_empty(self.state) }
    }
}

/// What the live part needs, read in one go. The stamp is read first: a
/// change landing while the cards are read makes the next poll refresh.
struct Snapshot {
    stamp: String,
    cards: Vec<crate::store::BoardCard>,
    flags: Vec<crate::report::Flag>,
    now: chrono::DateTime<chrono::Utc>,
}

async fn snapshot(state: &ApiState, f: &Filters) -> Result<Snapshot, ApiError> {
    let store = &state.engine.store;
    let stamp = store.board_stamp().await?;
    let filter = BoardFilter { rep: f.rep.clone(), sequence: f.sequence.clone(), state: f.state.clone() };
    let cards = store.board_cards(&filter).await?;
    let now = state.engine.clock.now();
    let flags = crate::report::build(&state.engine.config(), store, now).await?.flags;
    Ok(Snapshot { stamp, cards, flags, now })
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response()
}

/// A sign-in page with a fresh form nonce.
fn sign_in_page(state: &ApiState, headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let (nonce, csrf) = session::login_nonce(state.engine.secret());
    let mut r = html(status, render::sign_in(&csrf, error));
    r.headers_mut().append(header::SET_COOKIE, session::set_cookie(session::LOGIN_COOKIE, &nonce, session::behind_tls(headers)));
    r
}

/// `GET /`: the board, or the sign-in page.
async fn index(State(state): State<ApiState>, headers: HeaderMap, Query(q): Query<BoardQuery>) -> Result<Response, ApiError> {
    let Some(s) = Session::from_headers(&headers, &state) else {
        return Ok(sign_in_page(&state, &headers, StatusCode::OK, None));
    };
    let filters = q.filters(&s.who);
    let snap = snapshot(&state, &filters).await?;
    let cfg = state.engine.config();
    let csrf = s.csrf(state.engine.secret());
    let label = s.label();
    let page = Page {
        live: Live { cfg: &cfg, who: &s.who, now: snap.now, stamp: &snap.stamp, cards: &snap.cards, flags: &snap.flags },
        filters: &filters,
        csrf: &csrf,
        signed_in_as: &label,
    };
    Ok(html(StatusCode::OK, render::page(&page)))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
    csrf: String,
}

/// `POST /session`: the sign-in form.
async fn sign_in(State(state): State<ApiState>, headers: HeaderMap, Form(form): Form<SignInForm>) -> Response {
    if !session::same_origin(&headers) || !session::login_ok(&headers, state.engine.secret(), &form.csrf) {
        return sign_in_page(&state, &headers, StatusCode::FORBIDDEN, Some("The sign-in form expired. Please try again."));
    }
    let token = form.token.trim();
    let tokens = configured_tokens(&state.engine.config(), &*state.env);
    if token.is_empty() || identify(token, &tokens).is_none() {
        return sign_in_page(&state, &headers, StatusCode::UNAUTHORIZED, Some("That token is not a rep's or the manager's API token."));
    }
    let secure = session::behind_tls(&headers);
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, session::set_cookie(session::SESSION_COOKIE, &session::session_value(token), secure));
    h.append(header::SET_COOKIE, session::clear_cookie(session::LOGIN_COOKIE));
    r
}

#[derive(Debug, Deserialize)]
struct SignOutForm {
    csrf: String,
}

/// `POST /session/end`: the sign-out button (a plain form).
async fn sign_out(
    State(state): State<ApiState>,
    s: Session,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, ApiError> {
    if !session::same_origin(&headers) || !s.csrf_ok(state.engine.secret(), Some(&form.csrf)) {
        return Err(session::forbidden("missing or wrong CSRF token: reload the page"));
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    r.headers_mut().append(header::SET_COOKIE, session::clear_cookie(session::SESSION_COOKIE));
    Ok(r)
}

/// `GET /board/live`: the banner and columns, for the page to swap in.
async fn live(State(state): State<ApiState>, s: Session, Query(q): Query<BoardQuery>) -> Result<Response, ApiError> {
    let filters = q.filters(&s.who);
    let snap = snapshot(&state, &filters).await?;
    let cfg = state.engine.config();
    let l = Live { cfg: &cfg, who: &s.who, now: snap.now, stamp: &snap.stamp, cards: &snap.cards, flags: &snap.flags };
    Ok(html(StatusCode::OK, render::live(&l)))
}

#[derive(Serialize)]
struct StampView {
    stamp: String,
}

/// `GET /board/stamp`: polled every two seconds.
async fn stamp(State(state): State<ApiState>, _s: Session) -> Result<Json<StampView>, ApiError> {
    Ok(Json(StampView { stamp: state.engine.store.board_stamp().await? }))
}

/// The lead, if the caller may see it; the same 404 otherwise.
async fn visible(state: &ApiState, who: &Principal, id: i64) -> Result<LeadRow, ApiError> {
    match state.engine.store.lead_by_id(id).await? {
        Some(l) if who.may_see(l.owner.as_deref()) => Ok(l),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no lead {id}"))),
    }
}

#[derive(Debug, Deserialize)]
struct WhyQuery {
    /// Comma-separated lead ids.
    ids: String,
}

/// `GET /board/why?ids=1,2`: why each held card's email is not going out,
/// from `explain` (the engine's own rules). Leads the caller may not see
/// are left out.
async fn why(State(state): State<ApiState>, s: Session, Query(q): Query<WhyQuery>) -> Result<Json<BTreeMap<i64, String>>, ApiError> {
    let ctx = state.ctx();
    let mut out = BTreeMap::new();
    for id in q.ids.split(',').filter_map(|i| i.trim().parse::<i64>().ok()).take(WHY_BATCH) {
        let Ok(lead) = visible(&state, &s.who, id).await else { continue };
        let x = explain(&ctx, &lead.email).await?;
        out.insert(id, x.summary);
    }
    Ok(Json(out))
}

/// `GET /board/leads/{id}`: the lead's dialog (HTML fragment).
async fn timeline(State(state): State<ApiState>, s: Session, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let lead = visible(&state, &s.who, id).await?;
    let Some(detail) = state.engine.store.lead_detail(&lead.email).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no lead {id}")));
    };
    let ctx = state.ctx();
    let x = explain(&ctx, &lead.email).await?;
    Ok(html(StatusCode::OK, render::timeline(&ctx.cfg, &detail, Some(&x), state.engine.clock.now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBody {
    stage: String,
}

#[derive(Serialize)]
struct Moved {
    id: i64,
    stage: String,
    previous_stage: Option<String>,
}

/// `POST /board/leads/{id}/stage`: a drop on another column (or the card
/// menu's "Move to"). `cadence stage`'s code: checked, logged.
async fn move_stage(
    State(state): State<ApiState>,
    Checked(s): Checked,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<StageBody>,
) -> Result<Json<Moved>, ApiError> {
    let lead = visible(&state, &s.who, id).await?;
    let stage = body.stage.trim().to_string();
    let previous = state.ctx().stage(&lead.email, &stage).await.map_err(|e| ApiError::from(e).with_field("stage"))?;
    Ok(Json(Moved { id, stage, previous_stage: previous }))
}

#[derive(Serialize)]
struct Controlled {
    id: i64,
    state: &'static str,
}

/// `POST /board/leads/{id}/pause`.
async fn pause(State(state): State<ApiState>, Checked(s): Checked, Path(id): Path<i64>) -> Result<Json<Controlled>, ApiError> {
    let lead = visible(&state, &s.who, id).await?;
    state.ctx().pause(&lead.email).await?;
    Ok(Json(Controlled { id, state: "paused" }))
}

/// `POST /board/leads/{id}/resume`.
async fn resume(State(state): State<ApiState>, Checked(s): Checked, Path(id): Path<i64>) -> Result<Json<Controlled>, ApiError> {
    let lead = visible(&state, &s.who, id).await?;
    state.ctx().resume(&lead.email).await?;
    state.engine.wake.notify_one();
    Ok(Json(Controlled { id, state: "active" }))
}

const SCRIPT: &str = include_str!("assets/board.js");
const STYLE: &str = include_str!("assets/board.css");

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn icon() -> Response {
    asset("image/svg+xml", include_str!("assets/favicon.svg"))
}

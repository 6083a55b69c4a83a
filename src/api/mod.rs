//! The HTTP API served by `cadence run` (DESIGN §4): JSON under `/api/v1`
//! behind bearer tokens, plus the public unsubscribe pages, `/healthz` and
//! `/metrics`.
//!
//! Every route is registered with `utoipa_axum::routes!`, which reads the
//! method and path from the handler's `#[utoipa::path]` attribute and adds
//! the route to the router and to the OpenAPI document in one step: the
//! document served at `/api/v1/openapi.json` is built from the same
//! declarations as the router, so the two cannot drift. Do not add routes
//! with `.route()`; `tests/it/api.rs` checks that every route answering
//! requests is in the document.
//!
//! The API holds the [`Engine`] rather than a copy of the config, so a
//! SIGHUP reload (new reps, new tokens, new sequences) applies to the next
//! request, and an enrollment can wake the engine to send step 1 at once.
//! Business rules live in [`crate::ops`], shared with the CLI.

pub mod auth;
pub mod error;
pub mod leads;
pub mod metrics;
pub mod tasks;
pub mod unsubscribe;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::Engine;
use crate::ops::Ctx;
use error::ApiError;
use views::Health;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Reads a secret by environment variable name.
pub type SecretLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    /// Config (reloadable), store, clock, unsubscribe secret and wake-up.
    pub engine: Arc<Engine>,
    /// Where API tokens come from (the environment, via
    /// [`crate::config::secret`]); read per request so a reload applies.
    pub env: Arc<SecretLookup>,
    /// Renders the process's Prometheus recorder.
    pub metrics: PrometheusHandle,
}

impl ApiState {
    /// Tokens from the environment; installs the metrics recorder.
    pub fn new(engine: Arc<Engine>) -> ApiState {
        ApiState::with_secrets(engine, Arc::new(crate::config::secret))
    }

    pub fn with_secrets(engine: Arc<Engine>, env: Arc<SecretLookup>) -> ApiState {
        ApiState { engine, env, metrics: metrics::install() }
    }

    /// The operations, against the config as it is now.
    pub fn ctx(&self) -> Ctx {
        Ctx { cfg: self.engine.config(), store: self.engine.store.clone(), clock: self.engine.clock.clone() }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cadence",
        description = "Email-cadence automation: enroll leads, follow them, control them. \
                       `/api/v1` needs `Authorization: Bearer TOKEN` (a rep's token sees only that rep's leads; \
                       others answer 404). `/unsubscribe`, `/healthz` and `/metrics` are public."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "leads", description = "Enrollments and leads"),
        (name = "control", description = "Manual control of a lead"),
        (name = "tasks", description = "Manual steps (calls, LinkedIn, custom) waiting for a rep"),
        (name = "report", description = "Pipeline health"),
        (name = "public", description = "Unsubscribe pages (no token)"),
        (name = "operations", description = "Health, metrics and this document")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// Every route, in the router and in the document at once.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(leads::enroll))
        .routes(routes!(leads::list))
        .routes(routes!(leads::show))
        .routes(routes!(leads::pause))
        .routes(routes!(leads::resume))
        .routes(routes!(leads::stage))
        .routes(routes!(leads::note))
        .routes(routes!(leads::report))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::done))
        .routes(routes!(tasks::skip))
        .routes(routes!(openapi_json))
        .routes(routes!(unsubscribe::confirm_page, unsubscribe::unsubscribe))
        .routes(routes!(healthz))
        .routes(routes!(metrics::scrape))
}

/// The OpenAPI document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    let (router, doc) = routes().split_for_parts();
    router
        .merge(crate::web::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(doc)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(metrics::track_http))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    description = "This document (OpenAPI 3), generated from the router. Public.",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object))
)]
async fn openapi_json(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}

const PING_TIMEOUT: Duration = Duration::from_secs(5);

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    description = "200 when the database answers, 503 otherwise. Public.",
    responses((status = 200, body = Health), (status = 503, body = Health))
)]
async fn healthz(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    match tokio::time::timeout(PING_TIMEOUT, state.engine.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(Health { status: "ok" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "unavailable" }))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "unavailable" })),
    }
}

async fn no_route() -> impl IntoResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /api/v1/openapi.json")
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route; see /api/v1/openapi.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::Store;

    async fn state(dir: &std::path::Path) -> ApiState {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/cadence.toml");
        let (cfg, _) = crate::config::load_with_env(&path, &|_| None).expect("shipped config loads");
        let store = Store::open(&format!("sqlite://{}", dir.join("api.db").display())).await.expect("open store");
        let clock = Clock::fixed(chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time"));
        let engine = Engine::new(Arc::new(cfg), store, clock, b"secret".to_vec()).expect("engine");
        ApiState::with_secrets(engine, Arc::new(|_: &str| None))
    }

    #[tokio::test]
    async fn healthz_follows_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path()).await;
        assert_eq!(healthz(State(state.clone())).await.0, StatusCode::OK);
        state.engine.store.close().await;
        let (status, Json(body)) = healthz(State(state)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.status, "unavailable");
    }

    #[test]
    fn the_token_api_is_marked_secured_and_the_public_routes_are_not() {
        let doc = serde_json::to_value(openapi()).expect("serialize");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 12, "{paths:?}");
        for (path, item) in paths {
            let public = !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json";
            for (method, op) in item.as_object().expect("item") {
                let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
                assert_eq!(secured, !public, "{method} {path}");
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} documents no response");
            }
        }
    }
}

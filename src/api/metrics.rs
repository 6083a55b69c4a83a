//! Prometheus metrics: counters the engine bumps as things happen, gauges
//! computed from the database at scrape time, and one counter of HTTP
//! requests.
//!
//! Gauges are computed on scrape rather than kept up to date by the engine
//! because the database is the truth: several daemons may share it, and a
//! `cadence enroll` from the shell changes the backlog without the daemon
//! knowing. The queries are two aggregates and one lookup per rep.
//!
//! `/metrics` is unauthenticated, like most exporters: it names reps and
//! routes but no lead data, and is meant to be scraped over a private
//! network. Put the daemon behind a proxy if the port is reachable from
//! outside.
//!
//! The recorder is process-wide (the `metrics` facade has one global
//! recorder). Outside `cadence run` nothing installs it and the `record_*`
//! helpers are no-ops, so the engine can call them unconditionally.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::ApiState;
use crate::store::{dispatch, Store, StoreError};

/// Emails by outcome, per rep.
pub const EMAILS: &str = "cadence_emails_total";
/// Inbound messages by classification, per rep.
pub const INBOUND: &str = "cadence_inbound_total";
/// HTTP requests by route, method and status.
pub const HTTP_REQUESTS: &str = "cadence_http_requests_total";
/// Enrollments due now but not sent.
pub const DUE_BACKLOG: &str = "cadence_due_backlog";
/// How long the oldest due-but-unsent step has been waiting.
pub const OLDEST_OVERDUE: &str = "cadence_oldest_overdue_seconds";
/// Time since the rep's inbox last finished a sync.
pub const INBOX_LAG: &str = "cadence_inbox_lag_seconds";

/// What became of one send attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// Permanently failed (not a bounce).
    Failed,
    /// A transient error; it will be retried.
    Retried,
    /// The server rejected the recipient (counted as a bounce).
    Bounced,
    /// The process stopped mid-send: never resent.
    Unknown,
}

impl SendOutcome {
    pub const ALL: [SendOutcome; 5] =
        [SendOutcome::Sent, SendOutcome::Failed, SendOutcome::Retried, SendOutcome::Bounced, SendOutcome::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Sent => "sent",
            SendOutcome::Failed => "failed",
            SendOutcome::Retried => "retried",
            SendOutcome::Bounced => "bounced",
            SendOutcome::Unknown => "unknown",
        }
    }
}

/// How the inbox watcher classified a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundKind {
    Reply,
    AutoReply,
    Bounce,
    Complaint,
    Unsubscribe,
    /// Not matched to any lead (ignored).
    Unmatched,
}

impl InboundKind {
    pub const ALL: [InboundKind; 6] = [
        InboundKind::Reply,
        InboundKind::AutoReply,
        InboundKind::Bounce,
        InboundKind::Complaint,
        InboundKind::Unsubscribe,
        InboundKind::Unmatched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InboundKind::Reply => "reply",
            InboundKind::AutoReply => "auto_reply",
            InboundKind::Bounce => "bounce",
            InboundKind::Complaint => "complaint",
            InboundKind::Unsubscribe => "unsubscribe",
            InboundKind::Unmatched => "unmatched",
        }
    }
}

/// Counts one send attempt's outcome for `rep`.
pub fn record_send(rep: &str, outcome: SendOutcome) {
    metrics::counter!(EMAILS, "rep" => rep.to_string(), "outcome" => outcome.as_str()).increment(1);
}

/// Counts one inbound message for `rep`.
pub fn record_inbound(rep: &str, kind: InboundKind) {
    metrics::counter!(INBOUND, "rep" => rep.to_string(), "kind" => kind.as_str()).increment(1);
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns the
/// handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows only what reaches this one");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(EMAILS, "Send attempts by outcome (sent, failed, retried, bounced, unknown), per rep");
    metrics::describe_counter!(INBOUND, "Inbound messages by kind (reply, auto_reply, bounce, complaint, unsubscribe, unmatched), per rep");
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    metrics::describe_gauge!(DUE_BACKLOG, "Active enrollments whose next email may be sent now but has not been");
    metrics::describe_gauge!(OLDEST_OVERDUE, "Seconds the oldest due-but-unsent email has waited");
    metrics::describe_gauge!(INBOX_LAG, "Seconds since the rep's inbox last finished a sync (+Inf: never)");
}

/// Counts every request by its route template (never the raw path, so a
/// scanner cannot blow up the label set).
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status).increment(1);
    response
}

/// Enrollments due now and how long the oldest has waited (ms).
async fn backlog(store: &Store, now: i64) -> Result<(i64, Option<i64>), StoreError> {
    // A read-only aggregate for the exporter; the write paths live in the store.
    let sql = "SELECT COUNT(*), MIN(next_at) FROM enrollments WHERE state = 'active' AND next_at IS NOT NULL AND next_at <= $1";
    Ok(dispatch!(store, pool => sqlx::query_as(sql).bind(now).fetch_one(pool).await?))
}

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Prometheus text exposition. Unauthenticated: scrape it over a private network.",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn scrape(State(state): State<ApiState>) -> Response {
    let cfg = state.engine.config();
    let store = &state.engine.store;
    let now = state.engine.clock.now_ms();
    let gauges = async {
        let (due, oldest) = backlog(store, now).await?;
        metrics::gauge!(DUE_BACKLOG).set(due as f64);
        let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        metrics::gauge!(OLDEST_OVERDUE).set(age);
        for rep in cfg.reps.iter().filter(|r| r.imap.is_some()) {
            let lag = match store.inbox_synced_at(&rep.id).await? {
                Some(t) => (now - t).max(0) as f64 / 1000.0,
                None => f64::INFINITY,
            };
            metrics::gauge!(INBOX_LAG, "rep" => rep.id.clone()).set(lag);
        }
        Ok::<_, StoreError>(())
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, gauges).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot compute the database gauges"),
        Err(_) => tracing::warn!("metrics: the database gauges took longer than {SCRAPE_TIMEOUT:?}"),
    }
    // Every series exists from the first scrape, so rates start at zero
    // rather than appearing with the first event.
    for rep in &cfg.reps {
        for o in SendOutcome::ALL {
            metrics::counter!(EMAILS, "rep" => rep.id.clone(), "outcome" => o.as_str()).increment(0);
        }
        for k in InboundKind::ALL {
            metrics::counter!(INBOUND, "rep" => rep.id.clone(), "kind" => k.as_str()).increment(0);
        }
    }
    state.metrics.run_upkeep();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

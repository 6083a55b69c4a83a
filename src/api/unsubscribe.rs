//! The public unsubscribe pages behind every email's link.
//!
//! GET only shows a confirm button: mail scanners and link previewers follow
//! GETs, and must not unsubscribe anyone. POST (the button, or a mail
//! client's RFC 8058 one-click request) suppresses the address at once. The
//! token is signed per lead ([`crate::domain::token`]); a forged or altered
//! one gets the same 404 page as an unknown lead and changes nothing.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::ApiState;
use crate::domain::{token, TouchKind};
use crate::store::{LeadRow, NewTouch};

const REASON: &str = "unsubscribe link";

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}\
         button{{font-size:1rem;padding:.5rem 1.25rem}}</style></head>\n<body><h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (status, [("cache-control", "no-store")], Html(html)).into_response()
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This unsubscribe link is not valid. Please use the link from the most recent email.</p>",
    )
}

async fn lead_for(state: &ApiState, token: &str) -> Result<Option<LeadRow>, Response> {
    let Some(id) = token::verify(state.engine.secret(), token) else { return Ok(None) };
    state.engine.store.lead_by_id(id).await.map_err(|e| {
        tracing::error!(error = %e, "unsubscribe: cannot read the lead");
        page(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "<p>Something went wrong on our side. Please try again in a minute.</p>")
    })
}

#[utoipa::path(
    get,
    path = "/unsubscribe/{token}",
    tag = "public",
    description = "A page with a confirm button. Changes nothing (link scanners follow GETs).",
    params(("token" = String, Path, description = "The signed per-lead token from the email")),
    responses(
        (status = 200, description = "Confirmation page", content_type = "text/html", body = String),
        (status = 404, description = "Forged, altered or unknown token", content_type = "text/html", body = String),
    )
)]
pub async fn confirm_page(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    match lead_for(&state, &token).await {
        Err(r) => r,
        Ok(None) => not_found(),
        Ok(Some(lead)) => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop all emails to <strong>{}</strong>?</p>\n<form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
                escape(&lead.email)
            ),
        ),
    }
}

#[utoipa::path(
    post,
    path = "/unsubscribe/{token}",
    tag = "public",
    description = "Unsubscribe at once: the RFC 8058 one-click target and the confirm button's form. Idempotent.",
    params(("token" = String, Path, description = "The signed per-lead token from the email")),
    responses(
        (status = 200, description = "Unsubscribed", content_type = "text/html", body = String),
        (status = 404, description = "Forged, altered or unknown token; nothing changed", content_type = "text/html", body = String),
    )
)]
pub async fn unsubscribe(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    let lead = match lead_for(&state, &token).await {
        Err(r) => return r,
        Ok(None) => return not_found(),
        Ok(Some(lead)) => lead,
    };
    if let Err(e) = suppress(&state, &lead).await {
        tracing::error!(error = %e, lead = lead.id, "unsubscribe failed");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "<p>Something went wrong on our side. Please try again in a minute.</p>",
        );
    }
    page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!("<p><strong>{}</strong> will receive no more emails from us.</p>", escape(&lead.email)),
    )
}

/// Suppresses the lead's address (stopping live enrollments) and logs one
/// `unsubscribe` touchpoint; a repeated POST changes nothing more.
async fn suppress(state: &ApiState, lead: &LeadRow) -> Result<(), crate::ops::OpError> {
    let store = &state.engine.store;
    let email = crate::domain::EmailAddress::parse(&lead.email)
        .map_err(|e| crate::domain::FieldError::Invalid { field: "email".into(), message: e.to_string() })?;
    if store.suppression_for(&email).await?.is_some_and(|(pattern, _)| pattern == email.as_str()) {
        return Ok(());
    }
    let live = store.current_enrollment(lead.id).await?.filter(|e| e.state().is_live());
    state.ctx().suppress(&lead.email, REASON).await?;
    let now = state.engine.clock.now_ms();
    store
        .add_touch(
            now,
            NewTouch {
                lead_id: lead.id,
                enrollment_id: live.as_ref().map(|e| e.id),
                kind: Some(TouchKind::Unsubscribe),
                at: now,
                rep: lead.owner.as_deref(),
                detail: Some(REASON),
                ..Default::default()
            },
        )
        .await?;
    tracing::info!(lead = lead.id, "unsubscribed by link");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_html() {
        assert_eq!(super::escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}

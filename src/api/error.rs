//! Errors as the API answers them: one JSON shape, one status per kind of
//! [`OpError`], so a client can branch on the status and show `message`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::FieldError;
use crate::ops::OpError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `unauthorized`, `not_found`, `refused`,
    /// `invalid`, `payload_too_large`, `unsupported_media_type`,
    /// `bad_request`, `method_not_allowed`, `internal`.
    pub error: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, body: ErrorBody { error, message: message.into(), field: None } }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
        e.body.field = Some(field.into());
        e
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer TOKEN` with a rep's or the manager's API token",
        )
    }

    /// The one answer for a lead that does not exist *or* belongs to another
    /// rep, so a rep cannot tell the two apart.
    pub fn no_lead(email: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no lead {}", email.trim()))
    }

    pub fn refused(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "refused", message)
    }

    /// Names the field for an `Usage` error (which `ops` reports as text).
    pub fn with_field(mut self, field: &str) -> Self {
        if self.status == StatusCode::UNPROCESSABLE_ENTITY && self.body.field.is_none() {
            self.body.field = Some(field.to_string());
        }
        self
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Refused(m) => ApiError::refused(m),
            OpError::Invalid(f) => ApiError::from(f),
            OpError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            OpError::Usage(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            OpError::Store(e) => ApiError::from(e),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(f: FieldError) -> Self {
        ApiError::invalid(f.field().to_string(), f.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The detail goes to the log, not to the client.
        tracing::error!(error = %e, "API request failed on the database");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon's log")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        let field = quoted_field(&text);
        let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", text);
        e.body.field = field;
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut r = (self.status, Json(self.body)).into_response();
        if unauthorized {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The field serde names in "unknown field `x`" / "missing field `x`".
fn quoted_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// A JSON body, refused with an [`ApiError`]: 415 without a JSON content
/// type, 413 over the body limit, 400 for malformed JSON, 422 (naming the
/// field) for a wrong type, a missing field or an unknown one.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the body as application/json"));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" };
            ApiError::new(status, kind, r.body_text())
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => Ok(JsonBody(v)),
            Err(e) => {
                let inner = e.inner();
                if inner.is_syntax() || inner.is_eof() {
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("malformed JSON: {inner}")));
                }
                let message = inner.to_string();
                let path = e.path().to_string();
                // The path leads to the value at fault; for a missing or
                // unknown key it stops at the enclosing object or includes
                // the key, depending on where serde noticed.
                let field =
                    match quoted_field(&message).filter(|_| message.starts_with("unknown field") || message.starts_with("missing field")) {
                        Some(name) if path == "." => name,
                        Some(name) if path != name && !path.ends_with(&format!(".{name}")) => format!("{path}.{name}"),
                        _ => path,
                    };
                Err(ApiError::invalid(field.clone(), format!("field `{field}`: {message}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_quoted_field() {
        assert_eq!(quoted_field("unknown field `nickname`, expected one of `email`").as_deref(), Some("nickname"));
        assert_eq!(quoted_field("no quotes"), None);
    }

    #[test]
    fn op_errors_map_to_statuses() {
        let cases = [
            (OpError::Refused("x".into()), StatusCode::CONFLICT),
            (OpError::NotFound("x".into()), StatusCode::NOT_FOUND),
            (OpError::Usage("x".into()), StatusCode::UNPROCESSABLE_ENTITY),
            (OpError::Invalid(FieldError::Control { field: "first_name".into() }), StatusCode::UNPROCESSABLE_ENTITY),
            (OpError::Store(StoreError::Data("x".into())), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status, status);
        }
        let e = ApiError::from(OpError::Invalid(FieldError::Control { field: "first_name".into() }));
        assert_eq!(e.body.field.as_deref(), Some("first_name"));
    }
}

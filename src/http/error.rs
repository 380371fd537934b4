//! How the service's errors ([`ApiError`]) become HTTP responses: status, DESIGN.md error
//! code, JSON body and the `WWW-Authenticate` / `Retry-After` headers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;

impl ApiError {
    /// The HTTP status and DESIGN.md error code of each failure.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            InvalidGrant(_) => (StatusCode::BAD_REQUEST, "invalid_grant"),
            UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            InvalidTicket => (StatusCode::UNAUTHORIZED, "invalid_ticket"),
            MissingToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            InsufficientScope(_) => (StatusCode::FORBIDDEN, "insufficient_scope"),
            OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            TooManyChannels(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_channels"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Unavailable | Busy | HookUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(why) = &self {
            tracing::error!(%why, "internal error");
        }
        let body = json!({"error": code, "error_description": self.to_string()});
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let www = match &self {
            ApiError::MissingToken => Some(r#"Bearer realm="tokenpush""#.to_string()),
            ApiError::InvalidToken(why) => Some(format!(
                r#"Bearer realm="tokenpush", error="invalid_token", error_description="{why}""#
            )),
            ApiError::InsufficientScope(role) => Some(format!(
                r#"Bearer realm="tokenpush", error="insufficient_scope", error_description="needs role {role}""#
            )),
            _ => None,
        };
        if let Some(v) = www.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        match &self {
            ApiError::RateLimited { retry_after_secs } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unavailable | ApiError::HookUnavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ApiError::Busy => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

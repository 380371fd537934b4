//! The one error type a client can cause, and how each maps to an HTTP response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Every failure a handler can return. Each variant carries DESIGN.md's error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("username or password is wrong")]
    InvalidCredentials,
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("grant_type must be refresh_token")]
    UnsupportedGrantType,
    #[error("too many attempts")]
    RateLimited { retry_after_secs: u64 },
    #[error("ticket is unknown, used or expired")]
    InvalidTicket,
    /// No credentials at all: RFC 6750 says answer with the realm only.
    #[error("authentication required")]
    MissingToken,
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("this needs the {0} role")]
    InsufficientScope(&'static str),
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("{0}")]
    TooManyChannels(&'static str),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("content type must be application/json or application/x-www-form-urlencoded")]
    UnsupportedMediaType,
    #[error("not found")]
    NotFound,
    #[error("session store is unavailable")]
    Unavailable,
    /// The `--login-hook` did not answer usably (down, slow, 5xx, garbage): never a login.
    #[error("the login service is unavailable; retry shortly")]
    HookUnavailable,
    /// Every password-hashing slot and queue place is taken (a login flood).
    #[error("too many logins in progress; retry shortly")]
    Busy,
    /// Details go to the log, never to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
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
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Unavailable | Busy | HookUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }
}

impl From<crate::sessions::StoreError> for ApiError {
    fn from(e: crate::sessions::StoreError) -> Self {
        match e {
            crate::sessions::StoreError::Unavailable(why) => {
                tracing::warn!(%why, "session store unavailable");
                ApiError::Unavailable
            }
            crate::sessions::StoreError::Internal(why) => ApiError::Internal(why),
        }
    }
}

impl From<crate::users::Busy> for ApiError {
    fn from(_: crate::users::Busy) -> Self {
        ApiError::Busy
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

/// Handlers return this.
pub type ApiResult<T> = Result<T, ApiError>;

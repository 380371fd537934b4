//! The one error type a client can cause: what the service returns. It knows no HTTP; each
//! variant's status, DESIGN.md error code and headers are mapped in `http::error`.

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
    /// The body did not arrive within `--body-timeout` of its head.
    #[error("request body did not arrive in time")]
    BodyTimeout,
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

/// What the service and the handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

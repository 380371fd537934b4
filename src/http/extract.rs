//! Request extractors: JSON-or-form bodies with DESIGN.md errors, Bearer access tokens
//! (`Authed`, `Admin`), and the client address.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::ApiError;
use crate::tokens::{Claims, Rejection};

/// A body parsed from `application/json` or `application/x-www-form-urlencoded`.
pub struct Body<T> {
    pub value: T,
    /// True when it came as a form (RFC 6749 clients).
    pub form: bool,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mime = ctype.split(';').next().unwrap_or("").trim().to_string();
        let form = match mime.as_str() {
            "application/json" => false,
            "application/x-www-form-urlencoded" => true,
            _ => return Err(ApiError::UnsupportedMediaType),
        };
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidRequest("unreadable body".into())
            }
        })?;
        let value = if form {
            serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| ApiError::InvalidRequest(format!("bad form body: {e}")))?
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::InvalidRequest(format!("bad JSON body: {}", short(&e.to_string())))
            })?
        };
        Ok(Body { value, form })
    }
}

// serde's messages can quote input; keep them short and never echo a whole token.
fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The Bearer token of a request: `Ok(None)` when there is none.
pub fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| ApiError::InvalidRequest("Authorization header is not ASCII".into()))?
        .trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(ApiError::InvalidRequest("Bearer without a token".into()));
    }
    Ok(Some(token))
}

/// A request with a valid access token of a session that is not revoked.
pub struct Authed(pub Claims);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.ok_or(ApiError::MissingToken)?;
        let svc = &state.service;
        match svc.issuer.access.verify(token) {
            Ok(claims) if svc.is_revoked(&claims.sid) => {
                Err(ApiError::InvalidToken("the session was revoked"))
            }
            Ok(claims) => Ok(Authed(claims)),
            Err(Rejection::Expired) => {
                // A live session's client is behind: nudge a push to its channels (rate-limited).
                if let Ok(c) = svc.issuer.access.verify_ignoring_expiry(token) {
                    if !svc.is_revoked(&c.sid) && svc.hub.has_channels(&c.sid) {
                        let svc = svc.clone();
                        tokio::spawn(async move { svc.request_push(&c.sid).await });
                    }
                }
                Err(ApiError::InvalidToken(Rejection::Expired.describe()))
            }
            Err(r) => Err(ApiError::InvalidToken(r.describe())),
        }
    }
}

/// An authenticated request whose token carries the `admin` role.
pub struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authed(c) = Authed::from_request_parts(parts, state).await?;
        if c.roles.iter().any(|r| r == "admin") {
            Ok(Admin(c))
        } else {
            Err(ApiError::InsufficientScope("admin"))
        }
    }
}

/// The client's address: the socket peer, or with `--trust-proxy` the first `X-Forwarded-For` hop.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.trust_proxy {
            let fwd = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            if let Some(ip) = fwd
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
            {
                return Ok(ClientIp(ip.to_string()));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<super::direct::Peer>>()
            .map(|c| c.0 .0.ip().to_string());
        Ok(ClientIp(peer.unwrap_or_else(|| "unknown".into())))
    }
}

//! `/auth/*`: login, refresh, ticket, ack, logout, revoke.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::extract::{bearer, Authed, Body, ClientIp};
use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::tokens::RefreshTokens;

/// A JSON response that must never be cached (it carries a token).
fn no_store(body: impl serde::Serialize) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn required<'a>(v: &'a Option<String>, name: &str) -> ApiResult<&'a str> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() && s.len() <= 4096 => Ok(s),
        Some(s) if s.len() > 4096 => Err(ApiError::InvalidRequest(format!("{name} is too long"))),
        _ => Err(ApiError::InvalidRequest(format!("{name} is required"))),
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
}

/// `POST /auth/login`.
pub async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    body: Body<LoginBody>,
) -> ApiResult<Response> {
    let b = body.value;
    let username = required(&b.username, "username")?;
    let password = b
        .password
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or(ApiError::InvalidRequest("password is required".into()))?;
    if username.len() > 128 || password.len() > 1024 {
        return Err(ApiError::InvalidRequest(
            "username or password is too long".into(),
        ));
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let device = super::device::device_label(b.device_id.as_deref(), user_agent);
    Ok(no_store(
        st.service.login(username, password, &device, &ip).await?,
    ))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    grant_type: Option<String>,
    refresh_token: Option<String>,
}

/// `POST /auth/refresh` (JSON, or the RFC 6749 §6 form).
pub async fn refresh(State(st): State<AppState>, body: Body<RefreshBody>) -> ApiResult<Response> {
    let b = body.value;
    match b.grant_type.as_deref() {
        Some("refresh_token") => {}
        None if !body.form => {}
        None => return Err(ApiError::InvalidRequest("grant_type is required".into())),
        Some(_) => return Err(ApiError::UnsupportedGrantType),
    }
    let token = required(&b.refresh_token, "refresh_token")?;
    Ok(no_store(st.service.refresh(token).await?))
}

#[derive(Deserialize)]
pub struct TokenBody {
    refresh_token: Option<String>,
}

/// `POST /auth/ticket`: needs the refresh token, so an access token alone never subscribes.
pub async fn ticket(State(st): State<AppState>, body: Body<TokenBody>) -> ApiResult<Response> {
    let token = required(&body.value.refresh_token, "refresh_token")?;
    let ticket = st.service.ticket(token).await?;
    Ok(no_store(
        json!({"ticket": ticket, "expires_in": st.config.ticket_ttl.as_secs()}),
    ))
}

/// `POST /auth/ack`: the Bearer access token's generation is confirmed (SSE clients).
pub async fn ack(State(st): State<AppState>, Authed(c): Authed) -> ApiResult<StatusCode> {
    st.service.confirm(&c.sid, c.gen).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/logout`: with a Bearer access token, or `{"refresh_token"}`. Only ever the
/// caller's own session.
pub async fn logout(State(st): State<AppState>, req: Request) -> ApiResult<StatusCode> {
    let (mut parts, body) = req.into_parts();
    let sid = if bearer(&parts)?.is_some() {
        Authed::from_request_parts(&mut parts, &st).await?.0.sid
    } else {
        let req = Request::from_parts(parts, body);
        let b = <Body<TokenBody> as axum::extract::FromRequest<AppState>>::from_request(req, &st)
            .await?;
        let token = required(&b.value.refresh_token, "refresh_token")?;
        st.service
            .session_of_refresh(token)
            .await?
            .ok_or(ApiError::InvalidGrant("unknown refresh token"))?
    };
    st.service.revoke(&sid, "logout").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RevokeBody {
    token: Option<String>,
}

/// `POST /auth/revoke` (RFC 7009): 200 for any well-formed request, whether or not the
/// token was known, so it cannot be used to probe tokens.
pub async fn revoke(State(st): State<AppState>, body: Body<RevokeBody>) -> ApiResult<StatusCode> {
    let token = required(&body.value.token, "token")?;
    let sid = if RefreshTokens::parse(token).is_some() {
        st.service.session_of_refresh(token).await?
    } else {
        st.service.session_of_access(token)
    };
    if let Some(sid) = sid {
        st.service.revoke(&sid, "logout").await?;
    }
    Ok(StatusCode::OK)
}

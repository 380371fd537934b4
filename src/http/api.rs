//! `GET /api/me`, the protected example route, and the `/admin` routes.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Admin, Authed, Body};
use super::AppState;
use crate::error::{ApiError, ApiResult};

/// `GET /api/me`: who the access token says you are.
pub async fn me(Authed(c): Authed) -> Json<Value> {
    Json(
        json!({"sub": c.sub, "name": c.name, "roles": c.roles, "session_id": c.sid, "device": c.device, "exp": c.exp, "gen": c.gen}),
    )
}

#[derive(Deserialize)]
pub struct RolesBody {
    roles: Option<Vec<String>>,
}

/// `PUT /admin/users/{name}/roles`: new roles, pushed to every live session at once.
pub async fn set_roles(
    State(st): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
    body: Body<RolesBody>,
) -> ApiResult<Json<Value>> {
    let roles = body
        .value
        .roles
        .ok_or(ApiError::InvalidRequest("roles is required".into()))?;
    if roles.len() > 32 || roles.iter().any(|r| r.is_empty() || r.len() > 64) {
        return Err(ApiError::InvalidRequest(
            "roles must be at most 32 names of 1 to 64 characters".into(),
        ));
    }
    let n = st.service.set_roles(&name, roles.clone()).await?;
    Ok(Json(
        json!({"user": name, "roles": roles, "sessions_renewed": n}),
    ))
}

/// `DELETE /admin/users/{name}/sessions`: revokes every live session of the user.
pub async fn revoke_user(
    State(st): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let n = st.service.revoke_user(&name, "admin").await?;
    Ok(Json(json!({"revoked": n})))
}

/// `GET /admin/sessions`: every live session, with this node's channel counts.
pub async fn sessions(State(st): State<AppState>, Admin(_): Admin) -> ApiResult<Json<Value>> {
    let list: Vec<Value> = st
        .service
        .live_sessions(None)
        .await?
        .into_iter()
        .map(|s| {
            let (sse, ws) = st.service.hub.counts(&s.sid);
            json!({
                "session_id": s.sid,
                "user": s.user,
                "device": s.device,
                "created_at": s.created_at / 1000,
                "generation": s.current_gen,
                "confirmed_generation": s.confirmed_gen,
                "channels": {"sse": sse, "ws": ws},
            })
        })
        .collect();
    Ok(Json(json!({"sessions": list})))
}

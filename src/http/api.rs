//! `GET /api/me`, the protected example route, `POST /auth/renew`, the `/admin` routes the
//! admin console uses, and the public `GET /demo/config`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Admin, Authed, Body};
use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::hub::Kind;

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
    let done = st.service.set_roles(&name, roles.clone()).await?;
    let failed: Vec<Value> = done
        .failed
        .iter()
        .map(|(sid, why)| json!({"session_id": sid, "error_description": why}))
        .collect();
    Ok(Json(json!({
        "user": name,
        "roles": roles,
        "sessions_renewed": done.renewed,
        "sessions_on_next_refresh": done.on_next_refresh,
        "sessions_failed": failed,
    })))
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

/// The channel counts of one session's row: totals over every node, and per node.
fn channels_row(per_node: Option<&Vec<(String, usize, usize)>>) -> (Value, Value) {
    let per_node = per_node.map(Vec::as_slice).unwrap_or_default();
    let (sse, ws) = per_node
        .iter()
        .fold((0, 0), |(a, b), (_, s, w)| (a + s, b + w));
    let nodes: Vec<Value> = per_node
        .iter()
        .map(|(node, sse, ws)| json!({"node": node, "sse": sse, "ws": ws}))
        .collect();
    (json!({"sse": sse, "ws": ws}), Value::Array(nodes))
}

/// `GET /admin/sessions`: every live session, with its channels on every node (a cluster's
/// other nodes as they said at most 2 s ago), marked with the node.
pub async fn sessions(State(st): State<AppState>, Admin(_): Admin) -> ApiResult<Json<Value>> {
    let cluster = st.service.cluster_channels().await;
    let list: Vec<Value> = st
        .service
        .live_sessions(None)
        .await?
        .into_iter()
        .map(|s| {
            let (channels, nodes) = channels_row(cluster.get(&s.sid));
            let last = st.service.last_push(&s.sid);
            json!({
                "session_id": s.sid,
                "user": s.user,
                "device": s.device,
                "created_at": s.created_at / 1000,
                "generation": s.current_gen,
                "confirmed_generation": s.confirmed_gen,
                "channels": channels,
                "nodes": nodes,
                // Added for the admin console (times in unix seconds, margin in ms).
                "ip": s.ip,
                "roles": st.service.roles_of(&s),
                "last_used_at": s.last_used_at / 1000,
                "last_push_at": last.map(|p| p.at_ms as f64 / 1000.0),
                "last_push_generation": last.map(|p| p.gen),
                "last_margin_ms": last.and_then(|p| p.margin_ms),
            })
        })
        .collect();
    Ok(Json(json!({"sessions": list})))
}

/// `DELETE /admin/sessions/{sid}`: revokes one session; its channels get `revoked`/`admin`.
/// 404 when no such live session exists.
pub async fn revoke_session(
    State(st): State<AppState>,
    Admin(_): Admin,
    Path(sid): Path<String>,
) -> ApiResult<Json<Value>> {
    if st.service.live_session(&sid).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let n = st.service.revoke(&sid, "admin").await?;
    Ok(Json(json!({"revoked": u8::from(n)})))
}

/// `GET /admin/stats`: the console's headline numbers. Channels are the cluster's (per node
/// under `nodes`); pushes, deliveries and margins are this node's.
pub async fn stats(State(st): State<AppState>, Admin(_): Admin) -> ApiResult<Json<Value>> {
    let svc = &st.service;
    let m = svc.metrics();
    let pushes: u64 = ["renewal", "claims_changed", "resume", "requested"]
        .iter()
        .map(|r| m.pushes.with_label_values(&[r]).get())
        .sum();
    let min_margin = m.min_margin_ms.get();
    let mut per_node: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    per_node.insert(svc.node().to_string(), (0, 0));
    for channels in svc.cluster_channels().await.into_values() {
        for (node, sse, ws) in channels {
            let e = per_node.entry(node).or_default();
            *e = (e.0 + sse, e.1 + ws);
        }
    }
    // This node's own totals are its live gauges (a channel may be mid-registration).
    per_node.insert(
        svc.node().to_string(),
        (svc.live_channels(Kind::Sse), svc.live_channels(Kind::Ws)),
    );
    let (sse, ws) = per_node
        .values()
        .fold((0, 0), |(a, b), (s, w)| (a + s, b + w));
    let nodes: Vec<Value> = per_node
        .iter()
        .map(|(node, (sse, ws))| json!({"node": node, "sse": sse, "ws": ws}))
        .collect();
    Ok(Json(json!({
        "live_sessions": svc.live_sessions(None).await?.len(),
        "channels": {"sse": sse, "ws": ws},
        "nodes": nodes,
        "pushes_total": pushes,
        "deliveries_last_minute": svc.pushes_last_minute(),
        "min_delivery_margin_ms": (min_margin != 0).then_some(min_margin),
        "reuse_detections": m.reuse_detected.get(),
    })))
}

/// `POST /auth/renew`: ask for a push to this session's channels now (what the WebSocket
/// `renew` frame does, for SSE clients). 202, or 429 when asked again within 2 s.
pub async fn renew(State(st): State<AppState>, Authed(c): Authed) -> ApiResult<Response> {
    if st.service.request_push(&c.sid).await {
        Ok((StatusCode::ACCEPTED, Json(json!({"requested": true}))).into_response())
    } else {
        Err(ApiError::RateLimited {
            retry_after_secs: 2,
        })
    }
}

/// `GET /demo/config`: public timing settings the demo page shows (no secrets).
pub async fn demo_config(State(st): State<AppState>) -> Json<Value> {
    let c = &st.config;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    Json(json!({
        "demo_users": c.users.is_none(),
        "users": if c.users.is_none() { json!(["alice", "bob"]) } else { json!([]) },
        "access_ttl_ms": ms(c.access_ttl),
        "renew_lead_ms": ms(c.renew_lead),
        "renew_jitter_ms": ms(c.renew_jitter()),
        "grace_ms": ms(c.grace),
        "heartbeat_ms": ms(c.heartbeat),
    }))
}

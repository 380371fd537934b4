//! The HTTP surface: application state and the router. Handlers live in one file per area.

pub mod api;
pub mod auth;
pub mod device;
pub mod direct;
pub mod error;
pub mod events;
pub mod extract;
pub mod hardening;
pub mod integration;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod wire;
pub mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::timeout::RequestBodyDeadlineLayer;

use crate::config::Config;
use crate::error::ApiError;
use crate::service::Service;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;

/// What every handler gets: cheap handles.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub service: Arc<Service>,
}

/// Every route of DESIGN.md.
pub fn router(state: AppState) -> Router {
    let cors = hardening::cors(&state.config);
    let body_timeout = state.config.body_timeout;
    let app = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/ticket", post(auth::ticket))
        .route("/auth/ack", post(auth::ack))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/revoke", post(auth::revoke))
        .route("/events", get(events::events))
        .route("/ws", get(ws::ws))
        .route("/api/me", get(api::me))
        .route("/admin/users/{name}/roles", put(api::set_roles))
        .route("/admin/users/{name}/sessions", delete(api::revoke_user))
        .route(
            "/admin/sessions",
            get(api::sessions).post(integration::mint_session),
        )
        .route("/admin/sessions/{sid}", delete(api::revoke_session))
        .route("/admin/events", get(integration::revocation_feed))
        .route("/admin/stats", get(api::stats))
        .route("/auth/renew", post(api::renew))
        .route("/demo/config", get(api::demo_config))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/openapi.json", get(openapi::serve))
        .route(
            "/.well-known/openid-configuration",
            get(integration::openid_configuration),
        )
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(ops::index))
        .route("/app.js", get(ops::app_js))
        .route("/tokenpush-client.js", get(ops::tokenpush_client_js))
        .route("/style.css", get(ops::style))
        .route("/timeline.js", get(ops::timeline_js))
        .route("/admin.js", get(ops::admin_js))
        .route("/favicon.svg", get(ops::favicon))
        .route("/favicon.ico", get(ops::favicon))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // One deadline for the whole body, however it trickles in (a per-frame idle timeout
        // would let a byte every few seconds hold the connection for ever).
        .layer(RequestBodyDeadlineLayer::new(body_timeout))
        .with_state(state);
    // Outermost, so preflights are answered before routing.
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

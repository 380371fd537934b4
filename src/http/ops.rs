//! Operational routes: health, metrics, JWKS, and the embedded demo page (served with the
//! browser hardening headers of [`super::hardening`]).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{hardening, AppState};
use crate::hub::Kind;

/// `GET /healthz`.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let m = st.service.metrics();
    for kind in [Kind::Sse, Kind::Ws] {
        m.channels
            .with_label_values(&[kind.label()])
            .set(st.service.live_channels(kind) as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(st): State<AppState>) -> impl IntoResponse {
    let keys = st.service.jwks();
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({"keys": keys})),
    )
}

/// The demo page, compiled in so `cargo run` serves it from any directory. Its CSP names
/// the WebSocket origin of the host it was loaded from.
pub async fn index(headers: HeaderMap) -> Response {
    let mut r = static_file(
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    );
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        hardening::page_csp(&headers),
    );
    r
}

/// `GET /app.js`.
pub async fn app_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    )
}

/// `GET /tokenpush-client.js`: the built browser client (clients/js, committed build output).
pub async fn tokenpush_client_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/tokenpush-client.js"),
    )
}

/// `GET /style.css`.
pub async fn style() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    )
}

/// `GET /timeline.js`: the demo page's SVG timeline.
pub async fn timeline_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/timeline.js"),
    )
}

/// `GET /admin.js`: the demo page's admin console.
pub async fn admin_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/admin.js"),
    )
}

/// `GET /favicon.svg` (and `/favicon.ico`, which browsers ask for on their own).
pub async fn favicon() -> Response {
    static_file("image/svg+xml", include_str!("../../static/favicon.svg"))
}

/// A compiled-in file with the hardening headers of [`hardening`].
fn static_file(ctype: &'static str, body: &'static str) -> Response {
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, hardening::CSP),
        ],
        body,
    )
        .into_response();
    for (name, value) in hardening::STATIC_HEADERS {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    r
}

//! Routes for apps that bring their own users and resource servers: `POST /admin/sessions`
//! (trusted backend, service key) and `GET /.well-known/openid-configuration` (discovery).

use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{bearer, Body, ClientIp};
use super::AppState;
use crate::config::Signing;
use crate::error::{ApiError, ApiResult};
use crate::users::Identity;

/// A request carrying the service key as Bearer. Without `--service-key-file` the route does
/// not exist (404), so probing cannot tell it from any unknown path.
pub struct ServiceKey;

impl FromRequestParts<AppState> for ServiceKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.service.service_key_configured() {
            return Err(ApiError::NotFound);
        }
        match bearer(parts)? {
            None => Err(ApiError::MissingToken),
            Some(key) if state.service.service_key_matches(key.as_bytes()) => Ok(ServiceKey),
            Some(_) => Err(ApiError::InvalidToken("the service key is wrong")),
        }
    }
}

/// Body of `POST /admin/sessions`.
#[derive(Deserialize)]
pub struct MintBody {
    sub: Option<String>,
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    device_id: Option<String>,
    ext: Option<Value>,
}

/// Largest serialized `ext` object: it rides in every access token.
const MAX_EXT: usize = 2048;

/// `POST /admin/sessions`: a session for a user the app authenticated itself.
pub async fn mint_session(
    State(st): State<AppState>,
    _key: ServiceKey,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    body: Body<MintBody>,
) -> ApiResult<Response> {
    let b = body.value;
    let sub = b
        .sub
        .as_deref()
        .ok_or(ApiError::InvalidRequest("sub is required".into()))?;
    crate::users::check_claim("sub", sub).map_err(ApiError::InvalidRequest)?;
    if crate::users::is_external(sub) {
        // The prefix is the tokens', not the app's: `ext:ext:…` would be a second user.
        return Err(ApiError::InvalidRequest(
            "sub is your app's own id: the ext: or hook: prefix belongs to the tokens".into(),
        ));
    }
    if let Some(name) = &b.name {
        crate::users::check_claim("name", name).map_err(ApiError::InvalidRequest)?;
    }
    if b.roles.len() > 32
        || b.roles
            .iter()
            .any(|r| r.len() > 64 || crate::users::check_claim("a role", r).is_err())
    {
        return Err(ApiError::InvalidRequest(
            "roles must be at most 32 non-empty names of at most 64 bytes".into(),
        ));
    }
    // The app's users live in their own namespace: `ext:<sub>` is never a users-file user.
    let subject = format!("{}{sub}", crate::users::MINTED);
    let ext = match b.ext {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            if v.to_string().len() > MAX_EXT {
                return Err(ApiError::InvalidRequest(format!(
                    "ext is larger than {MAX_EXT} bytes"
                )));
            }
            Some(v)
        }
        Some(_) => {
            return Err(ApiError::InvalidRequest("ext must be a JSON object".into()));
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let device = super::device::device_label(b.device_id.as_deref(), user_agent);
    let who = Identity {
        name: subject,
        display_name: b.name.unwrap_or_else(|| sub.to_string()),
        roles: b.roles,
        ext,
    };
    let tokens = st.service.mint_session(who, &device, &ip).await?;
    let mut r = Json(tokens).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /.well-known/openid-configuration`: the discovery fields that apply to us, so
/// resource-server libraries that start from an issuer URL find the JWKS.
pub async fn openid_configuration(State(st): State<AppState>) -> Json<Value> {
    let iss = st.service.issuer_name().trim_end_matches('/');
    let alg = match st.config.signing {
        Signing::Eddsa => "EdDSA",
        Signing::Hs256 => "HS256",
    };
    Json(json!({
        "issuer": st.service.issuer_name(),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint": format!("{iss}/auth/refresh"),
        "revocation_endpoint": format!("{iss}/auth/revoke"),
        "grant_types_supported": ["refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "access_token_signing_alg_values_supported": [alg],
        "claims_supported": ["iss", "aud", "sub", "sid", "gen", "jti", "iat", "nbf", "exp",
            "name", "roles", "device", "ip", "ext"],
    }))
}

/// `GET /admin/events` (service key): an SSE feed of every revocation this node learns of,
/// so a resource server can refuse a revoked session's tokens at once instead of at `exp`.
/// Events: `ready` `{}`, `revoked` `{"session_id","reason","at_ms"}`, `lagged`
/// `{"missed"}` when the subscriber fell too far behind (treat every cached session as
/// suspect, or reconnect), and `reconnect` `{"retry_ms"}` at graceful shutdown, after which
/// the stream ends. A `: ping` comment every `--heartbeat`.
pub async fn revocation_feed(State(st): State<AppState>, _key: ServiceKey) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

    let rx = st.service.integration().feed.subscribe();
    let ready = futures::stream::once(async { Event::default().event("ready").data("{}") });
    let events = BroadcastStream::new(rx).map(|item| match item {
        Ok(r) => Event::default()
            .event("revoked")
            .data(serde_json::to_string(&r).unwrap_or_default()),
        Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
            .event("lagged")
            .data(json!({ "missed": n }).to_string()),
    });
    let closing = st.service.integration().closing.clone();
    let reconnect = futures::stream::once(async {
        Event::default()
            .event("reconnect")
            .data(json!({ "retry_ms": 1000 }).to_string())
    });
    let stream = ready
        .chain(events.take_until(closing.cancelled_owned()))
        .chain(reconnect)
        .map(Ok::<_, std::convert::Infallible>);
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(st.config.heartbeat).text("ping"))
        .into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

//! `GET /events`: the SSE channel. `ready`, then `tokens` pushes, `revoked` or `reconnect`
//! (then the stream ends), and a `: ping` comment every heartbeat.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::error::ApiResult;
use crate::hub::{Event, Kind, Registration};
use crate::service::Service;

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    ticket: String,
    last_event_id: Option<String>,
}

/// Opens an SSE channel with a single-use ticket.
pub async fn events(
    State(st): State<AppState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let header_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let last_id = header_id.or(q.last_event_id.as_deref());
    let opened = st
        .service
        .open_channel(&q.ticket, last_id, Kind::Sse)
        .await?;
    let ready = json!({
        "session_id": opened.session.sid,
        "connection_id": opened.reg.id.to_string(),
        "heartbeat_secs": st.config.heartbeat.as_secs(),
    });
    let stream = channel_stream(
        st.service.clone(),
        opened.reg,
        ready.to_string(),
        opened.held_exp_ms,
    );
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(st.config.heartbeat).text("ping"))
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

struct ChannelState {
    svc: Arc<Service>,
    reg: Registration,
    ready: Option<String>,
    held_exp_ms: i64,
    done: bool,
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // Runs when the client goes away or the stream ends; the registration drops after.
        self.svc.channel_closed("sse_closed");
    }
}

/// Turns the channel's outbox into SSE events; ends after `revoked` or `reconnect`.
fn channel_stream(
    svc: Arc<Service>,
    reg: Registration,
    ready: String,
    held_exp_ms: i64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = ChannelState {
        svc,
        reg,
        ready: Some(ready),
        held_exp_ms,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(ready) = st.ready.take() {
            return Some((Ok(SseEvent::default().event("ready").data(ready)), st));
        }
        let ev = loop {
            if let Some(ev) = st.reg.outbox.pop() {
                break ev;
            }
            st.reg.outbox.ready().await;
        };
        let out = match ev {
            Event::Tokens(t) => {
                st.svc.metrics.written(t.deadline_ms, st.held_exp_ms);
                st.held_exp_ms = t.access_exp_ms;
                SseEvent::default()
                    .event("tokens")
                    .id(t.id.clone())
                    .data(t.sse_data.clone())
            }
            Event::Revoked(reason) => {
                st.done = true;
                SseEvent::default()
                    .event("revoked")
                    .data(json!({"reason": &*reason}).to_string())
            }
            Event::Reconnect { retry_ms } => {
                st.done = true;
                SseEvent::default()
                    .event("reconnect")
                    .data(json!({"retry_ms": retry_ms}).to_string())
            }
        };
        Some((Ok(out), st))
    })
}

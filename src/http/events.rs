//! `GET /events`: the SSE channel. `ready`, then `tokens` pushes, `revoked` or `reconnect`
//! (then the stream ends), and a `: ping` comment every heartbeat. The frames come from one
//! stream, served either through axum or straight onto the socket ([`super::direct`]), and
//! are encoded by [`super::wire`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::wire::{Ready, Wire};
use super::AppState;
use crate::error::ApiResult;
use crate::hub::{Event, Kind};
use crate::service::{Opened, Service};

/// Query of `GET /events`.
#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    pub ticket: String,
    pub last_event_id: Option<String>,
}

/// Response headers of an SSE channel, whichever way it is served.
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-store"),
    ("x-accel-buffering", "no"),
];

/// Opens an SSE channel with a single-use ticket (the path for connections hyper already holds).
pub async fn events(
    State(st): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // As on the direct path: a query that does not parse carries no ticket (401, in the JSON
    // error shape, not axum's plain-text rejection).
    let q = query.map_or(
        EventsQuery {
            ticket: String::new(),
            last_event_id: None,
        },
        |Query(q)| q,
    );
    let header_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let opened = st
        .service
        .open_channel(
            &q.ticket,
            header_id.or(q.last_event_id.as_deref()),
            Kind::Sse,
        )
        .await?;
    let body = Body::from_stream(
        frames(st.service.clone(), opened, st.config.heartbeat, Wire::Sse).map(Ok::<_, Infallible>),
    );
    let mut resp = Response::new(body);
    for (k, v) in HEADERS {
        resp.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    Ok(resp)
}

struct ChannelState {
    svc: Arc<Service>,
    opened: Opened,
    ready: Option<Bytes>,
    heartbeat: Duration,
    wire: Wire,
    done: bool,
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // Runs when the client goes away or the stream ends; the registration drops after.
        self.svc.channel_closed("sse_closed");
    }
}

/// The channel's frames: `ready`, then its outbox, with a heartbeat comment whenever the
/// channel has been quiet for `heartbeat`; ends after `revoked` or `reconnect`. `wire` is
/// [`Wire::Sse`] or [`Wire::SseChunked`].
pub fn frames(
    svc: Arc<Service>,
    opened: Opened,
    heartbeat: Duration,
    wire: Wire,
) -> impl Stream<Item = Bytes> {
    let ready = wire.ready(&Ready {
        session_id: &opened.session.sid,
        connection_id: opened.reg.id,
        heartbeat_secs: heartbeat.as_secs(),
    });
    let state = ChannelState {
        svc,
        opened,
        ready: Some(ready),
        heartbeat,
        wire,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(ready) = st.ready.take() {
            return Some((ready, st));
        }
        let outbox = st.opened.reg.outbox.clone();
        let ev = loop {
            if let Some(ev) = outbox.pop() {
                break ev;
            }
            tokio::select! {
                _ = outbox.ready() => {}
                _ = tokio::time::sleep(st.heartbeat) => return Some((st.wire.ping(), st)),
            }
        };
        if let Event::Tokens(t) = &ev {
            st.svc.written(t, st.opened.held_exp_ms);
            st.opened.held_exp_ms = t.access_exp_ms;
        }
        st.done = matches!(ev, Event::Revoked(_) | Event::Reconnect { .. });
        let out = st.wire.event(&ev);
        Some((out, st))
    })
}

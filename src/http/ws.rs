//! `GET /ws`: the WebSocket channel. One task per connection selects on the client's frames,
//! the outbox and the heartbeat; small buffers keep an idle connection to a few KiB. Every
//! client frame counts against `--ws-frame-rate` and every byte against the read budget of
//! [`super::limits`]; either exceeded closes 1008 "too many frames".

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::limits::{self, Bucket, ReadMeter};
use super::wire::{Ready, Wire};
use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::hub::{event::parse_event_id, Event, Kind};
use crate::service::{Opened, Service};

/// Largest frame or message a client may send.
const MAX_FRAME: usize = 4096;
/// Read chunk size. Frames up to MAX_FRAME still arrive whole (the buffer grows for them);
/// idle connections, which is nearly all of them, hold only this much.
const READ_BUFFER: usize = 1024;

const CLOSE_REVOKED: u16 = 4001;
const CLOSE_RESTART: u16 = 1012;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
/// Closes a connection silent for two heartbeats (no pong, no frame): "going away", so the
/// client reconnects if it is in fact still there.
const CLOSE_SILENT: u16 = 1001;

#[derive(Deserialize)]
pub struct WsQuery {
    #[serde(default)]
    ticket: String,
}

/// Checks the Origin, takes the ticket, then upgrades.
pub async fn ws(
    State(st): State<AppState>,
    query: Result<Query<WsQuery>, QueryRejection>,
    headers: HeaderMap,
    meter: Option<Extension<ReadMeter>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    // Axum's own rejections are plain text: answer in the error shape of every other route,
    // before the ticket is taken, so a plain GET never spends one.
    let upgrade = upgrade.map_err(|r| {
        ApiError::InvalidRequest(format!(
            "GET /ws needs a WebSocket upgrade: {}",
            r.body_text()
        ))
    })?;
    // A query that does not parse carries no ticket: 401, as on `/events`.
    let q = query.map_or(String::new(), |Query(q)| q.ticket);
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !origin_allowed(&st.config.allowed_origins, origin, host) {
            return Err(ApiError::OriginNotAllowed);
        }
    }
    let opened = st.service.open_channel(&q, None, Kind::Ws).await?;
    let (svc, hb) = (st.service.clone(), st.config.heartbeat);
    let rate = f64::from(st.config.ws_frame_rate.max(1));
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        // Without a ceiling, automatic pongs to a client that floods pings and never reads
        // pile up here without bound.
        .max_write_buffer_size(limits::WS_MAX_WRITE_BUFFER)
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| {
            if let Some(Extension(m)) = meter {
                m.arm();
            }
            run(socket, svc, opened, hb, Bucket::new(5.0 * rate, rate))
        }))
}

/// An exact match against the allow-list; by default the server's own origin (the `Host`
/// the client used, over http or https).
pub fn origin_allowed(allowed: &[String], origin: &str, host: &str) -> bool {
    if allowed.is_empty() {
        return !host.is_empty()
            && (origin == format!("http://{host}") || origin == format!("https://{host}"));
    }
    allowed.iter().any(|a| a == "*" || a == origin)
}

#[derive(Deserialize)]
struct ClientFrame {
    r#type: String,
    id: Option<String>,
}

/// What a client may send on a WebSocket (DESIGN.md "WebSocket").
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// `ack` of a push: `<sid>:<gen>`, when the id parses (an unparseable id is ignored).
    Ack(Option<(String, u64)>),
    /// `renew`: push fresh tokens now.
    Renew,
    /// `ping`: answered `pong`.
    Ping,
}

/// Why a client text frame was refused (the connection is closed 1008).
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not a JSON object with a string `type`.
    Malformed,
    /// A `type` we do not know.
    UnknownType,
}

/// Parses one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientMsg, FrameError> {
    let f: ClientFrame = serde_json::from_str(text).map_err(|_| FrameError::Malformed)?;
    match f.r#type.as_str() {
        "ack" => Ok(ClientMsg::Ack(
            f.id.as_deref()
                .and_then(parse_event_id)
                .map(|(sid, gen)| (sid.to_string(), gen)),
        )),
        "renew" => Ok(ClientMsg::Renew),
        "ping" => Ok(ClientMsg::Ping),
        _ => Err(FrameError::UnknownType),
    }
}

/// A text message from the codec's bytes (always UTF-8: they are made from `str`s).
fn text(bytes: axum::body::Bytes) -> Message {
    Message::Text(axum::extract::ws::Utf8Bytes::try_from(bytes).unwrap_or_default())
}

/// Sends one message. The socket fails a write blocked for two heartbeats (the server's
/// connection IO), which ends the channel.
async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    socket.send(msg).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = send(
        socket,
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    )
    .await;
}

/// Closes 1008 a client over its frame rate or read budget. Such a client often does not
/// read either, so the close frame gets a second to go out, not the write timeout.
async fn close_flood(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        close(socket, CLOSE_POLICY, "too many frames"),
    )
    .await;
}

async fn run(
    mut socket: WebSocket,
    svc: Arc<Service>,
    opened: Opened,
    heartbeat: Duration,
    mut frames: Bucket,
) {
    let Opened {
        reg,
        session,
        mut held_exp_ms,
    } = opened;
    let ready = Wire::Ws.ready(&Ready {
        session_id: &session.sid,
        connection_id: reg.id,
        heartbeat_secs: heartbeat.as_secs(),
    });
    let cause = 'conn: {
        if !send(&mut socket, text(ready)).await {
            break 'conn "ws_write_failed";
        }
        // Any frame from the client (a pong included) proves it is there.
        let mut heard = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(heard + heartbeat, heartbeat);
        loop {
            tokio::select! {
                frame = socket.recv() => { heard = tokio::time::Instant::now();
                if matches!(frame, Some(Ok(_))) && !frames.take(1.0) {
                    close_flood(&mut socket).await;
                    break 'conn "ws_flood";
                }
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let reply = match parse_client_frame(&text) {
                            Ok(ClientMsg::Ack(Some((sid, gen)))) if sid == reg.sid => {
                                // Boxed: inlined, this future would make every idle connection's state larger.
                                let _ = Box::pin(svc.confirm(&sid, gen)).await;
                                None
                            }
                            Ok(ClientMsg::Ack(_)) => None,
                            Ok(ClientMsg::Renew) => (!Box::pin(svc.request_push(&reg.sid)).await)
                                .then(|| json!({"type": "error", "error": "rate_limited"}).to_string()),
                            Ok(ClientMsg::Ping) => Some(json!({"type": "pong"}).to_string()),
                            Err(FrameError::Malformed) => {
                                close(&mut socket, CLOSE_POLICY, "malformed frame").await;
                                break 'conn "ws_malformed";
                            }
                            Err(FrameError::UnknownType) => {
                                close(&mut socket, CLOSE_POLICY, "unknown frame type").await;
                                break 'conn "ws_malformed";
                            }
                        };
                        if let Some(r) = reply {
                            if !send(&mut socket, Message::Text(r.into())).await {
                                break 'conn "ws_write_failed";
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        close(&mut socket, CLOSE_POLICY, "binary frames are not accepted").await;
                        break 'conn "ws_binary";
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break 'conn "ws_closed",
                    Some(Err(e)) => {
                        // tungstenite reports an oversize frame or message as a capacity error.
                        let text = e.to_string();
                        if text.contains(limits::READ_RATE_EXCEEDED) {
                            close_flood(&mut socket).await;
                            break 'conn "ws_flood";
                        }
                        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                            close(&mut socket, CLOSE_TOO_BIG, "frame too big").await;
                            break 'conn "ws_too_big";
                        }
                        close(&mut socket, CLOSE_POLICY, "protocol error").await;
                        break 'conn "ws_protocol_error";
                    }
                }},
                _ = reg.outbox.ready() => {
                    while let Some(ev) = reg.outbox.pop() {
                        let sent = send(&mut socket, text(Wire::Ws.event(&ev))).await;
                        match ev {
                            Event::Tokens(t) => {
                                if !sent {
                                    break 'conn "ws_write_failed";
                                }
                                svc.written(&t, held_exp_ms);
                                held_exp_ms = t.access_exp_ms;
                            }
                            Event::Revoked(_) => {
                                close(&mut socket, CLOSE_REVOKED, "revoked").await;
                                break 'conn "revoked";
                            }
                            Event::Reconnect { .. } => {
                                close(&mut socket, CLOSE_RESTART, "server restart").await;
                                break 'conn "reconnect";
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    if heard.elapsed() >= 2 * heartbeat {
                        close(&mut socket, CLOSE_SILENT, "no pong for two heartbeats").await;
                        break 'conn "ws_silent";
                    }
                    if !send(&mut socket, Message::Ping(Default::default())).await {
                        break 'conn "ws_write_failed";
                    }
                }
            }
        }
    };
    svc.channel_closed(cause);
    drop(reg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn client_frames() {
        assert_eq!(
            parse_client_frame(r#"{"type":"ack","id":"s:3"}"#),
            Ok(ClientMsg::Ack(Some(("s".into(), 3))))
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"ack","id":"nope"}"#),
            Ok(ClientMsg::Ack(None))
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"ping"}"#),
            Ok(ClientMsg::Ping)
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"renew","x":1}"#),
            Ok(ClientMsg::Renew)
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"hi"}"#),
            Err(FrameError::UnknownType)
        );
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"type":1}"#,
            "{\"type\":\"ping\"",
        ] {
            assert_eq!(parse_client_frame(bad), Err(FrameError::Malformed), "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary text (what tungstenite hands over as a text frame) never panics; it is
        /// one of the messages or one of the two errors.
        #[test]
        fn arbitrary_text_frames_are_parsed_or_refused(text in "\\PC{0,256}") {
            let _ = parse_client_frame(&text);
        }

        /// Arbitrary JSON-looking frames: known types parse, others are refused by type.
        #[test]
        fn json_frames_of_any_type(kind in "[a-z]{0,8}", id in proptest::option::of("\\PC{0,40}")) {
            let frame = serde_json::json!({"type": kind, "id": id}).to_string();
            let got = parse_client_frame(&frame);
            match kind.as_str() {
                "ack" | "renew" | "ping" => prop_assert!(got.is_ok()),
                _ => prop_assert_eq!(got, Err(FrameError::UnknownType)),
            }
        }
    }

    #[test]
    fn origin_rules() {
        assert!(origin_allowed(
            &[],
            "http://127.0.0.1:8080",
            "127.0.0.1:8080"
        ));
        assert!(!origin_allowed(
            &[],
            "http://evil.example",
            "127.0.0.1:8080"
        ));
        assert!(!origin_allowed(
            &[],
            "http://127.0.0.1:8080.evil",
            "127.0.0.1:8080"
        ));
        assert!(origin_allowed(&["*".into()], "http://x", "h"));
        assert!(origin_allowed(&["http://a".into()], "http://a", "h"));
        assert!(!origin_allowed(&["http://a".into()], "http://a/", "h"));
    }
}

//! The wire codec for channel frames: the one place where a channel event becomes bytes, for
//! every transport. SSE through hyper (which adds the chunking), SSE written straight on the
//! socket as HTTP/1.1 chunks ([`super::direct`]), and WebSocket text payloads. A `tokens`
//! push is encoded at most once per node and wire format (cached on the push) and shared by
//! every channel of its session; its JSON body was serialised once when it was made.

use axum::body::Bytes;
use serde_json::json;

use crate::hub::{Event, TokensPush};

/// A wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// SSE frames; hyper frames the response body.
    Sse = 0,
    /// SSE frames, each an HTTP/1.1 chunk (the direct path writes the response itself).
    SseChunked = 1,
    /// WebSocket text payloads: the JSON object with `type` (and `id`) first.
    Ws = 2,
}

/// What the `ready` frame says.
pub struct Ready<'a> {
    pub session_id: &'a str,
    pub connection_id: u64,
    pub heartbeat_secs: u64,
}

impl Wire {
    /// The first frame of a channel.
    pub fn ready(self, r: &Ready<'_>) -> Bytes {
        let body = json!({
            "session_id": r.session_id,
            "connection_id": r.connection_id.to_string(),
            "heartbeat_secs": r.heartbeat_secs,
        })
        .to_string();
        self.frame("ready", None, &body)
    }

    /// An event from the channel's outbox.
    pub fn event(self, ev: &Event) -> Bytes {
        match ev {
            Event::Tokens(push) => self.tokens(push),
            Event::Revoked(reason) => {
                self.frame("revoked", None, &json!({ "reason": &**reason }).to_string())
            }
            Event::Reconnect { retry_ms } => self.frame(
                "reconnect",
                None,
                &json!({ "retry_ms": retry_ms }).to_string(),
            ),
        }
    }

    /// A `tokens` push, encoded on first use for this wire format and shared after.
    pub fn tokens(self, push: &TokensPush) -> Bytes {
        push.frames.0[self as usize]
            .get_or_init(|| self.frame("tokens", Some(&push.id), &push.body))
            .clone()
    }

    /// The SSE heartbeat comment (WebSocket heartbeats are ping control frames).
    pub fn ping(self) -> Bytes {
        match self {
            Wire::SseChunked => Bytes::from_static(b"8\r\n: ping\n\n\r\n"),
            _ => Bytes::from_static(b": ping\n\n"),
        }
    }

    /// One frame. `body` is a JSON object (our JSON never holds a newline, so one `data:`
    /// line carries it).
    fn frame(self, kind: &str, id: Option<&str>, body: &str) -> Bytes {
        match self {
            Wire::Sse => Bytes::from(sse(kind, id, body)),
            Wire::SseChunked => {
                let frame = sse(kind, id, body);
                Bytes::from(format!("{:x}\r\n{frame}\r\n", frame.len()))
            }
            Wire::Ws => {
                let mut s = String::with_capacity(body.len() + 64);
                s.push_str("{\"type\":");
                s.push_str(&json!(kind).to_string());
                if let Some(id) = id {
                    s.push_str(",\"id\":");
                    s.push_str(&json!(id).to_string());
                }
                let rest = body.trim_start().strip_prefix('{').unwrap_or("}");
                if !rest.trim_start().starts_with('}') {
                    s.push(',');
                }
                s.push_str(rest);
                Bytes::from(s)
            }
        }
    }
}

fn sse(kind: &str, id: Option<&str>, data: &str) -> String {
    let mut s = String::with_capacity(kind.len() + data.len() + 32);
    s.push_str("event: ");
    s.push_str(kind);
    s.push('\n');
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> TokensPush {
        TokensPush {
            sid: "s1".into(),
            id: "s1:7".into(),
            gen: 7,
            deadline_ms: 0,
            access_exp_ms: 0,
            body: r#"{"access_token":"a","reason":"renewal"}"#.into(),
            frames: Default::default(),
        }
    }

    #[test]
    fn one_event_three_wire_formats() {
        let p = push();
        assert_eq!(
            &Wire::Sse.tokens(&p)[..],
            b"event: tokens\nid: s1:7\ndata: {\"access_token\":\"a\",\"reason\":\"renewal\"}\n\n"
        );
        let chunk = Wire::SseChunked.tokens(&p);
        let sse = Wire::Sse.tokens(&p);
        assert_eq!(
            &chunk[..],
            [format!("{:x}\r\n", sse.len()).as_bytes(), &sse[..], b"\r\n"].concat()
        );
        let ws: serde_json::Value = serde_json::from_slice(&Wire::Ws.tokens(&p)).unwrap();
        assert_eq!(
            ws,
            json!({"type": "tokens", "id": "s1:7", "access_token": "a", "reason": "renewal"})
        );
        let ping = Wire::SseChunked.ping();
        assert!(ping.starts_with(format!("{:x}\r\n", Wire::Sse.ping().len()).as_bytes()));
    }

    #[test]
    fn a_push_is_encoded_once_per_wire_format() {
        let p = push();
        let a = Wire::Ws.tokens(&p);
        let b = Wire::Ws.tokens(&p);
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the second channel shares the first's bytes"
        );
        assert!(
            p.frames.0[Wire::Sse as usize].get().is_none(),
            "SSE never asked"
        );
    }

    #[test]
    fn closing_events() {
        let ws: serde_json::Value =
            serde_json::from_slice(&Wire::Ws.event(&Event::Reconnect { retry_ms: 300 })).unwrap();
        assert_eq!(ws, json!({"type": "reconnect", "retry_ms": 300}));
        assert_eq!(
            &Wire::Sse.event(&Event::Revoked("logout".into()))[..],
            b"event: revoked\ndata: {\"reason\":\"logout\"}\n\n"
        );
    }
}

//! What travels down a channel: pushed tokens, revocation, reconnect. Token payloads are
//! serialised once per push and shared by every channel of the session.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::tokens::TokenResponse;

/// Why tokens were pushed (DESIGN.md `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Renewal,
    ClaimsChanged,
    Resume,
    Requested,
}

/// One push of tokens, ready to write as SSE data or a WebSocket frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensPush {
    pub sid: String,
    /// `<sid>:<gen>`.
    pub id: String,
    pub gen: u64,
    /// When the renewal was due: push lag is measured from here.
    pub deadline_ms: Millis,
    pub access_exp_ms: Millis,
    /// TokenResponse + reason, as SSE `data`.
    pub sse_data: String,
    /// The same with `type` and `id`, as a WebSocket text frame.
    pub ws_text: String,
}

impl TokensPush {
    /// Serialises a push of `tokens` for generation `gen`.
    pub fn new(
        tokens: &TokenResponse,
        gen: u64,
        reason: Reason,
        deadline_ms: Millis,
        access_exp_ms: Millis,
    ) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            tokens: &'a TokenResponse,
            reason: Reason,
        }
        #[derive(Serialize)]
        struct Frame<'a> {
            r#type: &'static str,
            id: &'a str,
            #[serde(flatten)]
            body: &'a Body<'a>,
        }
        let id = format!("{}:{gen}", tokens.session_id);
        let body = Body { tokens, reason };
        let sse_data = serde_json::to_string(&body).unwrap_or_default();
        let ws_text = serde_json::to_string(&Frame {
            r#type: "tokens",
            id: &id,
            body: &body,
        })
        .unwrap_or_default();
        TokensPush {
            sid: tokens.session_id.clone(),
            id,
            gen,
            deadline_ms,
            access_exp_ms,
            sse_data,
            ws_text,
        }
    }
}

/// An event for one channel.
#[derive(Debug, Clone)]
pub enum Event {
    Tokens(Arc<TokensPush>),
    /// The session ended (`logout`, `reuse_detected`, `admin`, `expired`): send and close.
    Revoked(Arc<str>),
    /// This server is going away: send, close, and let the client come back after `retry_ms`.
    Reconnect {
        retry_ms: u64,
    },
}

/// Parses an SSE/WS event id `<sid>:<gen>`.
pub fn parse_event_id(id: &str) -> Option<(&str, u64)> {
    let (sid, gen) = id.rsplit_once(':')?;
    Some((sid, gen.parse().ok()?))
}

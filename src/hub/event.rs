//! What travels down a channel: pushed tokens, revocation, reconnect. A push's JSON body is
//! serialised once; its wire frames (made by `http::wire`, the one codec) are cached on the
//! push, so each is encoded once per node and transport and shared by every channel.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

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
    /// TokenResponse + reason, as one JSON object.
    pub body: String,
    /// Wire frames of this push, one slot per wire format, filled on first use.
    #[serde(skip)]
    pub frames: Frames,
}

/// Cached wire frames, indexed by wire format (see `http::wire::Wire`).
#[derive(Debug, Clone, Default)]
pub struct Frames(pub [OnceLock<Bytes>; 3]);

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
        let id = format!("{}:{gen}", tokens.session_id);
        let body = serde_json::to_string(&Body { tokens, reason }).unwrap_or_default();
        TokensPush {
            sid: tokens.session_id.clone(),
            id,
            gen,
            deadline_ms,
            access_exp_ms,
            body,
            frames: Frames::default(),
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

//! The one source of wall-clock time, in unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds. Sessions, tickets and tokens all use this unit.
pub type Millis = i64;

/// Current unix time in milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Current unix time in whole seconds, for JWT claims.
pub fn now_secs() -> i64 {
    now_ms() / 1000
}

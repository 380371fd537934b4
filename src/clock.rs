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

/// A source of unix-millisecond time, so the rotation and scheduling paths can run against a
/// manual clock in tests (no real sleeps to cross grace, idle or absolute lifetimes).
pub trait Clock: Send + Sync + 'static {
    /// Current unix time in milliseconds.
    fn now_ms(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock standing at unix time `start_ms`.
    pub fn new(start_ms: Millis) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(start_ms))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

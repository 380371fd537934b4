//! What the admin console shows beyond the store: per-session last delivery (when, and the
//! margin left on the token it replaced) and deliveries per minute, as seen by this node.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::clock::Millis;

/// The last `tokens` event written to any channel of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastPush {
    pub at_ms: Millis,
    pub gen: u64,
    /// Access lifetime left on the replaced token when written; `None` when unknown.
    pub margin_ms: Option<Millis>,
}

/// Console statistics; cheap enough to update on every write.
#[derive(Default)]
pub struct Stats {
    last: DashMap<String, LastPush>,
    per_minute: RateWindow,
}

impl Stats {
    /// Records a `tokens` event written to a channel of `sid`.
    pub fn written(&self, sid: &str, push: LastPush) {
        self.last.insert(sid.to_string(), push);
        self.per_minute.add(push.at_ms);
    }

    /// The last delivery to a session, if any since this process started.
    pub fn last_push(&self, sid: &str) -> Option<LastPush> {
        self.last.get(sid).map(|p| *p)
    }

    /// Deliveries written in the last 60 seconds.
    pub fn pushes_last_minute(&self, now_ms: Millis) -> u64 {
        self.per_minute.sum(now_ms)
    }

    /// Forgets sessions for which `keep` says no (called when pruning).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|sid, _| keep(sid));
    }
}

/// Counts per second over the last minute in 60 buckets, so recording never allocates.
/// Updates race benignly: a display number may be off by a write or two at a bucket's turn.
struct RateWindow {
    stamps: [AtomicI64; 60],
    counts: [AtomicU64; 60],
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow {
            stamps: std::array::from_fn(|_| AtomicI64::new(-1)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RateWindow {
    fn add(&self, now_ms: Millis) {
        let sec = now_ms.div_euclid(1000);
        let i = sec.rem_euclid(60) as usize;
        if self.stamps[i].swap(sec, Ordering::AcqRel) != sec {
            self.counts[i].store(0, Ordering::Release);
        }
        self.counts[i].fetch_add(1, Ordering::AcqRel);
    }

    fn sum(&self, now_ms: Millis) -> u64 {
        let sec = now_ms.div_euclid(1000);
        (0..60)
            .filter(|&i| sec - self.stamps[i].load(Ordering::Acquire) < 60)
            .map(|i| self.counts[i].load(Ordering::Acquire))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_counts_the_last_minute_only() {
        let w = RateWindow::default();
        w.add(1_000);
        w.add(1_500);
        w.add(30_000);
        assert_eq!(w.sum(30_000), 3);
        assert_eq!(w.sum(61_000), 1, "the first second fell out of the window");
        w.add(61_200); // same bucket as second 1: starts over
        assert_eq!(w.sum(61_200), 2);
        assert_eq!(w.sum(200_000), 0);
    }

    #[test]
    fn last_push_is_kept_per_session() {
        let s = Stats::default();
        let p = LastPush {
            at_ms: 5,
            gen: 2,
            margin_ms: Some(14_000),
        };
        s.written("a", p);
        assert_eq!(s.last_push("a"), Some(p));
        s.retain(|sid| sid != "a");
        assert_eq!(s.last_push("a"), None);
    }
}

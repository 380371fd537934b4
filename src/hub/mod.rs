//! Live channels: the registry of every open SSE/WS connection by session and user, with
//! the channel limits, plus the renewal scheduler and the bus that carries events between nodes.
//! Every registration holds a token of the server's task tracker, so shutdown waits for each
//! channel to write its `reconnect` and close, whichever HTTP path serves it.

pub mod bus;
pub mod event;
pub mod outbox;
pub mod scheduler;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rand::Rng;
use tokio_util::task::task_tracker::{TaskTracker, TaskTrackerToken};

pub use event::{Event, Reason, TokensPush};
pub use outbox::Outbox;

/// Channel transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    Ws,
}

impl Kind {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Ws => "ws",
        }
    }
}

struct Channel {
    id: u64,
    kind: Kind,
    outbox: Arc<Outbox>,
}

/// Channel caps (DESIGN.md "Limits").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_session: usize,
    pub per_user: usize,
    pub total: usize,
}

/// Which limit refused a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Session,
    User,
    Total,
}

/// The registry. Map guards are never held across an await.
pub struct Hub {
    sessions: DashMap<String, Vec<Channel>>,
    per_user: DashMap<String, usize>,
    total: AtomicUsize,
    by_kind: [AtomicUsize; 2],
    next_id: AtomicU64,
    limits: Limits,
    /// The server's tracker: a live channel counts as one of its tasks.
    tasks: TaskTracker,
    /// Set once shutdown began: a channel registered after that gets `reconnect` at once.
    closing: AtomicBool,
}

/// A registered channel; dropping it unregisters (so a vanished client never lingers).
pub struct Registration {
    hub: Arc<Hub>,
    pub sid: String,
    pub user: String,
    pub id: u64,
    pub kind: Kind,
    pub outbox: Arc<Outbox>,
    /// Keeps shutdown waiting until this channel is gone.
    _task: TaskTrackerToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self);
    }
}

impl Hub {
    /// An empty hub enforcing `limits`; each channel counts as a task of `tasks`.
    pub fn new(limits: Limits, tasks: TaskTracker) -> Self {
        Hub {
            sessions: DashMap::new(),
            per_user: DashMap::new(),
            total: AtomicUsize::new(0),
            by_kind: [AtomicUsize::new(0), AtomicUsize::new(0)],
            next_id: AtomicU64::new(1),
            limits,
            tasks,
            closing: AtomicBool::new(false),
        }
    }

    /// Adds a channel, or says which limit refuses it; channels already open are untouched.
    /// Returns the registration and whether it is the session's first channel here.
    pub fn register(
        self: &Arc<Self>,
        sid: &str,
        user: &str,
        kind: Kind,
    ) -> Result<(Registration, bool), LimitHit> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.limits.total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::Total);
        }
        let mut user_entry = self.per_user.entry(user.to_string()).or_insert(0);
        if *user_entry >= self.limits.per_user {
            drop(user_entry);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::User);
        }
        let outbox = Arc::new(Outbox::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut chans = self.sessions.entry(sid.to_string()).or_default();
        if chans.len() >= self.limits.per_session {
            drop(chans);
            drop(user_entry);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::Session);
        }
        let first = chans.is_empty();
        chans.push(Channel {
            id,
            kind,
            outbox: outbox.clone(),
        });
        *user_entry += 1;
        self.by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
        // Checked while the session's shard is locked: `close` either saw this channel in
        // its sweep or set the flag before this read, so no channel misses `reconnect`.
        if self.closing.load(Ordering::SeqCst) {
            outbox.push(reconnect());
        }
        drop(chans);
        let reg = Registration {
            hub: self.clone(),
            sid: sid.to_string(),
            user: user.to_string(),
            id,
            kind,
            outbox,
            _task: self.tasks.token(),
        };
        Ok((reg, first))
    }

    fn unregister(&self, r: &Registration) {
        if let Entry::Occupied(mut e) = self.sessions.entry(r.sid.clone()) {
            e.get_mut().retain(|c| c.id != r.id);
            if e.get().is_empty() {
                e.remove();
            }
        }
        if let Entry::Occupied(mut e) = self.per_user.entry(r.user.clone()) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.by_kind[r.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// Queues `ev` on every channel of the session here; returns how many got it.
    pub fn deliver(&self, sid: &str, ev: &Event) -> usize {
        match self.sessions.get(sid) {
            Some(chans) => {
                for c in chans.iter() {
                    c.outbox.push(ev.clone());
                }
                chans.len()
            }
            None => 0,
        }
    }

    /// Shutdown: every channel, and any registered from now on, gets `reconnect` with a
    /// jittered delay (so clients do not all come back in the same millisecond). Returns how
    /// many channels were open.
    pub fn close(&self) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let mut n = 0;
        for chans in self.sessions.iter() {
            for c in chans.iter() {
                c.outbox.push(reconnect());
                n += 1;
            }
        }
        n
    }

    /// Whether the session has a channel on this node.
    pub fn has_channels(&self, sid: &str) -> bool {
        self.sessions.contains_key(sid)
    }

    /// (SSE, WS) channels of a session on this node.
    pub fn counts(&self, sid: &str) -> (usize, usize) {
        self.sessions.get(sid).map_or((0, 0), |chans| {
            let sse = chans.iter().filter(|c| c.kind == Kind::Sse).count();
            (sse, chans.len() - sse)
        })
    }

    /// Every session with channels on this node: (sid, SSE, WS).
    pub fn snapshot(&self) -> Vec<(String, usize, usize)> {
        self.sessions
            .iter()
            .map(|e| {
                let sse = e.value().iter().filter(|c| c.kind == Kind::Sse).count();
                (e.key().clone(), sse, e.value().len() - sse)
            })
            .collect()
    }

    /// Live channels of a kind on this node.
    pub fn live(&self, kind: Kind) -> usize {
        self.by_kind[kind as usize].load(Ordering::Relaxed)
    }
}

fn reconnect() -> Event {
    Event::Reconnect {
        retry_ms: rand::rng().random_range(250..2250),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_without_touching_open_channels() {
        let hub = Arc::new(Hub::new(
            Limits {
                per_session: 2,
                per_user: 3,
                total: 4,
            },
            TaskTracker::new(),
        ));
        let a1 = hub.register("a", "u", Kind::Sse).unwrap();
        assert!(a1.1, "first channel of the session");
        let a2 = hub.register("a", "u", Kind::Ws).unwrap();
        assert!(!a2.1);
        assert_eq!(
            hub.register("a", "u", Kind::Ws).err(),
            Some(LimitHit::Session)
        );
        let _b = hub.register("b", "u", Kind::Ws).unwrap();
        assert_eq!(hub.register("c", "u", Kind::Ws).err(), Some(LimitHit::User));
        let _d = hub.register("d", "v", Kind::Ws).unwrap();
        assert_eq!(
            hub.register("e", "w", Kind::Ws).err(),
            Some(LimitHit::Total)
        );
        assert_eq!(hub.counts("a"), (1, 1));
        assert_eq!(hub.deliver("a", &Event::Revoked("x".into())), 2);
        drop(a1);
        drop(a2);
        assert!(!hub.has_channels("a"));
        assert_eq!(hub.live(Kind::Ws), 2);
        assert!(hub.register("e", "w", Kind::Sse).is_ok());
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;

    #[test]
    fn close_reaches_open_and_later_channels_and_tracks_them() {
        let tasks = TaskTracker::new();
        let hub = Arc::new(Hub::new(
            Limits {
                per_session: 8,
                per_user: 8,
                total: 8,
            },
            tasks.clone(),
        ));
        let (a, _) = hub.register("a", "u", Kind::Sse).unwrap();
        assert_eq!(tasks.len(), 1, "a channel is a tracked task");
        assert_eq!(hub.close(), 1);
        let (b, _) = hub.register("b", "u", Kind::Ws).unwrap();
        for r in [&a, &b] {
            assert!(matches!(r.outbox.pop(), Some(Event::Reconnect { .. })));
        }
        drop((a, b));
        assert!(tasks.is_empty());
    }
}

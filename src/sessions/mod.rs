//! Session records, the store trait with its backends, and the compare-and-set loop that
//! applies the rotation rule atomically whatever the backend.

pub mod local;
pub mod memory;
pub mod redis;
pub mod rotation;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Millis, SystemClock};
use crate::users::Identity;
pub use local::Ephemeral;
pub use rotation::{Outcome, Policy, Use};

/// One login: what DESIGN.md's session record holds. Refresh tokens are derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub sid: String,
    pub user: String,
    pub device: String,
    pub ip: String,
    /// Secret input of every refresh token's MAC; never leaves the store.
    pub nonce: String,
    pub current_gen: u64,
    pub confirmed_gen: u64,
    pub confirmed_at: Millis,
    pub rotated_at: Millis,
    pub created_at: Millis,
    pub last_used_at: Millis,
    /// Expiry of the access token last pushed (or issued at login): the renewal clock.
    pub push_exp_ms: Millis,
    /// When the last push was made (login counts): the floor between two pushes.
    #[serde(default)]
    pub pushed_at: Millis,
    /// Expiry of the newest access token issued by any path (login, refresh, push): what a
    /// client opening a channel holds at best, for the delivery margin.
    #[serde(default)]
    pub issued_exp_ms: Millis,
    pub revoked: Option<String>,
    pub revoked_at: Millis,
    /// Bumped on every change; the compare-and-set key.
    pub version: u64,
    /// Who the tokens are about, for a user outside the users file (minted with the service
    /// key or vouched for by the login hook): kept with the session so every node that shares
    /// the store re-issues the same claims. `None` for users-file users, whose identity (and
    /// current roles) the users file gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<Identity>,
}

impl Session {
    /// A fresh session at generation 0, confirmed (the client holds what login returned).
    pub fn new(
        sid: String,
        user: String,
        device: String,
        ip: String,
        nonce: String,
        now: Millis,
        access_exp_ms: Millis,
    ) -> Self {
        Session {
            sid,
            user,
            device,
            ip,
            nonce,
            current_gen: 0,
            confirmed_gen: 0,
            confirmed_at: now,
            rotated_at: now,
            created_at: now,
            last_used_at: now,
            push_exp_ms: access_exp_ms,
            pushed_at: now,
            issued_exp_ms: access_exp_ms,
            revoked: None,
            revoked_at: 0,
            version: 0,
            who: None,
        }
    }
}

/// What a channel ticket grants: a channel for `sid`, whose client proved generation `gen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketGrant {
    pub sid: String,
    pub gen: u64,
}

/// Where a shared store stands: how many revocations and role changes it has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Epoch {
    pub revocations: u64,
    pub roles: u64,
}

/// Store failures. `Unavailable` becomes 503 with `Retry-After`, never `invalid_grant`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

/// Store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Persistence of sessions. Backends only load and compare-and-set; the rules live in
/// [`rotation`].
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Saves a new session.
    async fn insert(&self, s: &Session) -> StoreResult<()>;
    /// Loads a session by id.
    async fn load(&self, sid: &str) -> StoreResult<Option<Session>>;
    /// Replaces the session iff its stored version is still `expected`; false when it moved.
    async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool>;
    /// Sessions not revoked, optionally of one user (callers filter expiry).
    async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>>;
    /// Ids of sessions revoked at or after `since`, to reject their access tokens after a restart.
    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>>;
    /// Counters the store bumps with every revocation and every role change, when several
    /// nodes share it: each node compares them on a short interval and, when one moved,
    /// catches up from the store, so a bus message it missed delays nothing by more than that
    /// interval. `None`: the store is this node's alone, there is nothing to catch up on.
    async fn epoch(&self) -> StoreResult<Option<Epoch>> {
        Ok(None)
    }
    /// Drops what can never be used again (revoked or expired sessions) from memory, and old
    /// revoked rows from disk. Returns how many sessions were dropped from memory.
    async fn forget_ended(&self, _now: Millis, _policy: &Policy) -> StoreResult<usize> {
        Ok(0)
    }
}

/// Single-use channel tickets.
#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Stores a single-use ticket.
    async fn put_ticket(&self, ticket: &str, grant: &TicketGrant, ttl: Duration)
        -> StoreResult<()>;
    /// Takes a ticket: exactly one caller ever gets `Some`.
    async fn take_ticket(&self, ticket: &str) -> StoreResult<Option<TicketGrant>>;
}

/// Fixed-window counters (failed logins, tickets per session), shared by every node that
/// shares the store. A window starts with its first hit and is not extended by later ones.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Counts one more hit for `key`, atomically: returns the hits in the window, this one
    /// included, and the window's seconds left. Callers decide on the returned count, so N
    /// racing callers see N distinct counts.
    async fn hit(&self, key: &str, window: Duration) -> StoreResult<(u32, u64)>;
    /// Takes one hit back (a reserved login attempt that succeeded).
    async fn give_back(&self, key: &str) -> StoreResult<()>;
    /// Hits in `key`'s live window (0 once it has ended), without counting one.
    async fn count(&self, key: &str) -> StoreResult<u32>;
}

/// Role overrides set by an admin.
#[async_trait]
pub trait RoleStore: Send + Sync + 'static {
    /// Roles set by an admin, overriding the users file.
    async fn roles(&self, user: &str) -> StoreResult<Option<Vec<String>>>;
    /// Records roles set by an admin.
    async fn set_roles(&self, user: &str, roles: &[String]) -> StoreResult<()>;
    /// Roles set for each of `users`, in order (a shared store answers in one round trip).
    async fn roles_many(&self, users: &[String]) -> StoreResult<Vec<Option<Vec<String>>>> {
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            out.push(self.roles(u).await?);
        }
        Ok(out)
    }
}

/// Channels each node holds, per session, kept in a shared store for a short time so any node's
/// admin views show the whole cluster.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Replaces what `node` holds (sid, SSE, WS); forgotten after `ttl` unless renewed.
    async fn put_presence(
        &self,
        _node: &str,
        _channels: &[(String, usize, usize)],
        _ttl: Duration,
    ) -> StoreResult<()> {
        Ok(())
    }
    /// Every node's last word that has not expired: (node, its channels).
    async fn presence(&self) -> StoreResult<Vec<(String, Vec<(String, usize, usize)>)>> {
        Ok(vec![])
    }
}

/// Everything a node needs from its store: a backend is one only when it implements every
/// job, so a missing one fails to compile rather than at run time.
pub trait Store: SessionStore + TicketStore + Counters + RoleStore + Presence {}

impl<T: SessionStore + TicketStore + Counters + RoleStore + Presence> Store for T {}

/// A Redis client and connection, for the cluster bus, when the store is Redis.
pub type RedisHandles = Option<(::redis::Client, ::redis::aio::ConnectionManager)>;

/// Opens the store named by `--store`; `max_ttl` is the absolute session lifetime.
pub async fn open(
    spec: &str,
    data_dir: &std::path::Path,
    max_ttl: Duration,
) -> Result<(Arc<dyn Store>, RedisHandles), String> {
    match spec {
        "memory" => Ok((Arc::new(memory::MemoryStore::default()), None)),
        "sqlite" => {
            let s = sqlite::SqliteStore::open(&data_dir.join("tokenpush.sqlite3"))
                .map_err(|e| format!("sqlite: {e}"))?;
            Ok((Arc::new(s), None))
        }
        s if s.starts_with("redis://") || s.starts_with("rediss://") => {
            let s = redis::RedisStore::open(s, max_ttl)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            s.check_version().await.map_err(|e| format!("redis: {e}"))?;
            let handles = Some((
                s.client.clone(),
                redis::manager(&s.client)
                    .await
                    .map_err(|e| format!("redis: {e}"))?,
            ));
            Ok((Arc::new(s), handles))
        }
        other => Err(format!(
            "unknown --store {other:?}: use sqlite, memory or redis://host:port/db"
        )),
    }
}

/// The store plus the rules: every change is load → apply → compare-and-set, retried on conflict.
/// Carries the clock the rules read, so tests can run them on a manual one.
#[derive(Clone)]
pub struct Sessions {
    pub store: Arc<dyn Store>,
    pub policy: Policy,
    clock: Arc<dyn Clock>,
}

impl Sessions {
    /// Wraps a store with the lifetimes of `policy`, on the wall clock.
    pub fn new(store: Arc<dyn Store>, policy: Policy) -> Self {
        Sessions {
            store,
            policy,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same on another clock (tests: [`crate::clock::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Unix milliseconds on this clock.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Applies `f` to the session atomically. Returns the session after `f` and its result,
    /// or `None` when there is no such session.
    pub async fn update<R>(
        &self,
        sid: &str,
        mut f: impl FnMut(&mut Session) -> R,
    ) -> StoreResult<Option<(Session, R)>> {
        // Conflicts mean another caller advanced the session; each retry sees its result, and
        // the rule converges within a couple of rounds, so the bound is only a safety net.
        for _ in 0..64 {
            let Some(mut s) = self.store.load(sid).await? else {
                return Ok(None);
            };
            let before = s.version;
            let r = f(&mut s);
            if s.version == before || self.store.cas(&s, before).await? {
                return Ok(Some((s, r)));
            }
            tokio::task::yield_now().await;
        }
        Err(StoreError::Internal(format!(
            "session {sid} kept changing under compare-and-set"
        )))
    }
}

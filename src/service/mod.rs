//! The token service: what the HTTP handlers and the scheduler ask for. Login, redeeming and
//! confirming refresh tokens, tickets, channel opening, renewal pushes and revocation.
//! The push path reads top to bottom: [`Service::renew`] → store CAS → hub fan-out + bus.
//!
//! `auth`: login, refresh, tickets. `push`: channels and renewals. `admin`: revocation, roles.

mod admin;
mod auth;
pub mod integration;
mod push;
pub mod stats;
mod view;

pub use admin::RoleChange;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::Rng;

use crate::clock::{now_ms, Millis};
use crate::error::{ApiError, ApiResult};
use crate::hub::bus::{Bus, BusEvent};
use crate::hub::scheduler::Scheduler;
use crate::hub::{
    event::parse_event_id, Event, Hub, Kind, LimitHit, Reason, Registration, TokensPush,
};
use crate::metrics::Metrics;
use crate::sessions::{rotation::REUSE, Outcome, Session, Sessions, TicketGrant, Use};
use crate::tokens::{random_id, Issuer, RefreshTokens, TokenResponse};
use crate::users::{Directory, Identity};

/// How often every node compares the store's revocation and roles epoch (and catches up when
/// it moved): the bound on how long a missed bus message can go unnoticed.
pub const CATCH_UP_EVERY: Duration = Duration::from_millis(500);

/// How often every node tells the store which channels it holds (cluster-wide admin views);
/// what it said is forgotten after three times that, so a node that died drops out.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(2);

/// Clock difference between nodes allowed for when looking back for revocations.
const CLOCK_SKEW_MS: Millis = 10_000;

/// How often every node re-reads its signing keys (SIGHUP reloads at once).
pub const KEY_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// How long a retired signing key outlives its last possible token beyond the reload
/// interval: clock skew between the node that rotated and the node that reads.
pub const RETIRED_KEY_LEEWAY: Duration = Duration::from_secs(10);

/// Timing settings the service needs.
#[derive(Debug, Clone)]
pub struct Timing {
    pub lead_ms: Millis,
    pub jitter_ms: Millis,
    pub ticket_ttl: Duration,
    pub login_failures: u32,
    /// `--tickets-per-session`: tickets per session per [`auth::TICKET_WINDOW`].
    pub tickets_per_window: u32,
}

/// Shared state of the token service; held in an `Arc`.
pub struct Service {
    sessions: Sessions,
    issuer: Issuer,
    users: Directory,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    timing: Timing,
    bus: Bus,
    scheduler: Scheduler,
    /// Revoked sessions whose access tokens may still be unexpired: checked on every Bearer.
    revocations: DashMap<String, Millis>,
    /// Sessions a role change found no channel for, and when: pushed their new claims when a
    /// channel of theirs opens here (see `admin`).
    claims_pending: DashMap<String, Millis>,
    push_requests: DashMap<String, Instant>,
    /// Last delivery per session and deliveries per minute, for the admin console.
    stats: stats::Stats,
    /// Service key, login hook and the identities of users outside the users file.
    integration: integration::Integration,
    /// How this node is named in cluster-wide admin views (`host:port`).
    node: std::sync::OnceLock<String>,
    /// The store's epoch last caught up with, and when that catch-up began (this clock).
    caught_up: tokio::sync::Mutex<(Option<crate::sessions::Epoch>, Millis)>,
}

/// A channel just opened: its registration and what to tell the client first.
pub struct Opened {
    pub reg: Registration,
    pub session: Session,
    /// Expiry of the newest access token the client is known to hold (for delivery margin).
    pub held_exp_ms: Millis,
}

/// What a [`Service`] is built from.
pub struct Parts {
    pub sessions: Sessions,
    pub issuer: Issuer,
    pub users: Directory,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    pub bus: Bus,
    pub scheduler: Scheduler,
    pub integration: integration::Integration,
}

impl Service {
    /// Builds the service; call [`Service::load`] before serving.
    pub fn new(p: Parts) -> Self {
        Service {
            sessions: p.sessions,
            issuer: p.issuer,
            users: p.users,
            hub: p.hub,
            metrics: p.metrics,
            timing: p.timing,
            bus: p.bus,
            scheduler: p.scheduler,
            revocations: DashMap::new(),
            claims_pending: DashMap::new(),
            push_requests: DashMap::new(),
            stats: stats::Stats::default(),
            integration: p.integration,
            caught_up: tokio::sync::Mutex::new((None, 0)),
            node: std::sync::OnceLock::new(),
        }
    }

    /// Loads revocations and role overrides from the store.
    pub async fn load(&self) -> ApiResult<()> {
        let since = self.now() - self.issuer.access_ttl_ms - 60_000;
        self.caught_up.lock().await.1 = self.now();
        for sid in self.sessions.store.revoked_since(since).await? {
            self.revocations.insert(sid, self.now());
        }
        let names: Vec<String> = self.users.names().cloned().collect();
        for name in names {
            if let Some(roles) = self.sessions.store.roles(&name).await? {
                self.users.set_roles(&name, roles);
            }
        }
        Ok(())
    }

    /// The bus is only a fast path: every [`CATCH_UP_EVERY`] and after every resubscription,
    /// when the store's epoch moved since the last look, takes
    /// every revocation and role override from the store, so a node that missed bus messages
    /// (a full publish queue, a failed PUBLISH, a subscriber dropped by Redis or
    /// reconnecting) converges within one [`CATCH_UP_EVERY`]. A failed look is retried then.
    pub async fn catch_up(&self) {
        if let Err(e) = self.try_catch_up().await {
            tracing::warn!(error = %e, "catching up with the store failed; retrying");
        }
    }

    async fn try_catch_up(&self) -> ApiResult<()> {
        let store = &self.sessions.store;
        let Some(epoch) = store.epoch().await? else {
            return Ok(());
        };
        let mut caught_up = self.caught_up.lock().await;
        let seen = caught_up.0;
        if seen == Some(epoch) {
            return Ok(());
        }
        let started = self.now();
        if seen.map(|e| e.revocations) != Some(epoch.revocations) {
            // Revocations are stamped by the revoking node's clock: look back past any skew,
            // and no further than an access token can live.
            let since =
                (caught_up.1 - CLOCK_SKEW_MS).max(started - self.issuer.access_ttl_ms - 60_000);
            for sid in store.revoked_since(since).await? {
                if self.revocations.contains_key(&sid) {
                    continue;
                }
                let reason = store
                    .load(&sid)
                    .await?
                    .and_then(|s| s.revoked)
                    .unwrap_or_else(|| "logout".into());
                tracing::info!(%sid, %reason, "revocation caught up from the store");
                self.revoked_elsewhere(sid, &reason);
            }
        }
        if seen.map(|e| e.roles) != Some(epoch.roles) {
            let names: Vec<String> = self.users.names().cloned().collect();
            for (name, roles) in names.iter().zip(store.roles_many(&names).await?) {
                if let Some(roles) = roles {
                    self.users.set_roles(name, roles);
                }
            }
        }
        *caught_up = (Some(epoch), started);
        Ok(())
    }

    /// Prunes revocations that outlived every access token, old rate-limit entries, and
    /// ended sessions held in the store's memory.
    pub async fn prune(&self) {
        if let Err(e) = self
            .sessions
            .store
            .forget_ended(self.now(), &self.sessions.policy)
            .await
        {
            tracing::warn!(error = %e, "pruning ended sessions failed");
        }
        let cutoff = self.now() - self.issuer.access_ttl_ms - 60_000;
        self.revocations.retain(|_, at| *at > cutoff);
        // By then every token signed before the role change has expired.
        self.claims_pending.retain(|_, at| *at > cutoff);
        self.push_requests
            .retain(|_, at| at.elapsed() < push::PUSH_REQUEST_INTERVAL);
        self.stats.retain(|sid| self.hub.has_channels(sid));
    }

    /// Re-reads the signing keys from the data dir (EdDSA only; an HS256 secret is one
    /// configured file): the current seed signs from now on, retired seeds still verify and
    /// are published until every token they can have signed expired. A failure keeps the set
    /// in use.
    pub fn reload_keys(&self, data_dir: &std::path::Path) {
        use crate::tokens::keys;
        let access = &self.issuer.access;
        if access.jwks().is_empty() {
            return;
        }
        // Another node may sign with a retired key until its next reload, and node clocks
        // differ by a few seconds (`nbf` is back-dated 5 s for the same reason).
        let keep = self.issuer.access_ttl_ms
            + KEY_RELOAD_EVERY.as_millis() as Millis
            + RETIRED_KEY_LEEWAY.as_millis() as Millis;
        let loaded = keys::read_private(&data_dir.join(keys::ED25519_KEY))
            .and_then(|seed| keys::ed25519(&seed))
            .and_then(|cur| Ok((cur, keys::retired_ed25519(data_dir, now_ms(), keep)?)));
        match loaded {
            Ok((current, retired)) => {
                let n = retired.len();
                if access.set_keys(current, retired) {
                    tracing::info!(kid = %access.kid(), retired = n, "signing keys loaded");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "signing keys not reloaded; keeping the current set")
            }
        }
    }

    /// Unix milliseconds on the service's clock (the sessions' one).
    pub fn now(&self) -> Millis {
        self.sessions.now()
    }

    fn deadline(&self, access_exp_ms: Millis) -> Millis {
        let jitter = if self.timing.jitter_ms > 0 {
            rand::rng().random_range(0..=self.timing.jitter_ms)
        } else {
            0
        };
        access_exp_ms - self.timing.lead_ms - jitter
    }

    fn issue(&self, s: &Session, gen: u64, exp_ms: Millis) -> ApiResult<(TokenResponse, Millis)> {
        let who = self.identity(s)?;
        let issued = self
            .issuer
            .issue(s, &who, gen, exp_ms)
            .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
        Ok((issued.response, issued.access_exp_ms))
    }

    /// Who a session's tokens are about: the identity stored with the session (users the app
    /// or its login hook vouched for), else the users file with its current roles.
    fn identity(&self, s: &Session) -> ApiResult<Identity> {
        if let Some(who) = &s.who {
            return Ok(who.clone());
        }
        if let Some(who) = self.users.identity(&s.user) {
            return Ok(who);
        }
        // Sessions minted before identities moved into the store: the old per-node file.
        self.integration
            .external
            .get(&s.user)
            .ok_or(ApiError::InvalidGrant("the user no longer exists"))
    }

    /// After a session is revoked in the store: reject its access tokens here, close its
    /// channels here, and tell the other nodes.
    fn revoked(&self, sid: &str, reason: &str) {
        if self
            .revocations
            .insert(sid.to_string(), self.now())
            .is_none()
        {
            self.metrics.revocations.with_label_values(&[reason]).inc();
        }
        self.hub.deliver(sid, &Event::Revoked(reason.into()));
        self.integration.announce_revocation(sid, reason);
        self.bus.publish(BusEvent::Revoked {
            sid: sid.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Whether access tokens of this session must be refused.
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.revocations.contains_key(sid)
    }

    /// An event from another node.
    pub fn on_bus(self: &Arc<Self>, ev: BusEvent) {
        match ev {
            BusEvent::Pushed {
                sid,
                gen,
                reason,
                deadline_ms,
                exp,
            } => {
                if self.hub.has_channels(&sid) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me
                            .pushed_elsewhere(&sid, gen, reason, deadline_ms, exp)
                            .await
                        {
                            tracing::warn!(%sid, error = %e, "delivering another node's push failed");
                        }
                    });
                }
            }
            BusEvent::Revoked { sid, reason } => self.revoked_elsewhere(sid, &reason),
            BusEvent::RolesChanged { user, roles } => self.users.set_roles(&user, roles),
            BusEvent::ClaimsPending { sids } => self.claims_pending_elsewhere(sids),
            BusEvent::Resubscribed => {
                let me = self.clone();
                tokio::spawn(async move { me.catch_up().await });
            }
        }
    }

    /// Another node revoked a session: refuse its access tokens and close its channels here.
    fn revoked_elsewhere(&self, sid: String, reason: &str) {
        self.revocations.insert(sid.clone(), self.now());
        self.integration.announce_revocation(&sid, reason);
        self.hub.deliver(&sid, &Event::Revoked(reason.into()));
    }

    /// Live (unrevoked, unexpired) sessions, optionally of one user.
    pub async fn live_sessions(&self, user: Option<&str>) -> ApiResult<Vec<Session>> {
        let now = self.now();
        let policy = self.sessions.policy;
        Ok(self
            .sessions
            .store
            .unrevoked(user)
            .await?
            .into_iter()
            .filter(|s| s.is_live(now, &policy))
            .collect())
    }
}

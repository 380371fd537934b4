//! The token service: what the HTTP handlers and the scheduler ask for. Login, redeeming and
//! confirming refresh tokens, tickets, channel opening, renewal pushes and revocation.
//! The push path reads top to bottom: [`Service::renew`] → store CAS → hub fan-out + bus.

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

/// Requested pushes (WS `renew`, expired-token nudges) per session at most this often.
const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(2);

/// Timing settings the service needs.
#[derive(Debug, Clone)]
pub struct Timing {
    pub lead_ms: Millis,
    pub jitter_ms: Millis,
    pub ticket_ttl: Duration,
    pub login_failures: u32,
}

/// Shared state of the token service; held in an `Arc`.
pub struct Service {
    pub sessions: Sessions,
    pub issuer: Issuer,
    pub users: Directory,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    bus: Bus,
    scheduler: Scheduler,
    /// Revoked sessions whose access tokens may still be unexpired: checked on every Bearer.
    revocations: DashMap<String, Millis>,
    push_requests: DashMap<String, Instant>,
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
            push_requests: DashMap::new(),
        }
    }

    /// Loads revocations and role overrides from the store.
    pub async fn load(&self) -> ApiResult<()> {
        let since = now_ms() - self.issuer.access_ttl_ms - 60_000;
        for sid in self.sessions.store.revoked_since(since).await? {
            self.revocations.insert(sid, now_ms());
        }
        let names: Vec<String> = self.users.names().cloned().collect();
        for name in names {
            if let Some(roles) = self.sessions.store.roles(&name).await? {
                self.users.set_roles(&name, roles);
            }
        }
        Ok(())
    }

    /// Prunes revocations that outlived every access token, old rate-limit entries, and
    /// ended sessions held in the store's memory.
    pub async fn prune(&self) {
        if let Err(e) = self
            .sessions
            .store
            .forget_ended(now_ms(), &self.sessions.policy)
            .await
        {
            tracing::warn!(error = %e, "pruning ended sessions failed");
        }
        let cutoff = now_ms() - self.issuer.access_ttl_ms - 60_000;
        self.revocations.retain(|_, at| *at > cutoff);
        self.push_requests
            .retain(|_, at| at.elapsed() < PUSH_REQUEST_INTERVAL);
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
        let who = self.identity(&s.user)?;
        let issued = self
            .issuer
            .issue(s, &who, gen, exp_ms)
            .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
        Ok((issued.response, issued.access_exp_ms))
    }

    fn identity(&self, user: &str) -> ApiResult<Identity> {
        self.users
            .identity(user)
            .ok_or(ApiError::InvalidGrant("the user no longer exists"))
    }

    /// Checks credentials (rate-limited per address and username) and opens a session.
    pub async fn login(
        self: &Arc<Self>,
        username: &str,
        password: &str,
        device: &str,
        ip: &str,
    ) -> ApiResult<TokenResponse> {
        let key = format!("{ip}|{username}");
        let store = &self.sessions.store;
        let (failures, retry) = store.login_failures(&key).await?;
        if failures >= self.timing.login_failures {
            self.metrics
                .logins
                .with_label_values(&["rate_limited"])
                .inc();
            return Err(ApiError::RateLimited {
                retry_after_secs: retry.max(1),
            });
        }
        let me = self.clone();
        let (u, p) = (username.to_string(), password.to_string());
        let who = tokio::task::spawn_blocking(move || me.users.check_password(&u, &p))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let Some(who) = who else {
            store
                .add_login_failure(&key, Duration::from_secs(60))
                .await?;
            self.metrics.logins.with_label_values(&["failed"]).inc();
            return Err(ApiError::InvalidCredentials);
        };
        let now = now_ms();
        let exp = self.issuer.access_exp_ms(now);
        let s = Session::new(
            random_id(16),
            who.name.clone(),
            device.to_string(),
            ip.to_string(),
            random_id(32),
            now,
            exp,
        );
        store.insert(&s).await?;
        self.metrics.logins.with_label_values(&["ok"]).inc();
        tracing::info!(user = %who.name, sid = %s.sid, "login");
        Ok(self.issue(&s, 0, exp)?.0)
    }

    /// Applies the rotation rule to a presented refresh token. Replay revokes the session.
    pub async fn redeem(&self, token: &str, how: Use) -> ApiResult<(Session, u64)> {
        let p =
            RefreshTokens::parse(token).ok_or(ApiError::InvalidGrant("malformed refresh token"))?;
        let now = now_ms();
        let policy = self.sessions.policy;
        let refresh = &self.issuer.refresh;
        let res = self
            .sessions
            .update(&p.sid, |s| {
                if refresh.verify(&p, &s.nonce) {
                    s.present(p.gen, how, now, &policy)
                } else {
                    Outcome::Invalid("unknown refresh token")
                }
            })
            .await?;
        let outcome = match res {
            None => Outcome::Invalid("unknown refresh token"),
            Some((s, Outcome::Issue(gen))) => {
                self.metrics.refreshes.with_label_values(&["ok"]).inc();
                return Ok((s, gen));
            }
            Some((_, o)) => o,
        };
        match outcome {
            Outcome::Reuse => {
                tracing::warn!(sid = %p.sid, gen = p.gen, "refresh token replayed: session revoked");
                self.metrics.reuse_detected.inc();
                self.metrics.refreshes.with_label_values(&["reuse"]).inc();
                self.revoked(&p.sid, REUSE);
                Err(ApiError::InvalidGrant(
                    "refresh token reused; the session is revoked",
                ))
            }
            Outcome::Invalid(why) => {
                self.metrics.refreshes.with_label_values(&["invalid"]).inc();
                Err(ApiError::InvalidGrant(why))
            }
            Outcome::Issue(_) => unreachable!("returned above"),
        }
    }

    /// The session a refresh token with a valid MAC belongs to (any generation): for logout
    /// and RFC 7009 revocation, which end the caller's own session without rotating.
    pub async fn session_of_refresh(&self, token: &str) -> ApiResult<Option<String>> {
        let Some(p) = RefreshTokens::parse(token) else {
            return Ok(None);
        };
        let s = self.sessions.store.load(&p.sid).await?;
        Ok(s.filter(|s| self.issuer.refresh.verify(&p, &s.nonce))
            .map(|s| s.sid))
    }

    /// `POST /auth/refresh`.
    pub async fn refresh(&self, token: &str) -> ApiResult<TokenResponse> {
        let (s, gen) = self.redeem(token, Use::Refresh).await?;
        Ok(self.issue(&s, gen, self.issuer.access_exp_ms(now_ms()))?.0)
    }

    /// `POST /auth/ticket`: a single-use ticket for a channel, recording the generation proved.
    pub async fn ticket(&self, token: &str) -> ApiResult<String> {
        let (s, _) = self.redeem(token, Use::Ticket).await?;
        let gen = RefreshTokens::parse(token).map_or(0, |p| p.gen);
        let ticket = random_id(24);
        let grant = TicketGrant {
            sid: s.sid,
            user: s.user,
            gen,
        };
        self.sessions
            .store
            .put_ticket(&ticket, &grant, self.timing.ticket_ttl)
            .await?;
        Ok(ticket)
    }

    /// Confirms that the client holds generation `gen` of `sid`.
    pub async fn confirm(&self, sid: &str, gen: u64) -> ApiResult<()> {
        let now = now_ms();
        self.sessions.update(sid, |s| s.confirm(gen, now)).await?;
        Ok(())
    }

    /// Opens a channel with a ticket: confirms a `Last-Event-ID`, registers the channel,
    /// schedules renewal, and queues a `resume` push when the client is behind.
    pub async fn open_channel(
        &self,
        ticket: &str,
        last_event_id: Option<&str>,
        kind: Kind,
    ) -> ApiResult<Opened> {
        let grant = match ticket {
            "" => None,
            t if t.len() > 128 => None,
            t => self.sessions.store.take_ticket(t).await?,
        };
        let grant = grant.ok_or(ApiError::InvalidTicket)?;
        let mut proved = grant.gen;
        if let Some((sid, gen)) = last_event_id.and_then(parse_event_id) {
            if sid == grant.sid {
                self.confirm(sid, gen).await?;
                proved = proved.max(gen);
            }
        }
        let s = self
            .sessions
            .store
            .load(&grant.sid)
            .await?
            .ok_or(ApiError::InvalidTicket)?;
        if !s.is_live(now_ms(), &self.sessions.policy) {
            return Err(ApiError::InvalidTicket);
        }
        let (reg, first) = self.hub.register(&s.sid, &s.user, kind).map_err(|hit| {
            self.metrics
                .channels_closed
                .with_label_values(&["limit"])
                .inc();
            ApiError::TooManyChannels(match hit {
                LimitHit::Session => "too many channels for this session",
                LimitHit::User => "too many channels for this user",
                LimitHit::Total => "the server holds as many channels as it can",
            })
        })?;
        if first {
            self.scheduler
                .schedule(&s.sid, self.deadline(s.push_exp_ms));
        }
        let mut held_exp_ms = s.push_exp_ms;
        if proved < s.current_gen {
            let now = now_ms();
            let (resp, exp) = self.issue(&s, s.current_gen, self.issuer.access_exp_ms(now))?;
            reg.outbox.push(Event::Tokens(Arc::new(TokensPush::new(
                &resp,
                s.current_gen,
                Reason::Resume,
                now,
                exp,
            ))));
            self.metrics.pushes.with_label_values(&["resume"]).inc();
            held_exp_ms = 0;
        }
        Ok(Opened {
            reg,
            session: s,
            held_exp_ms,
        })
    }

    /// Counts a closed channel by cause (the live gauge is read from the hub when scraped).
    pub fn channel_closed(&self, cause: &'static str) {
        self.metrics
            .channels_closed
            .with_label_values(&[cause])
            .inc();
    }

    /// Pushes new tokens to every channel of the session (rotating only if the last push was
    /// confirmed). A `Renewal` that another node already did is skipped and rescheduled.
    pub async fn renew(&self, sid: &str, reason: Reason, deadline_ms: Millis) -> ApiResult<()> {
        if reason == Reason::Renewal && !self.hub.has_channels(sid) {
            return Ok(()); // no channel here: the server does not renew
        }
        enum Step {
            Skip(Millis),
            Push(u64),
            Dead,
        }
        let now = now_ms();
        let exp = self.issuer.access_exp_ms(now);
        // The earliest deadline the current push could have had; later than that means another
        // node (or a claims change) already pushed.
        let (policy, lead) = (
            self.sessions.policy,
            self.timing.lead_ms + self.timing.jitter_ms,
        );
        let Some((s, step)) = self
            .sessions
            .update(sid, |s| {
                if !s.is_live(now, &policy) {
                    Step::Dead
                } else if reason == Reason::Renewal && s.push_exp_ms - lead > now + 1000 {
                    Step::Skip(s.push_exp_ms)
                } else {
                    Step::Push(s.push(now, exp))
                }
            })
            .await?
        else {
            return Ok(());
        };
        match step {
            Step::Dead => {
                let reason = s.revoked.clone().unwrap_or_else(|| "expired".into());
                self.revoked(sid, &reason);
            }
            Step::Skip(push_exp) => self.scheduler.schedule(sid, self.deadline(push_exp)),
            Step::Push(gen) => {
                let (resp, exp) = self.issue(&s, gen, exp)?;
                let push = TokensPush::new(&resp, gen, reason, deadline_ms, exp);
                self.metrics
                    .pushes
                    .with_label_values(&[reason_label(reason)])
                    .inc();
                self.deliver_tokens(push.clone());
                self.bus.publish(BusEvent::Tokens(push));
            }
        }
        Ok(())
    }

    /// A renewal deadline passed. If the store is out of reach, try again every second while
    /// the session has channels here, so an outage delays renewals but never drops them.
    pub async fn renewal_due(&self, sid: &str, deadline_ms: Millis) {
        if let Err(e) = self.renew(sid, Reason::Renewal, deadline_ms).await {
            tracing::warn!(%sid, error = %e, "renewal failed; retrying in 1s");
            if self.hub.has_channels(sid) {
                self.scheduler.schedule(sid, now_ms() + 1000);
            }
        }
    }

    fn deliver_tokens(&self, push: TokensPush) {
        let (sid, exp) = (push.sid.clone(), push.access_exp_ms);
        if self.hub.deliver(&sid, &Event::Tokens(Arc::new(push))) > 0 {
            self.scheduler.schedule(&sid, self.deadline(exp));
        }
    }

    /// A requested push (WS `renew`, a live session's expired Bearer): at most one per
    /// session every couple of seconds. Returns false when rate-limited.
    pub async fn request_push(&self, sid: &str) -> bool {
        let now = Instant::now();
        let mut allowed = false;
        self.push_requests
            .entry(sid.to_string())
            .and_modify(|at| {
                if now.duration_since(*at) >= PUSH_REQUEST_INTERVAL {
                    *at = now;
                    allowed = true;
                }
            })
            .or_insert_with(|| {
                allowed = true;
                now
            });
        if allowed {
            if let Err(e) = self.renew(sid, Reason::Requested, now_ms()).await {
                tracing::warn!(error = %e, "requested push failed");
            }
        }
        allowed
    }

    /// Revokes a session (if not already) and tells every channel everywhere.
    pub async fn revoke(&self, sid: &str, reason: &str) -> ApiResult<bool> {
        let now = now_ms();
        let res = self.sessions.update(sid, |s| s.revoke(reason, now)).await?;
        let Some((_, newly)) = res else {
            return Ok(false);
        };
        if newly {
            tracing::info!(%sid, %reason, "session revoked");
        }
        self.revoked(sid, reason);
        Ok(newly)
    }

    /// After a session is revoked in the store: reject its access tokens here, close its
    /// channels here, and tell the other nodes.
    fn revoked(&self, sid: &str, reason: &str) {
        if self.revocations.insert(sid.to_string(), now_ms()).is_none() {
            self.metrics.revocations.with_label_values(&[reason]).inc();
        }
        self.hub.deliver(sid, &Event::Revoked(reason.into()));
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
    pub fn on_bus(&self, ev: BusEvent) {
        match ev {
            BusEvent::Tokens(push) => self.deliver_tokens(push),
            BusEvent::Revoked { sid, reason } => {
                self.revocations.insert(sid.clone(), now_ms());
                self.hub.deliver(&sid, &Event::Revoked(reason.into()));
            }
            BusEvent::RolesChanged { user, roles } => self.users.set_roles(&user, roles),
        }
    }

    /// Live (unrevoked, unexpired) sessions, optionally of one user.
    pub async fn live_sessions(&self, user: Option<&str>) -> ApiResult<Vec<Session>> {
        let now = now_ms();
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

    /// Sets a user's roles and pushes `claims_changed` tokens to all their live sessions.
    pub async fn set_roles(self: &Arc<Self>, user: &str, roles: Vec<String>) -> ApiResult<usize> {
        if !self.users.exists(user) {
            return Err(ApiError::NotFound);
        }
        self.sessions.store.set_roles(user, &roles).await?;
        self.users.set_roles(user, roles.clone());
        self.bus.publish(BusEvent::RolesChanged {
            user: user.to_string(),
            roles,
        });
        let sessions = self.live_sessions(Some(user)).await?;
        let now = now_ms();
        // Concurrently, so a user with thousands of sessions gets them all at once.
        // Spawned, so signing spreads over every core; at most 256 in flight.
        let mut tasks = tokio::task::JoinSet::new();
        for s in &sessions {
            if tasks.len() >= 256 {
                if let Some(r) = tasks.join_next().await {
                    r.map_err(|e| ApiError::Internal(e.to_string()))??;
                }
            }
            let (me, sid) = (self.clone(), s.sid.clone());
            tasks.spawn(async move { me.renew(&sid, Reason::ClaimsChanged, now).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| ApiError::Internal(e.to_string()))??;
        }
        Ok(sessions.len())
    }

    /// Revokes every live session of a user.
    pub async fn revoke_user(&self, user: &str, reason: &str) -> ApiResult<usize> {
        let mut n = 0;
        for s in self.live_sessions(Some(user)).await? {
            if self.revoke(&s.sid, reason).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Graceful shutdown: every channel gets `reconnect` with a jittered delay, so clients
    /// do not all come back in the same millisecond.
    pub fn shutdown_channels(&self) -> usize {
        let mut rng = rand::rng();
        self.hub.deliver_all(|| Event::Reconnect {
            retry_ms: rng.random_range(250..2250),
        })
    }
}

fn reason_label(r: Reason) -> &'static str {
    match r {
        Reason::Renewal => "renewal",
        Reason::ClaimsChanged => "claims_changed",
        Reason::Resume => "resume",
        Reason::Requested => "requested",
    }
}

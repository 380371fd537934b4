//! The push path: opening channels (with resume), scheduled and requested renewals
//! (scheduler fires → store rotates → hub fans out + bus), and shutdown's reconnect.

use super::*;

/// `Opened::held_exp_ms` of a client whose access token had expired before it came back.
pub const HELD_EXPIRED: Millis = crate::metrics::HELD_EXPIRED;

/// Requested pushes (WS `renew`, expired-token nudges) per session at most this often.
pub(super) const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(2);

impl Service {
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
        let (now, policy) = (self.now(), self.sessions.policy);
        // One store round trip: confirming a Last-Event-ID already yields the session.
        let found = match last_event_id.and_then(parse_event_id) {
            Some((sid, gen)) if sid == grant.sid => {
                proved = proved.max(gen);
                self.sessions
                    .update(sid, |s| s.confirm(gen, now, &policy))
                    .await?
                    .map(|(s, _)| s)
            }
            _ => self.sessions.store.load(&grant.sid).await?,
        };
        let s = found.ok_or(ApiError::InvalidTicket)?;
        if !s.is_live(now, &self.sessions.policy) {
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
        // A revocation that landed between the load above and the registration reached no
        // channel of ours: `revoked` records it here before telling the hub, so looking after
        // registering sees it, or its delivery comes after and reaches this channel.
        if self.is_revoked(&s.sid) {
            return Err(ApiError::InvalidTicket);
        }
        if first {
            self.scheduler.schedule(&s.sid, self.next_due(&s));
        }
        // The newest access token issued to anyone is the best this client can hold: when even
        // that has expired, the client is back after expiry, and its first push is no breach.
        let newest = s.issued_exp_ms.max(s.push_exp_ms);
        let mut held_exp_ms = if newest > now { newest } else { HELD_EXPIRED };
        if proved < s.current_gen {
            let now = self.now();
            let (resp, exp) = self.issue(&s, s.current_gen, self.issuer.access_exp_ms(now))?;
            reg.outbox.push(Event::Tokens(Arc::new(TokensPush::new(
                &resp,
                s.current_gen,
                Reason::Resume,
                now,
                exp,
            ))));
            self.metrics.pushes.with_label_values(&["resume"]).inc();
            // It proved an older generation, so it missed the last push: its access token
            // expires before that push's did.
            if held_exp_ms != HELD_EXPIRED && s.push_exp_ms <= now {
                held_exp_ms = HELD_EXPIRED;
            } else if held_exp_ms != HELD_EXPIRED {
                held_exp_ms = held_exp_ms.min(s.push_exp_ms);
            }
        }
        // A role change that found no channel of this session (other nodes' presence lags)
        // left its new claims to whichever node holds or opens one.
        self.push_held_claims(&s.sid).await;
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
            /// Not now; renew again at this time if given.
            Skip(Option<Millis>),
            Push(u64),
            Dead,
        }
        let now = self.now();
        let exp = self.issuer.access_exp_ms(now);
        // The earliest deadline the current push could have had; later than that means another
        // node (or a claims change) already pushed.
        let (policy, lead, floor) = (
            self.sessions.policy,
            self.timing.lead_ms + self.timing.jitter_ms,
            self.push_floor_ms(),
        );
        let Some((s, step)) = self
            .sessions
            .update(sid, |s| {
                if !s.is_live(now, &policy) {
                    Step::Dead
                } else if reason == Reason::Renewal && now < s.pushed_at + floor {
                    // The runtime floor: whatever the schedule says (settings, skew, another
                    // node), renewals of a session are never closer than a quarter of the
                    // access TTL. (Requested pushes have their own rate limit; claim changes
                    // must go out at once.)
                    Step::Skip(Some(s.pushed_at + floor))
                } else if reason == Reason::Renewal && s.push_exp_ms - lead > now + 1000 {
                    Step::Skip(None)
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
            Step::Skip(at) => {
                if reason == Reason::Renewal {
                    let due = self.next_due(&s);
                    self.scheduler
                        .schedule(sid, at.map_or(due, |at| at.max(due)));
                }
            }
            Step::Push(gen) => {
                let (resp, exp) = self.issue(&s, gen, exp)?;
                let push = TokensPush::new(&resp, gen, reason, deadline_ms, exp);
                self.metrics
                    .pushes
                    .with_label_values(&[reason_label(reason)])
                    .inc();
                self.deliver_tokens(push);
                self.bus.publish(BusEvent::Pushed {
                    sid: sid.to_string(),
                    gen,
                    reason,
                    deadline_ms,
                    exp,
                });
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
                self.scheduler.schedule(sid, self.now() + 1000);
            }
        }
    }

    /// Another node pushed generation `gen`: when this node holds channels of the session, it
    /// signs the store's current generation (same expiry) and delivers it. That is `gen`
    /// unless a pull refresh rotated the session since, which sends no notice of its own, so
    /// the channels here get the newer generation rather than nothing. Only a newer push
    /// (its expiry at least the push floor later) makes this one moot: its notice follows.
    pub(super) async fn pushed_elsewhere(
        &self,
        sid: &str,
        gen: u64,
        reason: Reason,
        deadline_ms: Millis,
        exp: Millis,
    ) -> ApiResult<()> {
        if !self.hub.has_channels(sid) {
            return Ok(());
        }
        let Some(s) = self.sessions.store.load(sid).await? else {
            return Ok(());
        };
        if s.current_gen < gen || s.revoked.is_some() || s.push_exp_ms >= exp + self.push_floor_ms()
        {
            return Ok(());
        }
        let gen = s.current_gen;
        let (resp, exp) = self.issue(&s, gen, exp)?;
        self.deliver_tokens(TokensPush::new(&resp, gen, reason, deadline_ms, exp));
        Ok(())
    }

    pub(super) fn deliver_tokens(&self, push: TokensPush) {
        let (sid, exp) = (push.sid.clone(), push.access_exp_ms);
        if self.hub.deliver(&sid, &Event::Tokens(Arc::new(push))) > 0 {
            // Pushed about now, with this expiry: the same rule as `next_due`.
            let at = self.deadline(exp).max(self.now() + self.push_floor_ms());
            self.scheduler.schedule(&sid, at);
        }
    }

    /// Pushes of one session are at least this far apart (a quarter of the access TTL).
    fn push_floor_ms(&self) -> Millis {
        self.issuer.access_ttl_ms / 4
    }

    /// When the session's next renewal is due: its lead (and jitter) before the pushed
    /// token expires, but never sooner than the floor after the last push.
    fn next_due(&self, s: &Session) -> Millis {
        self.deadline(s.push_exp_ms)
            .max(s.pushed_at + self.push_floor_ms())
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
        // Then cluster-wide: a client asking every node in turn still gets one push per
        // interval. A store out of reach leaves the node's own limit in charge.
        if allowed {
            let key = format!("push|{sid}");
            if let Ok((n, _)) = self.sessions.store.hit(&key, PUSH_REQUEST_INTERVAL).await {
                allowed = n == 1;
            }
        }
        if allowed {
            if let Err(e) = self.renew(sid, Reason::Requested, self.now()).await {
                tracing::warn!(error = %e, "requested push failed");
            }
        }
        allowed
    }

    /// A `tokens` event was written to a channel: push lag and delivery margin metrics, and
    /// the session's last delivery for the admin console. `prev_exp_ms` is the expiry of the
    /// access token it replaces (0 when unknown).
    /// [`HELD_EXPIRED`] when the client's token had expired before its channel opened: a
    /// resume after expiry, counted apart and never a margin sample.
    pub fn written(&self, push: &TokensPush, prev_exp_ms: Millis) {
        let now = self.now();
        self.metrics.written(push.deadline_ms, prev_exp_ms, now);
        self.stats.written(
            &push.sid,
            stats::LastPush {
                at_ms: now,
                gen: push.gen,
                margin_ms: (prev_exp_ms > 0).then(|| prev_exp_ms - now),
            },
        );
    }

    /// Graceful shutdown: every channel gets `reconnect` with a jittered delay, so clients
    /// do not all come back in the same millisecond.
    pub fn shutdown_channels(&self) -> usize {
        self.integration.closing.cancel();
        self.hub.close()
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

/// The renewal path on a manual clock: no sleeps, no server.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::hub::Limits;
    use crate::sessions::memory::MemoryStore;
    use crate::sessions::Policy;
    use crate::tokens::{keys, AccessTokens};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    const TTL: Millis = 8_000;

    async fn service(
        clock: Arc<ManualClock>,
        lead_ms: Millis,
    ) -> (Arc<Service>, tempfile::TempDir) {
        service_on(clock, lead_ms, Arc::new(MemoryStore::default())).await
    }

    async fn service_on(
        clock: Arc<ManualClock>,
        lead_ms: Millis,
        store: Arc<dyn crate::sessions::Store>,
    ) -> (Arc<Service>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let (due, _) = tokio::sync::mpsc::unbounded_channel();
        let policy = Policy {
            grace_ms: 1_000,
            idle_ms: 30_000,
            max_ms: 1 << 40,
        };
        let svc = Service::new(Parts {
            sessions: Sessions::new(store, policy).with_clock(clock),
            issuer: Issuer {
                access: AccessTokens::new(keys::ed25519(&[7; 32]).unwrap(), "http://t", "t"),
                refresh: RefreshTokens::new(vec![1; 32]),
                issuer: "http://t".into(),
                audience: "t".into(),
                access_ttl_ms: TTL,
                idle_ttl_ms: policy.idle_ms,
                max_ttl_ms: policy.max_ms,
            },
            users: Directory::demo(dir.path()).unwrap(),
            hub: Arc::new(Hub::new(
                Limits {
                    per_session: 8,
                    per_user: 8,
                    total: 100,
                },
                tasks.clone(),
            )),
            metrics: Arc::new(Metrics::default()),
            timing: Timing {
                lead_ms,
                jitter_ms: 0,
                ticket_ttl: Duration::from_secs(30),
                login_failures: 10,
                tickets_per_window: 10,
            },
            bus: Bus::local(),
            scheduler: Scheduler::spawn(due, &tasks, CancellationToken::new()),
            integration: Default::default(),
        });
        (Arc::new(svc), dir)
    }

    async fn session(svc: &Service) -> Session {
        session_named(svc, "s").await
    }

    async fn session_named(svc: &Service, sid: &str) -> Session {
        let now = svc.now();
        let s = Session::new(
            sid.into(),
            "bob".into(),
            "d".into(),
            "ip".into(),
            "n".into(),
            now,
            svc.issuer.access_exp_ms(now),
        );
        svc.sessions.store.insert(&s).await.unwrap();
        s
    }

    fn pushes(reg: &Registration) -> usize {
        std::iter::from_fn(|| reg.outbox.pop())
            .filter(|e| matches!(e, Event::Tokens(_)))
            .count()
    }

    /// Lead as long as the TTL (what config validation refuses) would push on every due
    /// renewal: the floor still allows one push per quarter of the TTL.
    #[tokio::test]
    async fn renewals_are_floored_at_a_quarter_of_the_ttl() {
        let clock = Arc::new(ManualClock::new(crate::clock::now_ms()));
        let (svc, _dir) = service(clock.clone(), TTL).await;
        let s = session(&svc).await;
        let (reg, _) = svc.hub.register(&s.sid, &s.user, Kind::Ws).unwrap();
        let mut pushed = 0;
        // 40 due renewals, one every 200 ms of manual time, over 8 s (one TTL).
        for _ in 0..40 {
            clock.advance(200);
            svc.renew(&s.sid, Reason::Renewal, svc.now()).await.unwrap();
            pushed += pushes(&reg);
        }
        assert_eq!(pushed, 4, "one push per TTL / 4");
    }

    /// Acks keep a session with a short idle TTL alive; without them it dies at the next
    /// renewal, and its channels hear `revoked`.
    #[tokio::test]
    async fn acked_pushes_keep_the_session_alive_and_silence_expires_it() {
        let clock = Arc::new(ManualClock::new(crate::clock::now_ms()));
        let (svc, _dir) = service(clock.clone(), 2_000).await;
        let s = session(&svc).await;
        let (reg, _) = svc.hub.register(&s.sid, &s.user, Kind::Sse).unwrap();
        // 120 s of pushes every 6 s, each acked: four idle lifetimes.
        for _ in 0..20 {
            clock.advance(6_000);
            svc.renew(&s.sid, Reason::Renewal, svc.now()).await.unwrap();
            assert_eq!(pushes(&reg), 1);
            let gen = svc
                .sessions
                .store
                .load(&s.sid)
                .await
                .unwrap()
                .unwrap()
                .current_gen;
            svc.confirm(&s.sid, gen).await.unwrap();
        }
        assert!(!svc.is_revoked(&s.sid));
        // Now nobody acks: pushes continue until the idle TTL (30 s) passes.
        for _ in 0..6 {
            clock.advance(6_000);
            svc.renew(&s.sid, Reason::Renewal, svc.now()).await.unwrap();
        }
        assert!(svc.is_revoked(&s.sid), "idle session revoked as expired");
        let last = std::iter::from_fn(|| reg.outbox.pop()).last();
        assert!(matches!(last, Some(Event::Revoked(r)) if &*r == "expired"));
    }

    /// A memory store whose next `load` stops, once armed, until the test lets it go (a
    /// deterministic interleaving), and whose sessions named in `broken` are out of reach.
    #[derive(Default)]
    struct Gated {
        inner: MemoryStore,
        armed: std::sync::atomic::AtomicBool,
        paused: tokio::sync::Notify,
        resume: tokio::sync::Notify,
        broken: std::sync::Mutex<Vec<String>>,
    }

    mod gated {
        use super::Gated;
        use crate::clock::Millis;
        use crate::sessions::*;
        use std::sync::atomic::Ordering;
        use std::time::Duration;

        #[async_trait::async_trait]
        impl SessionStore for Gated {
            async fn insert(&self, s: &Session) -> StoreResult<()> {
                self.inner.insert(s).await
            }
            async fn load(&self, sid: &str) -> StoreResult<Option<Session>> {
                if self.broken.lock().unwrap().iter().any(|b| b == sid) {
                    return Err(StoreError::Unavailable("test".into()));
                }
                let s = self.inner.load(sid).await;
                if self.armed.swap(false, Ordering::SeqCst) {
                    self.paused.notify_one();
                    self.resume.notified().await;
                }
                s
            }
            async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool> {
                self.inner.cas(s, expected).await
            }
            async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>> {
                self.inner.unrevoked(user).await
            }
            async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>> {
                self.inner.revoked_since(since).await
            }
        }

        #[async_trait::async_trait]
        impl TicketStore for Gated {
            async fn put_ticket(&self, t: &str, g: &TicketGrant, ttl: Duration) -> StoreResult<()> {
                self.inner.put_ticket(t, g, ttl).await
            }
            async fn take_ticket(&self, t: &str) -> StoreResult<Option<TicketGrant>> {
                self.inner.take_ticket(t).await
            }
        }

        #[async_trait::async_trait]
        impl Counters for Gated {
            async fn hit(&self, key: &str, window: Duration) -> StoreResult<(u32, u64)> {
                self.inner.hit(key, window).await
            }
            async fn give_back(&self, key: &str) -> StoreResult<()> {
                self.inner.give_back(key).await
            }
            async fn count(&self, key: &str) -> StoreResult<u32> {
                self.inner.count(key).await
            }
        }

        impl Presence for Gated {}

        #[async_trait::async_trait]
        impl RoleStore for Gated {
            async fn roles(&self, user: &str) -> StoreResult<Option<Vec<String>>> {
                self.inner.roles(user).await
            }
            async fn set_roles(&self, user: &str, roles: &[String]) -> StoreResult<()> {
                self.inner.set_roles(user, roles).await
            }
        }
    }

    /// A revocation that lands after the open path loaded the session but before it registered
    /// the channel must still reach that channel (or refuse it): never a live channel of a
    /// revoked session.
    #[tokio::test]
    async fn a_revocation_racing_a_channel_open_is_never_missed() {
        let clock = Arc::new(ManualClock::new(crate::clock::now_ms()));
        let store = Arc::new(Gated::default());
        let (svc, _dir) = service_on(clock, 2_000, store.clone()).await;
        let s = session(&svc).await;
        let grant = TicketGrant {
            sid: s.sid.clone(),
            gen: 0,
        };
        svc.sessions
            .store
            .put_ticket("t", &grant, Duration::from_secs(30))
            .await
            .unwrap();
        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let opening = tokio::spawn({
            let svc = svc.clone();
            async move { svc.open_channel("t", None, Kind::Sse).await.map(|o| o.reg) }
        });
        // The open path has loaded the live session; revoke it before it registers.
        store.paused.notified().await;
        assert!(svc.revoke(&s.sid, "logout").await.unwrap());
        store.resume.notify_one();
        match opening.await.unwrap() {
            Err(ApiError::InvalidTicket) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(reg) => {
                let heard =
                    std::iter::from_fn(|| reg.outbox.pop()).any(|e| matches!(e, Event::Revoked(_)));
                assert!(heard, "a channel opened across a revocation never hears it");
            }
        }
        assert!(!svc.hub.has_channels(&s.sid));
    }

    /// A role change attempts every session even when one fails, says which failed, and does
    /// not rotate a session that has no channel (its next refresh carries the new roles).
    #[tokio::test]
    async fn a_role_change_reaches_every_session_and_reports_failures() {
        let clock = Arc::new(ManualClock::new(crate::clock::now_ms()));
        let store = Arc::new(Gated::default());
        let (svc, _dir) = service_on(clock, 2_000, store.clone()).await;
        let mut regs = Vec::new();
        for sid in ["a", "b", "c", "d"] {
            let s = session_named(&svc, sid).await;
            regs.push(svc.hub.register(&s.sid, &s.user, Kind::Ws).unwrap().0);
        }
        let quiet = session_named(&svc, "quiet").await;
        store.broken.lock().unwrap().push("b".into());
        let done = svc.set_roles("bob", vec!["staff".into()]).await.unwrap();
        assert_eq!(done.renewed, 3);
        assert_eq!(done.on_next_refresh, 1);
        assert_eq!(
            done.failed
                .iter()
                .map(|(sid, _)| sid.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        for (sid, reg) in ["a", "b", "c", "d"].iter().zip(&regs) {
            let want = usize::from(*sid != "b");
            assert_eq!(pushes(reg), want, "session {sid}");
        }
        let quiet = svc.sessions.store.load(&quiet.sid).await.unwrap().unwrap();
        assert_eq!(quiet.current_gen, 0, "no blind rotation without a channel");
        let (resp, _) = svc.issue(&quiet, 0, svc.now() + TTL).unwrap();
        let claims = svc.issuer.access.verify(&resp.access_token).unwrap();
        assert_eq!(claims.roles, ["staff"]);
    }
}

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
        let (now, policy) = (now_ms(), self.sessions.policy);
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
        if first {
            self.scheduler.schedule(&s.sid, self.next_due(&s));
        }
        // The newest access token issued to anyone is the best this client can hold: when even
        // that has expired, the client is back after expiry, and its first push is no breach.
        let newest = s.issued_exp_ms.max(s.push_exp_ms);
        let mut held_exp_ms = if newest > now { newest } else { HELD_EXPIRED };
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
            // It proved an older generation, so it missed the last push: its access token
            // expires before that push's did.
            if held_exp_ms != HELD_EXPIRED && s.push_exp_ms <= now {
                held_exp_ms = HELD_EXPIRED;
            } else if held_exp_ms != HELD_EXPIRED {
                held_exp_ms = held_exp_ms.min(s.push_exp_ms);
            }
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
            /// Not now; renew again at this time if given.
            Skip(Option<Millis>),
            Push(u64),
            Dead,
        }
        let now = now_ms();
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

    pub(super) fn deliver_tokens(&self, push: TokensPush) {
        let (sid, exp) = (push.sid.clone(), push.access_exp_ms);
        if self.hub.deliver(&sid, &Event::Tokens(Arc::new(push))) > 0 {
            // Pushed about now, with this expiry: the same rule as `next_due`.
            let at = self.deadline(exp).max(now_ms() + self.push_floor_ms());
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
        if allowed {
            if let Err(e) = self.renew(sid, Reason::Requested, now_ms()).await {
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
        let now = now_ms();
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

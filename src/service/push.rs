//! The push path: opening channels (with resume), scheduled and requested renewals
//! (scheduler fires → store rotates → hub fans out + bus), and shutdown's reconnect.

use super::*;

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
        let now = now_ms();
        // One store round trip: confirming a Last-Event-ID already yields the session.
        let found = match last_event_id.and_then(parse_event_id) {
            Some((sid, gen)) if sid == grant.sid => {
                proved = proved.max(gen);
                self.sessions
                    .update(sid, |s| s.confirm(gen, now))
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

    pub(super) fn deliver_tokens(&self, push: TokensPush) {
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

    /// A `tokens` event was written to a channel: push lag and delivery margin metrics, and
    /// the session's last delivery for the admin console. `prev_exp_ms` is the expiry of the
    /// access token it replaces (0 when unknown).
    pub fn written(&self, push: &TokensPush, prev_exp_ms: Millis) {
        self.metrics.written(push.deadline_ms, prev_exp_ms);
        let now = now_ms();
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

//! Credentials and refresh tokens: login, the rotation rule at `/auth/refresh` and
//! `/auth/ticket`, and confirmation of a generation the client proved it holds.

use super::*;

/// Failed logins are counted per address and username in windows this long.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// How long a login waits while its window is full only of attempts still in flight (not of
/// failures) before it is answered 503 + `Retry-After: 1`: ample for `--login-failures` hashes.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);
/// How often such a login tries for a place again (the count may live in a shared store).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(50);
/// Logins waiting so on this node at most: each polls the store, so a flood against one
/// account must not turn into a flood of store round trips (128 x 20/s x 3 at most).
static WAITING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(128);
/// Tickets per session: at most `--tickets-per-session` per window (DESIGN: tickets are
/// rate-limited), then 429 `rate_limited` with `Retry-After`.
pub const TICKET_WINDOW: Duration = Duration::from_secs(10);

impl Service {
    /// Checks credentials (rate-limited per address and username) and opens a session.
    pub async fn login(
        self: &Arc<Self>,
        username: &str,
        password: &str,
        device: &str,
        ip: &str,
    ) -> ApiResult<TokenResponse> {
        // The attempt is reserved (counted) before the password is checked, atomically in the
        // store: of N racing guesses only the first `--login-failures` are ever evaluated.
        // A failure keeps its reservation and is also recorded under `failed`, so a refusal
        // can tell "too many failures" (429) from "too many attempts still in flight".
        let key = format!("login|{ip}|{username}");
        let failed = format!("login-failed|{ip}|{username}");
        let store = &self.sessions.store;
        let limit = self.timing.login_failures;
        let give_up = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        let mut waiting = None;
        loop {
            let (attempts, retry) = store.hit(&key, LOGIN_WINDOW).await?;
            if attempts <= limit {
                break;
            }
            // Not evaluated, so not a failure: the reservation goes back.
            store.give_back(&key).await?;
            if store.count(&failed).await? >= limit {
                self.metrics
                    .logins
                    .with_label_values(&["rate_limited"])
                    .inc();
                return Err(ApiError::RateLimited {
                    retry_after_secs: retry.max(1),
                });
            }
            // Full only of attempts in flight: a burst of correct logins for one account,
            // or guesses not yet judged. Wait for them to resolve (a success frees its
            // place, a failure makes the next round a 429), then say "busy", never 429.
            if waiting.is_none() {
                waiting = WAITING.try_acquire().ok();
            }
            if waiting.is_none() || tokio::time::Instant::now() >= give_up {
                self.metrics.logins.with_label_values(&["busy"]).inc();
                return Err(ApiError::Busy);
            }
            tokio::time::sleep(IN_FLIGHT_POLL).await;
        }
        drop(waiting);
        // `external`: vouched for by the hook, so the identity is stored with the session.
        let checked = if self.integration.hook.is_some() && !self.users.exists(username) {
            // A name the users file does not know is asked of the hook. Its dummy hash runs
            // meanwhile, not before: such a login costs max(hash, hook), about what a wrong
            // password of a users-file name costs, so the file's names do not stand out.
            let hash = async {
                let checked = self.users.check_password(username, password).await;
                checked.map(|_| ()).map_err(ApiError::from)
            };
            let hook = self.hook_login(username, password, ip, device);
            tokio::try_join!(hash, hook).map(|(_, who)| who.map(|w| (w, true)))
        } else {
            match self.users.check_password(username, password).await {
                Ok(None) => self
                    .hook_login(username, password, ip, device)
                    .await
                    .map(|who| who.map(|w| (w, true))),
                Ok(who) => Ok(who.map(|w| (w, false))),
                Err(e) => Err(e.into()),
            }
        };
        let (who, external) = match checked {
            Ok(Some(found)) => found,
            Ok(None) => {
                store.hit(&failed, LOGIN_WINDOW).await?;
                self.metrics.logins.with_label_values(&["failed"]).inc();
                return Err(ApiError::InvalidCredentials);
            }
            Err(e) => {
                // Not evaluated (busy): the reservation goes back.
                store.give_back(&key).await?;
                return Err(e);
            }
        };
        // Only failures count against the limit: a success returns its reservation.
        store.give_back(&key).await?;
        let now = self.now();
        let exp = self.issuer.access_exp_ms(now);
        let mut s = Session::new(
            random_id(16),
            who.name.clone(),
            device.to_string(),
            ip.to_string(),
            random_id(32),
            now,
            exp,
        );
        if external {
            s.who = Some(who.clone());
        }
        store.insert(&s).await?;
        self.metrics.logins.with_label_values(&["ok"]).inc();
        tracing::info!(user = %who.name, sid = %s.sid, "login");
        Ok(self.issue(&s, 0, exp)?.0)
    }

    /// Applies the rotation rule to a presented refresh token. Replay revokes the session.
    /// `access_exp_ms`: expiry of the access token that will be issued with the answer, if any.
    pub async fn redeem(
        &self,
        token: &str,
        how: Use,
        access_exp_ms: Option<Millis>,
    ) -> ApiResult<(Session, u64)> {
        let p =
            RefreshTokens::parse(token).ok_or(ApiError::InvalidGrant("malformed refresh token"))?;
        let now = self.now();
        let policy = self.sessions.policy;
        let refresh = &self.issuer.refresh;
        let res = self
            .sessions
            .update(&p.sid, |s| {
                if !refresh.verify(&p, &s.nonce) {
                    return Outcome::Invalid("unknown refresh token");
                }
                let before = s.version;
                let o = s.present(p.gen, how, now, &policy);
                if let (Outcome::Issue(_), Some(exp)) = (o, access_exp_ms) {
                    s.issued(exp, s.version != before, &policy);
                }
                o
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
        let exp = self.issuer.access_exp_ms(self.now());
        let (s, gen) = self.redeem(token, Use::Refresh, Some(exp)).await?;
        Ok(self.issue(&s, gen, exp)?.0)
    }

    /// `POST /auth/ticket`: a single-use ticket for a channel, recording the generation proved.
    pub async fn ticket(&self, token: &str) -> ApiResult<String> {
        let (s, _) = self.redeem(token, Use::Ticket, None).await?;
        // Counted only for holders of a valid refresh token, so nobody else can use up a
        // session's tickets.
        let (n, retry) = self
            .sessions
            .store
            .hit(&format!("ticket|{}", s.sid), TICKET_WINDOW)
            .await?;
        if n > self.timing.tickets_per_window {
            return Err(ApiError::RateLimited {
                retry_after_secs: retry.max(1),
            });
        }
        let gen = RefreshTokens::parse(token).map_or(0, |p| p.gen);
        let ticket = random_id(24);
        let grant = TicketGrant { sid: s.sid, gen };
        self.sessions
            .store
            .put_ticket(&ticket, &grant, self.timing.ticket_ttl)
            .await?;
        Ok(ticket)
    }

    /// Confirms that the client holds generation `gen` of `sid`.
    pub async fn confirm(&self, sid: &str, gen: u64) -> ApiResult<()> {
        let (now, policy) = (self.now(), self.sessions.policy);
        self.sessions
            .update(sid, |s| s.confirm(gen, now, &policy))
            .await?;
        Ok(())
    }
}

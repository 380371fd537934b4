//! Users the app authenticates itself: sessions minted by a trusted backend with the service
//! key, and logins vouched for by `--login-hook`. Both end as an ordinary session that carries
//! its identity in the store, so any node's pushes and refreshes work like any other.

use subtle::ConstantTimeEq;

use super::*;
use crate::external::Identities;
use crate::login_hook::{LoginHook, Verdict};

/// One revocation on the feed (`GET /admin/events`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revocation {
    pub session_id: String,
    pub reason: String,
    /// Unix milliseconds, as this node saw it.
    pub at_ms: Millis,
}

/// Revocations buffered per feed subscriber before it counts as lagging.
const FEED_BUFFER: usize = 4096;

/// The integration settings a [`Service`] holds.
pub struct Integration {
    /// Identities from an older version's `external-users.json` (read only): sessions minted
    /// before identities moved into the store.
    pub external: Identities,
    /// `--login-hook`, if configured.
    pub hook: Option<LoginHook>,
    /// Bytes of `--service-key-file`, trimmed; `None` turns the trusted-backend routes off.
    pub service_key: Option<Vec<u8>>,
    /// Every revocation this node learns of (its own and the cluster's), for resource servers.
    pub feed: tokio::sync::broadcast::Sender<Revocation>,
    /// Cancelled at graceful shutdown: feed subscribers get `reconnect` and the stream ends.
    pub closing: tokio_util::sync::CancellationToken,
}

impl Default for Integration {
    fn default() -> Self {
        Integration {
            external: Identities::default(),
            hook: None,
            service_key: None,
            feed: tokio::sync::broadcast::channel(FEED_BUFFER).0,
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }
}

impl Integration {
    /// Service key (0600 file, trimmed), login hook and an old version's external identities.
    pub fn from_config(config: &crate::config::Config) -> Result<Integration, String> {
        let service_key = match &config.service_key_file {
            Some(path) => Some(crate::tokens::keys::service_key(path)?),
            None => None,
        };
        let hook = match &config.login_hook {
            Some(url) => {
                // The app tells our calls from anyone else's by the service key, if there is one.
                let secret = service_key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned());
                Some(LoginHook::new(url, secret)?)
            }
            None => None,
        };
        Ok(Integration {
            external: Identities::open(&config.data_dir)?,
            hook,
            service_key,
            ..Integration::default()
        })
    }

    /// Tells feed subscribers (if any) that a session was revoked.
    pub fn announce_revocation(&self, sid: &str, reason: &str) {
        // No subscriber is the normal case: send only fails then.
        let _ = self.feed.send(Revocation {
            session_id: sid.to_string(),
            reason: reason.to_string(),
            at_ms: now_ms(),
        });
    }
}

impl Service {
    /// Records the roles the app (or its hook) gives an external user now: the admin check
    /// reads them from the store, so any node sees a re-mint with fewer roles at once. When
    /// they changed, the user's live sessions take them and get `claims_changed` tokens.
    async fn register_roles(&self, who: &Identity) -> ApiResult<()> {
        let store = &self.sessions.store;
        let before = store.roles(&who.name).await?;
        if before.as_ref() == Some(&who.roles) {
            return Ok(());
        }
        store.set_roles(&who.name, &who.roles).await?;
        if before.is_none() {
            return Ok(());
        }
        let now = self.now();
        for s in self.live_sessions(Some(&who.name)).await? {
            let roles = who.roles.clone();
            self.sessions
                .update(&s.sid, |s| {
                    if let Some(w) = s.who.as_mut().filter(|w| w.roles != roles) {
                        w.roles = roles.clone();
                        s.version += 1;
                    }
                })
                .await?;
            self.renew(&s.sid, Reason::ClaimsChanged, now).await?;
        }
        Ok(())
    }

    /// Current roles of a session's user (for admin listings).
    pub fn roles_of(&self, s: &Session) -> Option<Vec<String>> {
        self.identity(s).ok().map(|who| who.roles)
    }

    /// Whether trusted-backend routes are on.
    pub fn service_key_configured(&self) -> bool {
        self.integration.service_key.is_some()
    }

    /// Constant-time check of a presented service key.
    pub fn service_key_matches(&self, presented: &[u8]) -> bool {
        match &self.integration.service_key {
            Some(key) => bool::from(key.as_slice().ct_eq(presented)),
            None => false,
        }
    }

    /// `POST /admin/sessions`: a new session for a user the app vouches for.
    pub async fn mint_session(
        &self,
        who: Identity,
        device: &str,
        ip: &str,
    ) -> ApiResult<TokenResponse> {
        self.register_roles(&who).await?;
        let name = who.name.clone();
        let now = self.now();
        let exp = self.issuer.access_exp_ms(now);
        let mut s = Session::new(
            random_id(16),
            name.clone(),
            device.to_string(),
            ip.to_string(),
            random_id(32),
            now,
            exp,
        );
        s.who = Some(who);
        self.sessions.store.insert(&s).await?;
        self.metrics.logins.with_label_values(&["minted"]).inc();
        tracing::info!(user = %name, sid = %s.sid, "session minted by trusted backend");
        Ok(self.issue(&s, 0, exp)?.0)
    }

    /// After the users file said no: asks `--login-hook` about a username the file does not
    /// know. `Ok(None)` is a refusal (counts as a failed login); a hook that cannot answer is
    /// 503, never a login.
    pub(super) async fn hook_login(
        &self,
        username: &str,
        password: &str,
        ip: &str,
        device: &str,
    ) -> ApiResult<Option<Identity>> {
        let Some(hook) = &self.integration.hook else {
            return Ok(None);
        };
        if self.users.exists(username) {
            return Ok(None);
        }
        match hook.check(username, password, ip, device).await {
            Verdict::Accept(mut who) => {
                // Refused like an unusable answer: a hook that cannot name its user cleanly
                // must not log anyone in (nor forge log lines with a `\n`).
                if let Err(why) = crate::users::check_claim("sub", &who.name)
                    .and_then(|()| crate::users::check_claim("name", &who.display_name))
                    .and_then(|()| {
                        who.roles
                            .iter()
                            .try_for_each(|r| crate::users::check_claim("a role", r))
                    })
                {
                    tracing::warn!(%why, "login hook answered an unusable identity");
                    return Err(ApiError::HookUnavailable);
                }
                // The hook's users live in their own namespace: `hook:alice` is never the
                // users file's alice, whatever `sub` the hook answers.
                who.name = format!("{}{}", crate::users::HOOKED, who.name);
                self.register_roles(&who).await?;
                Ok(Some(who))
            }
            Verdict::Refuse => Ok(None),
            Verdict::Busy => Err(ApiError::Busy),
            Verdict::Unavailable(why) => {
                tracing::warn!(%why, "login hook unavailable");
                self.metrics
                    .logins
                    .with_label_values(&["hook_unavailable"])
                    .inc();
                Err(ApiError::HookUnavailable)
            }
        }
    }
}

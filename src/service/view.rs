//! What handlers ask the service beyond the flows: checking an access token, and read-only
//! views (channel counts, delivery stats, metrics, the issuer) — so no handler reaches into
//! the service's parts.

use super::*;
use crate::sessions::Session;
use crate::tokens::{Claims, Rejection};

impl Service {
    /// Verifies a Bearer access token of a session that is not revoked. An expired token of a
    /// live session with channels on this node nudges a push to them (rate-limited): its
    /// client is behind.
    pub fn authenticate(self: &Arc<Self>, token: &str) -> ApiResult<Claims> {
        match self.issuer.access.verify(token) {
            Ok(claims) if self.is_revoked(&claims.sid) => {
                Err(ApiError::InvalidToken("the session was revoked"))
            }
            Ok(claims) => Ok(claims),
            Err(Rejection::Expired) => {
                if let Ok(c) = self.issuer.access.verify_ignoring_expiry(token) {
                    if !self.is_revoked(&c.sid) && self.hub.has_channels(&c.sid) {
                        let svc = self.clone();
                        tokio::spawn(async move { svc.request_push(&c.sid).await });
                    }
                }
                Err(ApiError::InvalidToken(Rejection::Expired.describe()))
            }
            Err(r) => Err(ApiError::InvalidToken(r.describe())),
        }
    }

    /// The session of a valid (signed, unexpired) access token, revoked or not.
    pub fn session_of_access(&self, token: &str) -> Option<String> {
        self.issuer.access.verify(token).ok().map(|c| c.sid)
    }

    /// The user's roles in the users directory now (with admin overrides); `None` for a user
    /// outside it.
    pub fn directory_roles(&self, user: &str) -> Option<Vec<String>> {
        self.users.identity(user).map(|who| who.roles)
    }

    /// The roles `sub` has now, for the admin check: a users-file user's (with admin
    /// overrides); for a minted or hooked user the roles last registered for that exact
    /// subject, read from the store so a re-mint with fewer roles counts on every node at
    /// once. Anyone else (a user since removed, a session minted by an older version) has none.
    pub async fn live_roles(&self, sub: &str) -> ApiResult<Vec<String>> {
        if let Some(roles) = self.directory_roles(sub) {
            return Ok(roles);
        }
        if crate::users::is_external(sub) {
            return Ok(self.sessions.store.roles(sub).await?.unwrap_or_default());
        }
        Ok(vec![])
    }

    /// A live (unrevoked, unexpired) session by id.
    pub async fn live_session(&self, sid: &str) -> ApiResult<Option<Session>> {
        if sid.is_empty() || sid.len() > 128 {
            return Ok(None);
        }
        let policy = self.sessions.policy;
        Ok(self
            .sessions
            .store
            .load(sid)
            .await?
            .filter(|s| s.is_live(now_ms(), &policy)))
    }

    /// (SSE, WS) channels of a session on this node.
    pub fn channel_counts(&self, sid: &str) -> (usize, usize) {
        self.hub.counts(sid)
    }

    /// Names this node in cluster-wide admin views (set once, at start).
    pub fn set_node(&self, name: String) {
        let _ = self.node.set(name);
    }

    /// This node's name in cluster-wide admin views.
    pub fn node(&self) -> &str {
        self.node.get().map_or("this node", String::as_str)
    }

    /// Tells the store which channels this node holds (see [`super::PRESENCE_EVERY`]).
    pub async fn announce_presence(&self) {
        let ttl = super::PRESENCE_EVERY * 3;
        let snapshot = self.hub.snapshot();
        if let Err(e) = self
            .sessions
            .store
            .put_presence(self.node(), &snapshot, ttl)
            .await
        {
            tracing::warn!(error = %e, "announcing channel presence failed");
        }
    }

    /// Channels per session on every node: this node's live, the others' as they last said
    /// (at most [`super::PRESENCE_EVERY`] old). Each entry: (node, SSE, WS). With the store out
    /// of reach, this node's only.
    pub async fn cluster_channels(
        &self,
    ) -> std::collections::HashMap<String, Vec<(String, usize, usize)>> {
        let me = self.node().to_string();
        let mut out: std::collections::HashMap<String, Vec<(String, usize, usize)>> =
            Default::default();
        let others = self.sessions.store.presence().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading other nodes' channels failed");
            vec![]
        });
        for (node, channels) in others.into_iter().filter(|(n, _)| *n != me) {
            for (sid, sse, ws) in channels {
                out.entry(sid).or_default().push((node.clone(), sse, ws));
            }
        }
        for (sid, sse, ws) in self.hub.snapshot() {
            out.entry(sid).or_default().push((me.clone(), sse, ws));
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Live channels of a kind on this node.
    pub fn live_channels(&self, kind: Kind) -> usize {
        self.hub.live(kind)
    }

    /// The session's last delivery on this node, for the admin console.
    pub fn last_push(&self, sid: &str) -> Option<stats::LastPush> {
        self.stats.last_push(sid)
    }

    /// Deliveries on this node in the last minute.
    pub fn pushes_last_minute(&self) -> u64 {
        self.stats.pushes_last_minute(now_ms())
    }

    /// This node's Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The public signing keys, as JWKS `keys` (current first, then retired keys whose
    /// tokens may still be unexpired).
    pub fn jwks(&self) -> Vec<serde_json::Value> {
        self.issuer.access.jwks()
    }

    /// The `iss` of our tokens.
    pub fn issuer_name(&self) -> &str {
        &self.issuer.issuer
    }

    /// Trusted-backend integration state (revocation feed, login hook, external identities).
    pub fn integration(&self) -> &integration::Integration {
        &self.integration
    }
}

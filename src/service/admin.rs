//! Ending sessions and changing who users are: logout/admin revocation and role changes
//! pushed to every live session.

use super::*;

impl Service {
    /// Revokes a session (if not already) and tells every channel everywhere.
    pub async fn revoke(&self, sid: &str, reason: &str) -> ApiResult<bool> {
        let now = self.now();
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

    /// Sets a user's roles and pushes `claims_changed` tokens to every live session that has
    /// a channel. Every session is attempted, whatever happens to the others; the report says
    /// which ones failed. A session with no channel anywhere is not rotated blind: nobody would
    /// receive the push, and its next refresh is signed with the new roles anyway.
    pub async fn set_roles(
        self: &Arc<Self>,
        user: &str,
        roles: Vec<String>,
    ) -> ApiResult<RoleChange> {
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
        let now = self.now();
        let mut report = RoleChange::default();
        // Concurrently, so a user with thousands of sessions gets them all at once.
        // Spawned, so signing spreads over every core; at most 256 in flight.
        let mut tasks = tokio::task::JoinSet::new();
        let mut sids = std::collections::HashMap::new();
        for s in &sessions {
            // In a cluster the channel may be on another node: only the bus can reach it.
            if !self.hub.has_channels(&s.sid) && !self.bus.is_shared() {
                report.on_next_refresh += 1;
                continue;
            }
            if tasks.len() >= 256 {
                if let Some(r) = tasks.join_next_with_id().await {
                    report.record(r, &mut sids);
                }
            }
            let (me, sid) = (self.clone(), s.sid.clone());
            let handle =
                tasks.spawn(async move { me.renew(&sid, Reason::ClaimsChanged, now).await });
            sids.insert(handle.id(), s.sid.clone());
        }
        while let Some(r) = tasks.join_next_with_id().await {
            report.record(r, &mut sids);
        }
        if !report.failed.is_empty() {
            tracing::warn!(%user, failed = report.failed.len(), "role change: some sessions kept their old tokens");
        }
        Ok(report)
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
}

/// What a role change did to the user's live sessions.
#[derive(Debug, Default)]
pub struct RoleChange {
    /// Sessions pushed new tokens now (`claims_changed`).
    pub renewed: usize,
    /// Sessions without a channel: their next refresh carries the new roles.
    pub on_next_refresh: usize,
    /// Sessions whose push failed, with why (they keep their old tokens until their next
    /// refresh or renewal, which is signed with the new roles).
    pub failed: Vec<(String, String)>,
}

impl RoleChange {
    fn record(
        &mut self,
        r: Result<(tokio::task::Id, ApiResult<()>), tokio::task::JoinError>,
        sids: &mut std::collections::HashMap<tokio::task::Id, String>,
    ) {
        let (id, outcome) = match r {
            Ok((id, Ok(()))) => (id, Ok(())),
            Ok((id, Err(e))) => (id, Err(e.to_string())),
            Err(e) => (e.id(), Err("internal error".to_string())),
        };
        let sid = sids.remove(&id).unwrap_or_default();
        match outcome {
            Ok(()) => self.renewed += 1,
            Err(why) => self.failed.push((sid, why)),
        }
    }
}

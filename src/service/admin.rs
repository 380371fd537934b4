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
        let now = self.now();
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
}

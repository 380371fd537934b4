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
    /// receive the push, and its next refresh (on any node) is signed with the new roles anyway.
    ///
    /// "Anywhere" is this node's channels plus what the other nodes last wrote as presence,
    /// which lags by up to [`super::PRESENCE_EVERY`]. So the sessions found without a channel
    /// are not forgotten: every node (this one too) is told of them and pushes them their new
    /// claims if it holds a channel of one, or when it opens one (`hold_claims`).
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
        let elsewhere = self.channels_elsewhere().await;
        let mut push = vec![];
        let mut pending = vec![];
        for s in sessions {
            let reached = self.hub.has_channels(&s.sid)
                || elsewhere.as_ref().is_none_or(|e| e.contains(&s.sid));
            if reached {
                push.push(s.sid);
            } else {
                pending.push(s.sid);
            }
        }
        let mut report = RoleChange::default();
        if !pending.is_empty() {
            let here = self.hold_claims(&pending);
            report.on_next_refresh = pending.len() - here.len();
            push.extend(here);
            // Published after RolesChanged, on the same ordered bus: a node that pushes one
            // of these signs it with the new roles.
            self.bus.publish(BusEvent::ClaimsPending { sids: pending });
        }
        let now = self.now();
        // Concurrently, so a user with thousands of sessions gets them all at once.
        // Spawned, so signing spreads over every core; at most 256 in flight.
        let mut tasks = tokio::task::JoinSet::new();
        let mut sids = std::collections::HashMap::new();
        for sid in push {
            if tasks.len() >= 256 {
                if let Some(r) = tasks.join_next_with_id().await {
                    report.record(r, &mut sids);
                }
            }
            let (me, task_sid) = (self.clone(), sid.clone());
            let handle =
                tasks.spawn(async move { me.renew(&task_sid, Reason::ClaimsChanged, now).await });
            sids.insert(handle.id(), sid);
        }
        while let Some(r) = tasks.join_next_with_id().await {
            report.record(r, &mut sids);
        }
        if !report.failed.is_empty() {
            tracing::warn!(%user, failed = report.failed.len(), "role change: some sessions kept their old tokens");
        }
        Ok(report)
    }

    /// Sessions with a channel on another node, as the nodes last said; `None` when that is
    /// out of reach (then every session counts as reached: pushed, as before presence).
    async fn channels_elsewhere(&self) -> Option<std::collections::HashSet<String>> {
        if !self.bus.is_shared() {
            return Some(Default::default());
        }
        match self.sessions.store.presence().await {
            Ok(nodes) => Some(
                nodes
                    .into_iter()
                    .filter(|(node, _)| node != self.node())
                    .flat_map(|(_, channels)| channels.into_iter().map(|(sid, _, _)| sid))
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "reading other nodes' channels failed; pushing every session");
                None
            }
        }
    }

    /// Sessions a role change found no channel for: remembered here for one access lifetime,
    /// so a channel opening here pushes them their new claims (`push_held_claims`).
    /// Returns those with a channel here already, for the caller to push now. Remembering
    /// before looking, as `open_channel` registers before looking: a channel is found by one
    /// or the other, and taking the entry out makes it one push, not two.
    pub(super) fn hold_claims(&self, sids: &[String]) -> Vec<String> {
        let now = self.now();
        for sid in sids {
            self.claims_pending.insert(sid.clone(), now);
        }
        sids.iter()
            .filter(|sid| self.hub.has_channels(sid) && self.claims_pending.remove(*sid).is_some())
            .cloned()
            .collect()
    }

    /// Another node's role change found no channel of these sessions: push the ones whose
    /// channel is here (opened since that node's presence was written), hold the rest.
    pub(super) fn claims_pending_elsewhere(self: &Arc<Self>, sids: Vec<String>) {
        for sid in self.hold_claims(&sids) {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.renew(&sid, Reason::ClaimsChanged, me.now()).await {
                    tracing::warn!(%sid, error = %e, "pushing new claims failed");
                }
            });
        }
    }

    /// A channel of `sid` was just registered: if a role change left the session's new claims
    /// pending, push them now.
    pub(super) async fn push_held_claims(&self, sid: &str) {
        if self.claims_pending.remove(sid).is_some() {
            if let Err(e) = self.renew(sid, Reason::ClaimsChanged, self.now()).await {
                tracing::warn!(%sid, error = %e, "pushing new claims failed");
            }
        }
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

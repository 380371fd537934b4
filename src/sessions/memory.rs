//! In-memory store: for unit tests and `--store memory`; nothing survives a restart.

use async_trait::async_trait;
use dashmap::DashMap;

use super::local::{local_tickets_and_counters, Ephemeral};
use super::{RoleStore, Session, SessionStore, StoreResult};
use crate::clock::Millis;

/// Sessions and role overrides in maps.
#[derive(Default)]
pub struct MemoryStore {
    sessions: DashMap<String, Session>,
    roles: DashMap<String, Vec<String>>,
    ephemeral: Ephemeral,
}

local_tickets_and_counters!(MemoryStore);

/// One node: nothing to share.
impl super::Presence for MemoryStore {}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, s: &Session) -> StoreResult<()> {
        self.sessions.insert(s.sid.clone(), s.clone());
        Ok(())
    }

    async fn load(&self, sid: &str) -> StoreResult<Option<Session>> {
        Ok(self.sessions.get(sid).map(|s| s.clone()))
    }

    async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool> {
        match self.sessions.get_mut(&s.sid) {
            Some(mut cur) if cur.version == expected => {
                *cur = s.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>> {
        Ok(self
            .sessions
            .iter()
            .filter(|s| s.revoked.is_none() && user.is_none_or(|u| s.user == u))
            .map(|s| s.clone())
            .collect())
    }

    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>> {
        Ok(self
            .sessions
            .iter()
            .filter(|s| s.revoked.is_some() && s.revoked_at >= since)
            .map(|s| s.sid.clone())
            .collect())
    }

    async fn forget_ended(
        &self,
        now: Millis,
        policy: &crate::sessions::Policy,
    ) -> StoreResult<usize> {
        let before = self.sessions.len();
        // Revoked sessions stay for the absolute refresh lifetime, so a replay still finds them
        // (and is answered as reuse); this store has no disk to reload them from.
        self.sessions.retain(|_, s| {
            s.is_live(now, policy) || (s.revoked.is_some() && now - s.revoked_at < policy.max_ms)
        });
        Ok(before - self.sessions.len())
    }
}

#[async_trait]
impl RoleStore for MemoryStore {
    async fn roles(&self, user: &str) -> StoreResult<Option<Vec<String>>> {
        Ok(self.roles.get(user).map(|r| r.clone()))
    }

    async fn set_roles(&self, user: &str, roles: &[String]) -> StoreResult<()> {
        self.roles.insert(user.to_string(), roles.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{Outcome, Policy, Sessions, TicketGrant, Use};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_refreshes_converge_on_one_successor() {
        let store = Arc::new(MemoryStore::default());
        let now = crate::clock::now_ms();
        let s = Session::new(
            "s1".into(),
            "u".into(),
            "d".into(),
            "ip".into(),
            "n".into(),
            now,
            now + 1000,
        );
        store.insert(&s).await.unwrap();
        let sessions = Sessions::new(
            store,
            Policy {
                grace_ms: 30_000,
                idle_ms: 1 << 40,
                max_ms: 1 << 40,
            },
        );
        let mut handles = vec![];
        for _ in 0..50 {
            let sessions = sessions.clone();
            handles.push(tokio::spawn(async move {
                let now = crate::clock::now_ms();
                let p = sessions.policy;
                sessions
                    .update("s1", |s| s.present(0, Use::Refresh, now, &p))
                    .await
                    .unwrap()
                    .unwrap()
                    .1
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap(), Outcome::Issue(1));
        }
        let s = sessions.store.load("s1").await.unwrap().unwrap();
        assert_eq!((s.current_gen, s.confirmed_gen), (1, 0));
    }

    #[test]
    fn tickets_are_single_use() {
        let e = Ephemeral::default();
        let g = TicketGrant {
            sid: "s".into(),
            gen: 1,
        };
        e.put_ticket("t", &g, Duration::from_secs(30));
        assert_eq!(e.take_ticket("t"), Some(g));
        assert_eq!(e.take_ticket("t"), None);
    }
}

//! SQLite store (the default): one file in the data dir, WAL mode, one connection.
//! Every call runs on the blocking pool, so a slow disk never stalls the async workers.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::local::Ephemeral;
use super::{Session, Store, StoreError, StoreResult, TicketGrant};
use crate::clock::Millis;

/// Sessions and role overrides in SQLite; tickets and failure counters in memory.
pub struct SqliteStore {
    // A std Mutex: held only inside blocking closures, never across an await.
    conn: Arc<Mutex<Connection>>,
    ephemeral: Ephemeral,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    version INTEGER NOT NULL,
    revoked_at INTEGER,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
CREATE INDEX IF NOT EXISTS sessions_revoked ON sessions(revoked_at);
CREATE TABLE IF NOT EXISTS roles (user TEXT PRIMARY KEY, roles TEXT NOT NULL);
";

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

impl SqliteStore {
    /// Opens (creating) the database file, mode 0600.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            ephemeral: Ephemeral::default(),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| StoreError::Internal("sqlite mutex poisoned".into()))?;
            f(&guard).map_err(internal)
        })
        .await
        .map_err(internal)?
    }
}

fn decode(data: String) -> rusqlite::Result<Session> {
    serde_json::from_str(&data).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn encode(s: &Session) -> StoreResult<String> {
    serde_json::to_string(s).map_err(internal)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, s: &Session) -> StoreResult<()> {
        let (sid, user, version, data) =
            (s.sid.clone(), s.user.clone(), s.version as i64, encode(s)?);
        self.with(move |c| {
            c.prepare_cached("INSERT INTO sessions (sid, user, version, revoked_at, data) VALUES (?1, ?2, ?3, NULL, ?4)")?
                .execute(params![sid, user, version, data])
                .map(|_| ())
        })
        .await
    }

    async fn load(&self, sid: &str) -> StoreResult<Option<Session>> {
        let sid = sid.to_string();
        self.with(move |c| {
            c.prepare_cached("SELECT data FROM sessions WHERE sid = ?1")?
                .query_row([sid], |r| r.get::<_, String>(0))
                .optional()?
                .map(decode)
                .transpose()
        })
        .await
    }

    async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool> {
        let (sid, version, data) = (s.sid.clone(), s.version as i64, encode(s)?);
        let revoked_at = s.revoked.as_ref().map(|_| s.revoked_at);
        self.with(move |c| {
            c.prepare_cached("UPDATE sessions SET version = ?1, revoked_at = ?2, data = ?3 WHERE sid = ?4 AND version = ?5")?
                .execute(params![version, revoked_at, data, sid, expected as i64])
                .map(|n| n == 1)
        })
        .await
    }

    async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>> {
        let user = user.map(str::to_string);
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT data FROM sessions WHERE revoked_at IS NULL AND (?1 IS NULL OR user = ?1) ORDER BY rowid",
            )?;
            let rows = st.query_map([user], |r| r.get::<_, String>(0))?;
            rows.map(|r| r.and_then(decode)).collect()
        })
        .await
    }

    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>> {
        self.with(move |c| {
            let mut st = c.prepare_cached("SELECT sid FROM sessions WHERE revoked_at >= ?1")?;
            let rows = st.query_map([since], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }

    async fn put_ticket(
        &self,
        ticket: &str,
        grant: &TicketGrant,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.ephemeral.put_ticket(ticket, grant, ttl);
        Ok(())
    }

    async fn take_ticket(&self, ticket: &str) -> StoreResult<Option<TicketGrant>> {
        Ok(self.ephemeral.take_ticket(ticket))
    }

    async fn add_login_failure(&self, key: &str, window: Duration) -> StoreResult<(u32, u64)> {
        Ok(self.ephemeral.add_failure(key, window))
    }

    async fn login_failures(&self, key: &str) -> StoreResult<(u32, u64)> {
        Ok(self.ephemeral.failures(key))
    }

    async fn roles(&self, user: &str) -> StoreResult<Option<Vec<String>>> {
        let user = user.to_string();
        let json = self
            .with(move |c| {
                c.prepare_cached("SELECT roles FROM roles WHERE user = ?1")?
                    .query_row([user], |r| r.get::<_, String>(0))
                    .optional()
            })
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(internal))
            .transpose()
    }

    async fn set_roles(&self, user: &str, roles: &[String]) -> StoreResult<()> {
        let (user, json) = (
            user.to_string(),
            serde_json::to_string(roles).map_err(internal)?,
        );
        self.with(move |c| {
            c.prepare_cached("INSERT INTO roles (user, roles) VALUES (?1, ?2) ON CONFLICT(user) DO UPDATE SET roles = ?2")?
                .execute(params![user, json])
                .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cas_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path).unwrap();
        let mut s = Session::new(
            "s".into(),
            "u".into(),
            "d".into(),
            "ip".into(),
            "n".into(),
            1,
            2,
        );
        store.insert(&s).await.unwrap();
        s.version = 1;
        s.current_gen = 1;
        assert!(store.cas(&s, 0).await.unwrap());
        assert!(!store.cas(&s, 0).await.unwrap(), "stale version refused");
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load("s").await.unwrap().unwrap().current_gen, 1);
        assert_eq!(store.unrevoked(Some("u")).await.unwrap().len(), 1);
        store.set_roles("u", &["admin".into()]).await.unwrap();
        assert_eq!(
            store.roles("u").await.unwrap(),
            Some(vec!["admin".to_string()])
        );
    }
}

//! SQLite store (the default): one file in the data dir, WAL mode. One process owns the file,
//! so an in-memory copy of the sessions is authoritative for reads and compare-and-set, and a
//! writer thread commits queued writes in batches (group commit). Every caller still waits for
//! its write to be committed before it answers, commits are fsynced (`synchronous = FULL`), and
//! a read of a session whose newest state is not committed yet waits for that commit: nothing
//! is told to a client that a process crash or a power loss could take back.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, watch};

use super::local::{local_tickets_and_counters, Ephemeral};
use super::{RoleStore, Session, SessionStore, StoreError, StoreResult};
use crate::clock::Millis;

/// Writes committed in one transaction at most.
const BATCH: usize = 1024;

struct Write {
    /// Queue order: the writer commits in this order and publishes the last one committed.
    seq: u64,
    sid: String,
    user: String,
    version: i64,
    revoked_at: Option<Millis>,
    data: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// Sessions (cached in memory, durable in SQLite), role overrides in SQLite, tickets and
/// failure counters in memory.
pub struct SqliteStore {
    /// Every unrevoked session, plus revoked ones looked up since start.
    cache: Arc<DashMap<String, Session>>,
    /// The last write queued (its `seq`) per session; reads wait until it is committed.
    unsettled: DashMap<String, u64>,
    /// Takes `seq` numbers and queues in the same order (held only to send, never awaited).
    writes: Mutex<(u64, mpsc::UnboundedSender<Write>)>,
    /// The highest `seq` the writer has finished (committed, or failed and dropped from cache).
    committed: watch::Receiver<u64>,
    // A std Mutex: held only inside blocking closures, never across an await.
    conn: Arc<Mutex<Connection>>,
    ephemeral: Ephemeral,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
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

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// The writer thread: takes what is queued, commits it in one transaction, answers everyone.
/// A failed batch leaves the cache first, so waiting readers then read what the file holds.
fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Write>,
    cache: Arc<DashMap<String, Session>>,
    committed: watch::Sender<u64>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO sessions (sid, user, version, revoked_at, data) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(sid) DO UPDATE SET version = ?3, revoked_at = ?4, data = ?5
                     WHERE excluded.version > sessions.version",
                )?;
                for w in &batch {
                    st.execute(params![w.sid, w.user, w.version, w.revoked_at, w.data])?;
                }
            }
            tx.commit()
        })()
        .map_err(|e| e.to_string());
        if result.is_err() {
            for w in &batch {
                cache.remove(&w.sid);
            }
        }
        // Batches are queued in `seq` order, so everything up to this batch's last is done.
        committed.send_replace(batch.last().map_or(0, |w| w.seq));
        for w in batch {
            let _ = w.done.send(result.clone());
        }
    }
}

impl SqliteStore {
    /// Opens (creating) the database file, mode 0600, and loads every unrevoked session.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = open_conn(path)?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        let cache = Arc::new(DashMap::new());
        {
            let mut st = conn.prepare("SELECT data FROM sessions WHERE revoked_at IS NULL")?;
            for data in st.query_map([], |r| r.get::<_, String>(0))? {
                let s = decode(data?)?;
                cache.insert(s.sid.clone(), s);
            }
        }
        let (writes, rx) = mpsc::unbounded_channel();
        let (done, committed) = watch::channel(0);
        let writer = open_conn(path)?;
        let shared = cache.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, rx, shared, done))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(SqliteStore {
            cache,
            unsettled: DashMap::new(),
            writes: Mutex::new((0, writes)),
            committed,
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

    /// Queues `s` for the writer and marks the session unsettled until it is committed. Call
    /// it before (or while) the cached copy shows `s`, so no read answers from it unseen.
    fn queue(&self, s: &Session) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (done, wait) = oneshot::channel();
        let mut w = Write {
            seq: 0,
            sid: s.sid.clone(),
            user: s.user.clone(),
            version: s.version as i64,
            revoked_at: s.revoked.as_ref().map(|_| s.revoked_at),
            data: serde_json::to_string(s).map_err(|e| e.to_string())?,
            done,
        };
        let mut writes = self
            .writes
            .lock()
            .map_err(|_| "sqlite queue mutex poisoned".to_string())?;
        writes.0 += 1;
        w.seq = writes.0;
        self.unsettled.insert(s.sid.clone(), w.seq);
        writes
            .1
            .send(w)
            .map_err(|_| "sqlite writer stopped".to_string())?;
        Ok(wait)
    }

    /// Waits for a queued write. On failure the cached copy is dropped, so the next load
    /// reads what the file really holds.
    async fn wait_committed(
        &self,
        sid: &str,
        queued: Result<oneshot::Receiver<Result<(), String>>, String>,
    ) -> StoreResult<()> {
        let queued_failed = queued.is_err();
        let outcome = match queued {
            Ok(wait) => wait
                .await
                .map_err(|_| "sqlite writer stopped".to_string())
                .and_then(|r| r),
            Err(e) => Err(e),
        };
        // A batch that failed in the writer was evicted there, before waiting readers woke;
        // evicting again here could drop a newer state another caller cached since. Only a
        // write the writer never received is still ours to take out.
        let never_queued = queued_failed;
        outcome.map_err(|e| {
            if never_queued {
                self.cache.remove(sid);
            }
            StoreError::Internal(e)
        })
    }

    /// Queues `s` for the writer and waits until it is committed.
    #[cfg(test)]
    async fn persist(&self, s: &Session) -> StoreResult<()> {
        let queued = self.queue(s);
        self.wait_committed(&s.sid, queued).await
    }

    /// The write a read of `sid` must wait for: the session's last queued one, if the writer
    /// has not finished it.
    fn pending_write(&self, sid: &str) -> Option<u64> {
        let seq = *self.unsettled.get(sid)?;
        (seq > *self.committed.borrow()).then_some(seq)
    }
}

fn decode(data: String) -> rusqlite::Result<Session> {
    serde_json::from_str(&data).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

local_tickets_and_counters!(SqliteStore);

/// One node: nothing to share.
impl super::Presence for SqliteStore {}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert(&self, s: &Session) -> StoreResult<()> {
        let queued = self.queue(s);
        self.cache.insert(s.sid.clone(), s.clone());
        self.wait_committed(&s.sid, queued).await
    }

    async fn load(&self, sid: &str) -> StoreResult<Option<Session>> {
        // Never answer from a state that is not on disk yet (a duplicate refresh while the
        // rotation it duplicates is being committed): wait for its commit, then look again.
        // A write can be pending for a session that is not cached (evicted after a revocation
        // was queued): the file is then behind too, so the wait applies on a miss as well.
        loop {
            let seq = match self.cache.get(sid) {
                // The entry is held while checking, so no `cas` slips in between.
                Some(s) => match self.pending_write(sid) {
                    None => return Ok(Some(s.clone())),
                    Some(seq) => seq,
                },
                None => match self.pending_write(sid) {
                    Some(seq) => seq,
                    None => {
                        // Revoked (or unknown) sessions are not preloaded: look, remember,
                        // then check again (a concurrent `cas` may have cached a newer state
                        // that is not committed yet).
                        let key = sid.to_string();
                        let found = self
                            .with(move |c| {
                                c.prepare_cached("SELECT data FROM sessions WHERE sid = ?1")?
                                    .query_row([key], |r| r.get::<_, String>(0))
                                    .optional()?
                                    .map(decode)
                                    .transpose()
                            })
                            .await?;
                        match found {
                            None => return Ok(None),
                            Some(s) => {
                                self.cache.entry(s.sid.clone()).or_insert(s);
                                continue;
                            }
                        }
                    }
                },
            };
            let mut committed = self.committed.clone();
            committed
                .wait_for(|&c| c >= seq)
                .await
                .map_err(|_| StoreError::Internal("sqlite writer stopped".into()))?;
        }
    }

    async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool> {
        if self.cache.get(&s.sid).is_none() && self.load(&s.sid).await?.is_none() {
            return Ok(false);
        }
        let queued = {
            // The entry lock makes check-and-replace atomic among concurrent callers.
            let Some(mut cur) = self.cache.get_mut(&s.sid) else {
                return Ok(false);
            };
            if cur.version != expected {
                return Ok(false);
            }
            *cur = s.clone();
            // Queued while the entry is locked: a read that sees this state waits for it.
            self.queue(s)
        };
        self.wait_committed(&s.sid, queued).await?;
        Ok(true)
    }

    async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>> {
        let mut out: Vec<Session> = self
            .cache
            .iter()
            .filter(|s| s.revoked.is_none() && user.is_none_or(|u| s.user == u))
            .map(|s| s.clone())
            .collect();
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>> {
        self.with(move |c| {
            let mut st = c.prepare_cached("SELECT sid FROM sessions WHERE revoked_at >= ?1")?;
            let rows = st.query_map([since], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }

    async fn forget_ended(
        &self,
        now: Millis,
        policy: &crate::sessions::Policy,
    ) -> StoreResult<usize> {
        let before = self.cache.len();
        // The file still has them: a later replay of an ended session loads it again.
        // An ended session with a write still queued stays until it is committed: a load
        // would otherwise read the file's older (perhaps still live) state back in.
        self.cache
            .retain(|sid, s| s.is_live(now, policy) || self.pending_write(sid).is_some());
        let committed = *self.committed.borrow();
        self.unsettled.retain(|_, seq| *seq > committed);
        let cutoff = now - policy.max_ms;
        self.with(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE revoked_at < ?1")?
                .execute([cutoff])
                .map(|_| ())
        })
        .await?;
        // Sessions loaded meanwhile can make the cache larger than before.
        Ok(before.saturating_sub(self.cache.len()))
    }
}

#[async_trait]
impl RoleStore for SqliteStore {
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

    /// Session `s` of user `u`, created at 1 ms with an access token expiring at 2 ms.
    fn session() -> Session {
        Session::new(
            "s".into(),
            "u".into(),
            "d".into(),
            "ip".into(),
            "n".into(),
            1,
            2,
        )
    }

    #[tokio::test]
    async fn cas_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path).unwrap();
        let mut s = session();
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

    /// Issue 14 defect 5: a revocation must survive a restart even when an older write of the
    /// same session reaches the writer after it.
    #[tokio::test]
    async fn an_older_write_landing_late_does_not_undo_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path).unwrap();
        let mut s = session();
        store.insert(&s).await.unwrap();
        let mut older = s.clone();
        older.current_gen = 1;
        older.version = 1;
        s.revoke("logout", 5);
        s.version = 2;
        // The order two racing compare-and-sets can reach the writer in: newest first.
        store.persist(&s).await.unwrap();
        store.persist(&older).await.unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let back = store.load("s").await.unwrap().unwrap();
        assert_eq!(back.revoked.as_deref(), Some("logout"));
        assert_eq!(back.version, 2);
    }

    /// The same through the public path: many racing CAS rounds and a revocation, then a
    /// restart; the file holds the newest version of every session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_cas_and_revocation_survive_restart() {
        use crate::sessions::{Policy, Sessions};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let sessions = Sessions::new(
            store.clone(),
            Policy {
                grace_ms: 1,
                idle_ms: 1 << 40,
                max_ms: 1 << 40,
            },
        );
        for round in 0..20 {
            let sid = format!("s{round}");
            let s = Session::new(
                sid.clone(),
                "u".into(),
                "d".into(),
                "ip".into(),
                "n".into(),
                1,
                2,
            );
            store.insert(&s).await.unwrap();
            let mut tasks = vec![];
            for i in 0..16 {
                let (sessions, sid) = (sessions.clone(), sid.clone());
                tasks.push(tokio::spawn(async move {
                    sessions
                        .update(&sid, |s| {
                            if i == 8 {
                                s.revoke("logout", 10);
                            } else if s.revoked.is_none() {
                                s.push(10, 20);
                            }
                        })
                        .await
                        .unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        let want: Vec<Session> = futures::future::join_all((0..20).map(|r| {
            let store = store.clone();
            async move { store.load(&format!("s{r}")).await.unwrap().unwrap() }
        }))
        .await;
        drop(sessions);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        for w in want {
            let back = store.load(&w.sid).await.unwrap().unwrap();
            assert_eq!(back.revoked.as_deref(), Some("logout"), "{}", w.sid);
            assert_eq!(back, w);
        }
    }

    #[tokio::test]
    async fn ended_sessions_leave_memory_but_stay_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let mut s = Session::new(
            "s".into(),
            "u".into(),
            "d".into(),
            "ip".into(),
            "n".into(),
            1000,
            2000,
        );
        store.insert(&s).await.unwrap();
        s.revoke("logout", 5000);
        assert!(store.cas(&s, 0).await.unwrap());
        let policy = crate::sessions::Policy {
            grace_ms: 1,
            idle_ms: 1 << 40,
            max_ms: 1 << 40,
        };
        assert_eq!(store.forget_ended(6000, &policy).await.unwrap(), 1);
        let again = store.load("s").await.unwrap().unwrap();
        assert_eq!(
            again.revoked.as_deref(),
            Some("logout"),
            "a replay still finds the revoked session"
        );
    }

    /// Issue 22: commits that hand out a generation are fsynced, not only written to the WAL.
    #[tokio::test]
    async fn commits_are_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let level = store
            .with(|c| c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0)))
            .await
            .unwrap();
        assert_eq!(level, 2, "synchronous = FULL");
    }

    /// Issue 22: while a rotation is being committed, a read of the session (a duplicate
    /// refresh) waits for the commit instead of answering from state a crash could lose.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_wait_for_the_commit_of_what_they_see() {
        use futures::FutureExt;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let mut s = session();
        store.insert(&s).await.unwrap();
        // Another connection holds the write lock: the writer cannot commit until it lets go.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        s.version = 1;
        s.current_gen = 1;
        let rotating = tokio::spawn({
            let (store, s) = (store.clone(), s.clone());
            async move { store.cas(&s, 0).await }
        });
        while store.cache.get("s").unwrap().version != 1 {
            tokio::task::yield_now().await;
        }
        let mut read = Box::pin(store.load("s"));
        for _ in 0..20 {
            assert!(
                (&mut read).now_or_never().is_none(),
                "answered from a state not committed yet"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        blocker.execute_batch("COMMIT").unwrap();
        assert!(rotating.await.unwrap().unwrap());
        assert_eq!(read.await.unwrap().unwrap().current_gen, 1);
    }

    /// A revocation still being committed must not be undone by the prune evicting it and a
    /// load reading the file's older, live state back in.
    #[tokio::test]
    async fn a_pruned_revocation_is_not_read_back_live() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let mut s = session();
        store.insert(&s).await.unwrap();
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        s.revoke("logout", 5);
        let revoking = tokio::spawn({
            let (store, s) = (store.clone(), s.clone());
            async move { store.cas(&s, 0).await }
        });
        while store.cache.get("s").unwrap().revoked.is_none() {
            tokio::task::yield_now().await;
        }
        let policy = crate::sessions::Policy {
            grace_ms: 1,
            idle_ms: 1 << 40,
            max_ms: 1 << 40,
        };
        // The prune's own DELETE waits for the blocker too: only its eviction matters here.
        let pruning = tokio::spawn({
            let store = store.clone();
            async move { store.forget_ended(6, &policy).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.load("s").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        blocker.execute_batch("COMMIT").unwrap();
        assert!(revoking.await.unwrap().unwrap());
        pruning.await.unwrap().unwrap();
        let seen = read.await.unwrap().unwrap().unwrap();
        assert_eq!(seen.revoked.as_deref(), Some("logout"), "revocation undone");
        let again = store.load("s").await.unwrap().unwrap();
        assert_eq!(again.revoked.as_deref(), Some("logout"));
    }
}

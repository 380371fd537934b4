//! Redis store for clusters: sessions, tickets, login-failure windows and role overrides, shared
//! by every node. The compare-and-set is one Lua script, so it is atomic across nodes.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::{
    Counters, Epoch, Presence, RoleStore, Session, SessionStore, StoreError, StoreResult,
    TicketGrant, TicketStore,
};
use crate::clock::Millis;

/// KEYS[1] session key, KEYS[2] `tp:revoked`, KEYS[3] `tp:live`, KEYS[4] `tp:epoch`;
/// ARGV[1] expected version, ARGV[2] new version, ARGV[3] data, ARGV[4] sid, ARGV[5]
/// revoked_at or "", ARGV[6] oldest revocation worth keeping — returns 1 when written.
/// A revocation bumps the epoch in the same step, so a node that sees the new epoch finds the
/// revocation in `tp:revoked`; entries past any access token's lifetime are trimmed.
const CAS: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
  redis.call('SREM', KEYS[3], ARGV[4])
  redis.call('INCR', KEYS[4])
end
return 1
";

/// Revocation counter (see [`SessionStore::epoch`]).
const EPOCH: &str = "tp:epoch";
/// Role-change counter.
const ROLES_EPOCH: &str = "tp:roles-epoch";
/// Revocations are kept in `tp:revoked` this long: far past any access token's lifetime.
const REVOKED_KEEP_MS: Millis = 86_400_000;

/// KEYS[1] counter key: decrements it if it still exists.
const GIVE_BACK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
";

/// A handle over a self-reconnecting Redis connection.
pub struct RedisStore {
    conn: ConnectionManager,
    /// Session keys expire this long after login (absolute lifetime plus a day for replays).
    session_ttl_secs: u64,
    cas: redis::Script,
    give_back: redis::Script,
    /// For the cluster bus, which needs its own pub/sub connection.
    pub client: redis::Client,
}

/// A connection that fails fast (about a second) while Redis is down and reconnects with
/// backoff in the background.
pub async fn manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(1000)))
        .set_response_timeout(Some(Duration::from_millis(1000)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(1000));
    ConnectionManager::new_with_config(client.clone(), cfg).await
}

fn err(e: redis::RedisError) -> StoreError {
    // Every Redis failure means the shared state is out of reach: callers answer 503.
    StoreError::Unavailable(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn key(sid: &str) -> String {
    format!("tp:s:{sid}")
}

impl RedisStore {
    /// Connects (Redis must be up at start). Sessions expire from Redis a day after their
    /// absolute lifetime `max_ttl` ends, so ended sessions do not pile up.
    pub async fn open(url: &str, max_ttl: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = manager(&client).await?;
        let session_ttl_secs = max_ttl.as_secs() + 86_400;
        Ok(RedisStore {
            conn,
            session_ttl_secs,
            cas: redis::Script::new(CAS),
            give_back: redis::Script::new(GIVE_BACK),
            client,
        })
    }

    /// Refuses to serve on a Redis older than 7.0, with a message that says so.
    pub async fn check_version(&self) -> Result<(), String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| e.to_string())?;
        check_version(&info)
    }

    /// A clone of the shared connection (cheap; it multiplexes).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Oldest Redis served: `EXPIRE … NX` (login-failure windows) and sharded pub/sub need 7.0.
const MIN_VERSION: (u32, u32) = (7, 0);

/// Refuses a Redis older than [`MIN_VERSION`], from its `INFO server` text.
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or_else(|| "Redis did not say its version (INFO server)".to_string())?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(format!(
            "Redis {version} is too old: tokenpush needs Redis {}.{} or newer \
             (EXPIRE NX, sharded pub/sub)",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    Ok(())
}

fn decode(data: Option<String>) -> StoreResult<Option<Session>> {
    data.map(|d| serde_json::from_str(&d).map_err(internal))
        .transpose()
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, s: &Session) -> StoreResult<()> {
        let data = serde_json::to_string(s).map_err(internal)?;
        redis::pipe()
            .atomic()
            .hset_multiple(key(&s.sid), &[("v", s.version.to_string()), ("d", data)])
            .expire(key(&s.sid), self.session_ttl_secs as i64)
            .sadd("tp:live", &s.sid)
            .exec_async(&mut self.conn())
            .await
            .map_err(err)
    }

    async fn load(&self, sid: &str) -> StoreResult<Option<Session>> {
        let data: Option<String> = self.conn().hget(key(sid), "d").await.map_err(err)?;
        decode(data)
    }

    async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool> {
        let data = serde_json::to_string(s).map_err(internal)?;
        let revoked_at = s
            .revoked
            .as_ref()
            .map(|_| s.revoked_at.to_string())
            .unwrap_or_default();
        let written: i64 = self
            .cas
            .key(key(&s.sid))
            .key("tp:revoked")
            .key("tp:live")
            .key(EPOCH)
            .arg(expected.to_string())
            .arg(s.version.to_string())
            .arg(data)
            .arg(&s.sid)
            .arg(revoked_at)
            .arg(s.revoked_at - REVOKED_KEEP_MS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(written == 1)
    }

    async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>> {
        let sids: Vec<String> = self.conn().smembers("tp:live").await.map_err(err)?;
        let mut out = Vec::with_capacity(sids.len());
        for chunk in sids.chunks(500) {
            let mut pipe = redis::pipe();
            for sid in chunk {
                pipe.hget(key(sid), "d");
            }
            let datas: Vec<Option<String>> =
                pipe.query_async(&mut self.conn()).await.map_err(err)?;
            let mut gone = vec![];
            for (sid, s) in chunk.iter().zip(datas.into_iter().map(decode)) {
                match s? {
                    Some(s) if s.revoked.is_none() && user.is_none_or(|u| s.user == u) => {
                        out.push(s)
                    }
                    Some(_) => {}
                    None => gone.push(sid.clone()), // expired from Redis
                }
            }
            if !gone.is_empty() {
                let _: () = self.conn().srem("tp:live", gone).await.map_err(err)?;
            }
        }
        Ok(out)
    }

    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>> {
        self.conn()
            .zrangebyscore("tp:revoked", since, "+inf")
            .await
            .map_err(err)
    }

    async fn epoch(&self) -> StoreResult<Option<Epoch>> {
        let (r, o): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(EPOCH)
            .arg(ROLES_EPOCH)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(Some(Epoch {
            revocations: r.unwrap_or(0),
            roles: o.unwrap_or(0),
        }))
    }
}

#[async_trait]
impl TicketStore for RedisStore {
    async fn put_ticket(
        &self,
        ticket: &str,
        grant: &TicketGrant,
        ttl: Duration,
    ) -> StoreResult<()> {
        let data = serde_json::to_string(grant).map_err(internal)?;
        let ms = ttl.as_millis().max(1) as u64;
        let _: () = redis::cmd("SET")
            .arg(format!("tp:t:{ticket}"))
            .arg(data)
            .arg("PX")
            .arg(ms)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn take_ticket(&self, ticket: &str) -> StoreResult<Option<TicketGrant>> {
        // GETDEL is atomic: of two nodes racing on one ticket, one gets it.
        let data: Option<String> = redis::cmd("GETDEL")
            .arg(format!("tp:t:{ticket}"))
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        data.map(|d| serde_json::from_str(&d).map_err(internal))
            .transpose()
    }
}

#[async_trait]
impl Counters for RedisStore {
    async fn hit(&self, key: &str, window: Duration) -> StoreResult<(u32, u64)> {
        // INCR first, in one transaction with the window's expiry: N racing nodes get N counts.
        let k = format!("tp:f:{key}");
        let (n, ttl): (u32, i64) = redis::pipe()
            .atomic()
            .incr(&k, 1)
            .cmd("EXPIRE")
            .arg(&k)
            .arg(window.as_secs().max(1))
            .arg("NX")
            .ignore()
            .ttl(&k)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok((n, ttl.max(1) as u64))
    }

    async fn give_back(&self, key: &str) -> StoreResult<()> {
        // Only while the window lives: a DECR on an expired key would leave -1 forever.
        let _: i64 = self
            .give_back
            .key(format!("tp:f:{key}"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn count(&self, key: &str) -> StoreResult<u32> {
        // Same key as `hit`; an ended window has expired, so GET answers nil (0).
        let n: Option<i64> = redis::cmd("GET")
            .arg(format!("tp:f:{key}"))
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(n.unwrap_or(0).max(0) as u32)
    }
}

#[async_trait]
impl RoleStore for RedisStore {
    async fn roles(&self, user: &str) -> StoreResult<Option<Vec<String>>> {
        let data: Option<String> = self.conn().hget("tp:roles", user).await.map_err(err)?;
        data.map(|d| serde_json::from_str(&d).map_err(internal))
            .transpose()
    }

    async fn roles_many(&self, users: &[String]) -> StoreResult<Vec<Option<Vec<String>>>> {
        if users.is_empty() {
            return Ok(vec![]);
        }
        let datas: Vec<Option<String>> = redis::cmd("HMGET")
            .arg("tp:roles")
            .arg(users)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        datas
            .into_iter()
            .map(|d| {
                d.map(|d| serde_json::from_str(&d).map_err(internal))
                    .transpose()
            })
            .collect()
    }

    async fn set_roles(&self, user: &str, roles: &[String]) -> StoreResult<()> {
        let data = serde_json::to_string(roles).map_err(internal)?;
        // With the epoch, atomically: a node that sees it move finds the new roles.
        redis::pipe()
            .atomic()
            .hset("tp:roles", user, data)
            .ignore()
            .incr(ROLES_EPOCH, 1)
            .ignore()
            .exec_async(&mut self.conn())
            .await
            .map_err(err)
    }
}

#[async_trait]
impl Presence for RedisStore {
    async fn put_presence(
        &self,
        node: &str,
        channels: &[(String, usize, usize)],
        ttl: Duration,
    ) -> StoreResult<()> {
        let k = format!("tp:node:{node}");
        let now = crate::clock::now_ms();
        let ttl_ms = ttl.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.atomic().del(&k).ignore();
        for chunk in channels.chunks(1000) {
            let fields: Vec<(&str, String)> = chunk
                .iter()
                .map(|(sid, sse, ws)| (sid.as_str(), format!("{sse},{ws}")))
                .collect();
            pipe.hset_multiple(&k, &fields).ignore();
        }
        // An empty hash is no key: the marker field keeps a node with no channel listed.
        pipe.hset(&k, "", "").ignore();
        pipe.pexpire(&k, ttl_ms).ignore();
        pipe.zadd("tp:nodes", node, now + ttl_ms).ignore();
        pipe.zrembyscore("tp:nodes", "-inf", now).ignore();
        pipe.exec_async(&mut self.conn()).await.map_err(err)
    }

    async fn presence(&self) -> StoreResult<Vec<(String, Vec<(String, usize, usize)>)>> {
        let now = crate::clock::now_ms();
        let nodes: Vec<String> = self
            .conn()
            .zrangebyscore("tp:nodes", now, "+inf")
            .await
            .map_err(err)?;
        if nodes.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.hgetall(format!("tp:node:{n}"));
        }
        let maps: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut self.conn()).await.map_err(err)?;
        Ok(nodes
            .into_iter()
            .zip(maps)
            .map(|(node, map)| {
                let channels = map
                    .into_iter()
                    .filter_map(|(sid, v)| {
                        let (sse, ws) = v.split_once(',')?;
                        Some((sid, sse.parse().ok()?, ws.parse().ok()?))
                    })
                    .collect();
                (node, channels)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::check_version;

    #[test]
    fn redis_older_than_7_is_refused_with_a_clear_message() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        assert!(check_version(&info("7.0.15")).is_ok());
        assert!(check_version(&info("7.2.4")).is_ok());
        assert!(check_version(&info("8.0.0")).is_ok());
        let err = check_version(&info("6.2.14")).unwrap_err();
        assert!(
            err.contains("6.2.14") && err.contains("7.0 or newer"),
            "{err}"
        );
        assert!(check_version("# Server\r\n").is_err());
    }
}

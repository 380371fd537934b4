//! `--login-hook URL`: asks the app's own endpoint whether a username and password are good.
//! One POST, 5 s at most, never retried: a 401/403 is a refusal; anything else (a 5xx, a
//! timeout, no answer, an unreadable body) is "unavailable", which must never become a login.
//! What the hook may cost is bounded: [`MAX_BODY`] of answer, the claim limits of
//! `POST /admin/sessions`, and [`MAX_IN_FLIGHT`] calls at once with [`MAX_WAITING`] more
//! queued; a login beyond that is told to retry (503 + `Retry-After`) without a call.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::users::Identity;

/// How long the hook may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Header carrying the shared secret (the service key), so the app can tell us from anyone.
pub const SECRET_HEADER: &str = "x-tokenpush-hook-secret";
/// Largest answer read from the hook; a longer one is "unavailable".
pub const MAX_BODY: usize = 64 * 1024;
/// Hook calls in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// Logins that may wait for a call slot; more are [`Verdict::Busy`].
pub const MAX_WAITING: usize = 64;
/// Claim limits, the same as `POST /admin/sessions`: `sub` and `name` bytes, number of
/// roles, bytes per role.
const MAX_SUB: usize = 256;
const MAX_NAME: usize = 256;
const MAX_ROLES: usize = 32;
const MAX_ROLE: usize = 64;

/// What the hook said.
#[derive(Debug)]
pub enum Verdict {
    /// 200 with a usable `sub`.
    Accept(Identity),
    /// 401 or 403.
    Refuse,
    /// Anything else; carries the reason for the log (never the password).
    Unavailable(String),
    /// Every call slot and queue place is taken: not asked.
    Busy,
}

#[derive(Serialize)]
struct Question<'a> {
    username: &'a str,
    password: &'a str,
    ip: &'a str,
    device_id: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    sub: String,
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// The hook endpoint and an HTTP client for it.
pub struct LoginHook {
    url: String,
    secret: Option<String>,
    client: reqwest::Client,
    /// Calls in flight.
    slots: Semaphore,
    /// Calls in flight or waiting for a slot.
    places: Semaphore,
}

impl LoginHook {
    /// A hook at `url`; `secret` goes into [`SECRET_HEADER`] on every call.
    pub fn new(url: &str, secret: Option<String>) -> Result<LoginHook, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // Idle connections to the hook close soon after a burst instead of holding an fd
            // each for reqwest's default 90 s.
            .pool_idle_timeout(TIMEOUT)
            // A redirect could carry the password somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("--login-hook client: {e}"))?;
        Ok(LoginHook {
            url: url.to_string(),
            secret,
            client,
            slots: Semaphore::new(MAX_IN_FLIGHT),
            places: Semaphore::new(MAX_IN_FLIGHT + MAX_WAITING),
        })
    }

    /// Asks the hook about one login attempt.
    pub async fn check(&self, username: &str, password: &str, ip: &str, device: &str) -> Verdict {
        let Ok(_place) = self.places.try_acquire() else {
            return Verdict::Busy;
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return Verdict::Busy;
        };
        let mut req = self.client.post(&self.url).json(&Question {
            username,
            password,
            ip,
            device_id: device,
        });
        if let Some(s) = &self.secret {
            req = req.header(SECRET_HEADER, s);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Verdict::Unavailable("timed out".into()),
            Err(e) if e.is_connect() => return Verdict::Unavailable("connection failed".into()),
            Err(_) => return Verdict::Unavailable("request failed".into()),
        };
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Verdict::Refuse,
            s => return Verdict::Unavailable(format!("status {s}")),
        }
        let body = match read_capped(resp).await {
            Some(b) => b,
            None => return Verdict::Unavailable(format!("answer over {MAX_BODY} bytes")),
        };
        let answer: Answer = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(_) => return Verdict::Unavailable("200 without a usable JSON body".into()),
        };
        let sub = answer.sub.trim();
        if sub.is_empty()
            || sub.len() > MAX_SUB
            || answer.name.as_ref().is_some_and(|n| n.len() > MAX_NAME)
            || answer.roles.len() > MAX_ROLES
            || answer
                .roles
                .iter()
                .any(|r| r.is_empty() || r.len() > MAX_ROLE)
        {
            return Verdict::Unavailable("200 with an empty or oversized sub/name/roles".into());
        }
        Verdict::Accept(Identity {
            name: sub.to_string(),
            display_name: answer.name.unwrap_or_else(|| sub.to_string()),
            roles: answer.roles,
            ext: None,
        })
    }
}

/// The body, read chunk by chunk and given up on (`None`) past [`MAX_BODY`]: a hook that
/// streams without end costs at most that much. A read error is also `None`.
async fn read_capped(mut resp: reqwest::Response) -> Option<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

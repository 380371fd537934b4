//! `--login-hook URL`: asks the app's own endpoint whether a username and password are good.
//! One POST, 5 s at most, never retried: a 401/403 is a refusal; anything else (a 5xx, a
//! timeout, no answer, an unreadable body) is "unavailable", which must never become a login.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::users::Identity;

/// How long the hook may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Header carrying the shared secret (the service key), so the app can tell us from anyone.
pub const SECRET_HEADER: &str = "x-tokenpush-hook-secret";

/// What the hook said.
#[derive(Debug)]
pub enum Verdict {
    /// 200 with a usable `sub`.
    Accept(Identity),
    /// 401 or 403.
    Refuse,
    /// Anything else; carries the reason for the log (never the password).
    Unavailable(String),
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
}

impl LoginHook {
    /// A hook at `url`; `secret` goes into [`SECRET_HEADER`] on every call.
    pub fn new(url: &str, secret: Option<String>) -> Result<LoginHook, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // A redirect could carry the password somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("--login-hook client: {e}"))?;
        Ok(LoginHook {
            url: url.to_string(),
            secret,
            client,
        })
    }

    /// Asks the hook about one login attempt.
    pub async fn check(&self, username: &str, password: &str, ip: &str, device: &str) -> Verdict {
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
        let answer: Answer = match resp.json().await {
            Ok(a) => a,
            Err(_) => return Verdict::Unavailable("200 without a usable JSON body".into()),
        };
        let sub = answer.sub.trim();
        if sub.is_empty() || sub.len() > 256 || answer.roles.len() > 32 {
            return Verdict::Unavailable("200 with an empty or oversized sub/roles".into());
        }
        Verdict::Accept(Identity {
            name: sub.to_string(),
            display_name: answer.name.unwrap_or_else(|| sub.to_string()),
            roles: answer.roles,
            ext: None,
        })
    }
}

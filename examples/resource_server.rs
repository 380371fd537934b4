//! A resource server (your API) that accepts tokenpush access tokens, as axum middleware.
//!
//! It learns the issuer and the JWKS URL from `/.well-known/openid-configuration`, caches the
//! public keys, refetches them when a token names an unknown `kid` (after a key rotation, at
//! most once per 10 s so garbage tokens cannot make it hammer tokenpush), and checks the
//! signature with the algorithm pinned, `typ: at+jwt`, `iss`, `aud` and `exp`.
//!
//! ```sh
//! cargo run --example resource_server -- --tokenpush http://127.0.0.1:8080 --listen 127.0.0.1:3001
//! curl -H "Authorization: Bearer $ACCESS" http://127.0.0.1:3001/hello
//! ```
//!
//! A JWT is valid until its `exp` even after its session is revoked, because this server
//! never asks tokenpush per request: keep `--access-ttl` short; tokenpush pushes new tokens
//! before expiry, so connected clients never notice. With `--service-key-file`, it also
//! follows tokenpush's revocation feed (`GET /admin/events`) and refuses a revoked
//! session's tokens at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clap::Parser;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::RwLock;

#[derive(Parser)]
struct Args {
    /// Base URL of tokenpush (for discovery and the JWKS).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    tokenpush: String,
    /// Where this API listens.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: String,
    /// Expected `aud` (tokenpush's `--audience`).
    #[arg(long, default_value = "tokenpush")]
    audience: String,
    /// tokenpush's service key: follow the revocation feed with it.
    #[arg(long)]
    service_key_file: Option<std::path::PathBuf>,
}

/// What the middleware puts in the request for handlers.
#[derive(Debug, Clone, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    exp: i64,
    #[serde(default)]
    ext: Option<Value>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Verification keys by `kid`, with the algorithm each is pinned to.
type KeyMap = HashMap<String, (DecodingKey, Algorithm)>;

/// Public keys by `kid`, refreshed on demand.
struct Keys {
    http: reqwest::Client,
    jwks_uri: String,
    issuer: String,
    audience: String,
    /// The keys and when the JWKS was last fetched.
    cache: RwLock<(KeyMap, Option<Instant>)>,
    /// Sessions the revocation feed named, and when (forgotten after [`FORGET_AFTER`]).
    revoked: std::sync::Mutex<HashMap<String, Instant>>,
}

/// Longer than any access token lives: after it, a revoked session's tokens have expired.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Refetching an unknown `kid` at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

impl Keys {
    async fn discover(base: &str, audience: &str) -> Result<Keys, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            base.trim_end_matches('/')
        );
        let d: Discovery = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("{url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Keys {
            http,
            jwks_uri: d.jwks_uri,
            issuer: d.issuer,
            audience: audience.to_string(),
            cache: RwLock::new((HashMap::new(), None)),
            revoked: Default::default(),
        })
    }

    /// The key for `kid`, fetching the JWKS if it is unknown (rate-limited).
    async fn get(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(k) = self.cache.read().await.0.get(kid) {
            return Some(k.clone());
        }
        let mut cache = self.cache.write().await;
        if let Some(k) = cache.0.get(kid) {
            return Some(k.clone());
        }
        if cache.1.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return None;
        }
        cache.1 = Some(Instant::now());
        let set: JwkSet = self
            .http
            .get(&self.jwks_uri)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        cache.0 = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => return None,
                };
                Some((kid, (DecodingKey::from_jwk(jwk).ok()?, alg)))
            })
            .collect();
        cache.0.get(kid).cloned()
    }

    async fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let header = decode_header(token).map_err(|_| "malformed token")?;
        // RFC 9068: only access tokens, never an ID token or anything else signed by the key.
        if header.typ.as_deref() != Some("at+jwt") {
            return Err("not an access token");
        }
        let kid = header.kid.ok_or("no kid")?;
        let (key, alg) = self.get(&kid).await.ok_or("unknown signing key")?;
        // The algorithm comes from our JWKS, never from the token's header.
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        v.leeway = 2;
        let claims = decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|_| "invalid or expired token")?;
        if self.is_revoked(&claims.sid) {
            return Err("session revoked");
        }
        Ok(claims)
    }

    fn is_revoked(&self, sid: &str) -> bool {
        let map = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(sid)
    }

    /// Follows `GET /admin/events` for ever, reconnecting after a second on any error.
    async fn follow_revocations(self: Arc<Self>, base: String, key: String) {
        let url = format!("{}/admin/events", base.trim_end_matches('/'));
        // No overall timeout: the feed is a long-lived stream.
        let http = reqwest::Client::new();
        loop {
            if let Ok(mut resp) = http.get(&url).bearer_auth(&key).send().await {
                let mut buf = String::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(i) = buf.find("\n\n") {
                        let frame: String = buf.drain(..i + 2).collect();
                        self.on_feed_frame(&frame);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn on_feed_frame(&self, frame: &str) {
        if !frame.lines().any(|l| l == "event: revoked") {
            return;
        }
        let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
            return;
        };
        let Ok(ev) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(sid) = ev["session_id"].as_str() {
            let mut map = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, at| at.elapsed() < FORGET_AFTER);
            map.insert(sid.to_string(), Instant::now());
        }
    }
}

fn unauthorized(why: &str) -> Response {
    let www = format!(r#"Bearer error="invalid_token", error_description="{why}""#);
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, www)],
        Json(json!({"error": "invalid_token", "error_description": why})),
    )
        .into_response()
}

/// The middleware: a valid access token or 401.
async fn require_token(State(keys): State<Arc<Keys>>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let Some(token) = token else {
        return unauthorized("no access token");
    };
    match keys.verify(&token).await {
        Ok(claims) => {
            req.extensions_mut().insert(claims);
            next.run(req).await
        }
        Err(why) => unauthorized(why),
    }
}

async fn hello(Extension(c): Extension<Claims>) -> Json<Value> {
    Json(json!({
        "hello": c.name, "sub": c.sub, "session_id": c.sid, "roles": c.roles, "exp": c.exp,
        "ext": c.ext,
    }))
}

/// The API: `GET /hello` behind the token check, `GET /healthz` open. With a service key,
/// revocations from tokenpush's feed are refused at once.
pub async fn app(
    tokenpush: &str,
    audience: &str,
    service_key: Option<String>,
) -> Result<Router, String> {
    let keys = Arc::new(Keys::discover(tokenpush, audience).await?);
    if let Some(key) = service_key {
        tokio::spawn(keys.clone().follow_revocations(tokenpush.to_string(), key));
    }
    Ok(Router::new()
        .route("/hello", get(hello))
        .route_layer(middleware::from_fn_with_state(keys, require_token))
        .route("/healthz", get(|| async { "ok" })))
}

#[tokio::main]
#[allow(dead_code)] // tests/integration.rs includes this file and calls `app` directly
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let key = match &args.service_key_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let app = app(&args.tokenpush, &args.audience, key).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "resource server listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

//! The demo's server side (issue 11): demo-friendly defaults without a users file, new demo
//! passwords on demand, the admin console's routes, requested pushes for SSE clients, and
//! device labels never cut mid-word.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{claims, status_json, TestApp};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tokenpush");

/// A server started with no `--users` (demo mode) and what it printed up to "listening".
struct DemoServer {
    child: Child,
    base: String,
    printed: String,
}

impl DemoServer {
    fn start(data: &std::path::Path, env: &[(&str, &str)]) -> DemoServer {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tokenpush");
        let mut printed = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("exited early:\n{printed}"))
                .unwrap();
            printed += &line;
            printed.push('\n');
            if let Some(addr) = line.strip_prefix("tokenpush listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        DemoServer {
            child,
            base,
            printed,
        }
    }

    fn password(&self, user: &str) -> String {
        password_in(&self.printed, user)
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn password_in(printed: &str, user: &str) -> String {
    printed
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix(user)?;
            Some(rest.trim().strip_prefix("password:")?.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no password for {user} in:\n{printed}"))
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn login(base: &str, user: &str, password: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    status_json(r).await
}

#[tokio::test]
async fn demo_users_get_minute_tokens_and_new_passwords_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = DemoServer::start(&data, &[]);
    assert!(
        first
            .printed
            .contains("demo mode: access tokens last 1m, renewed 15s (+ up to 6s jitter)"),
        "{}",
        first.printed
    );
    assert!(first.printed.contains("tokenpush demo-users --reset"));
    let cfg = get_json(&format!("{}/demo/config", first.base)).await;
    assert_eq!(cfg["demo_users"], true);
    assert_eq!(
        (
            &cfg["access_ttl_ms"],
            &cfg["renew_lead_ms"],
            &cfg["renew_jitter_ms"]
        ),
        (&json!(60_000), &json!(15_000), &json!(6_000))
    );
    let old = first.password("alice");
    let (st, t) = login(&first.base, "alice", &old).await;
    assert_eq!(st, 200, "{t}");
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 60);
    drop(first);

    let out = Command::new(BIN)
        .args(["demo-users", "--reset", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let new = password_in(&printed, "alice");
    assert_ne!(new, old);

    // An explicit setting (here by env var) beats the demo default; the banner says how to
    // get new passwords, since they are not shown again.
    let second = DemoServer::start(&data, &[("TOKENPUSH_ACCESS_TTL", "2m")]);
    assert!(second.printed.contains("demo-users --reset"));
    assert!(!second.printed.contains("password:"), "{}", second.printed);
    let cfg = get_json(&format!("{}/demo/config", second.base)).await;
    assert_eq!(cfg["access_ttl_ms"], 120_000);
    assert_eq!(cfg["renew_lead_ms"], 15_000);
    assert_eq!(login(&second.base, "alice", &old).await.0, 401);
    assert_eq!(login(&second.base, "alice", &new).await.0, 200);
}

#[tokio::test]
async fn admin_console_routes_list_revoke_and_count() {
    let app = TestApp::spawn(&[]).await;
    let cfg = get_json(&app.url("/demo/config")).await;
    assert_eq!(cfg["demo_users"], false, "a users file is not demo mode");
    let admin = app.login_as("alice").await;
    let admin_at = admin["access_token"].as_str().unwrap().to_string();

    // Bob logs in from a browser that sends no device_id: the label is the user agent, short.
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let r = app
        .client
        .post(app.url("/auth/login"))
        .header("User-Agent", ua)
        .json(&json!({"username": "bob", "password": common::PASSWORD}))
        .send()
        .await
        .unwrap();
    let (st, bob) = status_json(r).await;
    assert_eq!(st, 200);
    app.remember(&bob);
    let bob_at = bob["access_token"].as_str().unwrap().to_string();
    let bob_sid = bob["session_id"].as_str().unwrap().to_string();
    assert_eq!(claims(&bob_at)["device"], "Chrome 131 on Linux");

    let ticket = app.ticket(bob["refresh_token"].as_str().unwrap()).await;
    let mut sse = app.sse(&ticket, None).await.unwrap();
    sse.expect("ready", Duration::from_secs(5)).await;

    // A requested push (the SSE client's "push now"), rate-limited like the WS `renew` frame.
    let r = app.post_bearer("/auth/renew", &bob_at).await;
    assert_eq!(r.status(), 202);
    let pushed = sse.expect("tokens", Duration::from_secs(3)).await;
    app.remember(&pushed.data);
    assert_eq!(pushed.data["reason"], "requested");
    let r = app.post_bearer("/auth/renew", &bob_at).await;
    assert_eq!(r.status(), 429);
    assert_eq!(status_json(r).await.1["error"], "rate_limited");

    let (st, list) = app.get_auth("/admin/sessions", &admin_at).await;
    assert_eq!(st, 200);
    let row = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == bob_sid.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["user"], "bob");
    assert_eq!(row["device"], "Chrome 131 on Linux");
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["roles"], json!([]));
    assert_eq!(row["channels"], json!({"sse": 1, "ws": 0}));
    assert_eq!(row["last_push_generation"], 1);
    let margin = row["last_margin_ms"].as_i64().unwrap();
    assert!(margin > 0 && margin <= 6_000, "margin {margin}");
    assert!(row["last_used_at"].as_i64().unwrap() >= row["created_at"].as_i64().unwrap());

    let (st, stats) = app.get_auth("/admin/stats", &admin_at).await;
    assert_eq!(st, 200);
    assert_eq!(stats["channels"]["sse"], 1);
    assert!(stats["deliveries_last_minute"].as_u64().unwrap() >= 1);
    assert!(stats["min_delivery_margin_ms"].as_i64().unwrap() > 0);
    assert_eq!(stats["reuse_detections"], 0);
    assert_eq!(stats["live_sessions"], 2);
    assert_eq!(app.get_auth("/admin/stats", &bob_at).await.0, 403);

    let del = |sid: String| {
        let (c, at) = (app.client.clone(), admin_at.clone());
        let url = app.url(&format!("/admin/sessions/{sid}"));
        async move { status_json(c.delete(url).bearer_auth(at).send().await.unwrap()).await }
    };
    assert_eq!(del(bob_sid.clone()).await, (200, json!({"revoked": 1})));
    let ev = sse.expect("revoked", Duration::from_secs(1)).await;
    assert_eq!(ev.data["reason"], "admin");
    assert_eq!(app.get_auth("/api/me", &bob_at).await.0, 401);
    assert_eq!(del(bob_sid).await.0, 404, "already revoked");
    assert_eq!(del("no-such-session".into()).await.0, 404);
    assert_eq!(app.get_auth("/api/me", &admin_at).await.0, 200);
}

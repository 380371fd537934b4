//! Fitting tokenpush into an app (issue 13): the config file and `config check`, trusted-backend
//! sessions (`POST /admin/sessions`), the login hook, discovery and the OpenAPI document — all
//! against the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{claims, TestApp, PASSWORD};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tokenpush");

/// Runs `tokenpush config check` with the given file contents; (exit ok, stdout, stderr).
fn config_check(toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenpush.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .env_remove("TOKENPUSH_ACCESS_TTL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_names_the_bad_key_or_value() {
    let (ok, out, err) = config_check("access-ttl = \"2m\"\nrenew-lead = \"20s\"\n");
    assert!(ok, "{err}");
    assert!(out.contains("access-ttl = \"2m\"  # file"), "{out}");

    let (ok, _, err) = config_check("acess-ttl = \"2m\"\n");
    assert!(!ok);
    assert!(err.contains("unknown key `acess-ttl`"), "{err}");

    let (ok, _, err) = config_check("access-ttl = \"30s\"\nusers = \"u.toml\"\n");
    assert!(!ok);
    assert!(
        err.contains("--renew-lead (1m)") && err.contains("--access-ttl (30s)"),
        "{err}"
    );

    let (ok, _, err) = config_check("store = \"redis://:hunter2@127.0.0.1:6379/0\"\n");
    assert!(!ok);
    assert!(err.contains("needs an explicit --issuer"), "{err}");
    assert!(!err.contains("hunter2"), "password masked: {err}");

    let (ok, _, err) = config_check("grace = \"a while\"\n");
    assert!(!ok);
    assert!(err.contains("--grace") && err.contains("a while"), "{err}");
}

#[test]
fn env_beats_file_and_flag_beats_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenpush.toml");
    std::fs::write(
        &path,
        "grace = \"5s\"\nheartbeat = \"7s\"\nticket-ttl = \"9s\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--ticket-ttl", "11s", "config", "check", "--config"])
        .arg(&path)
        .env("TOKENPUSH_HEARTBEAT", "8s")
        .env("TOKENPUSH_TICKET_TTL", "10s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("grace = \"5s\"  # file"), "{text}");
    assert!(text.contains("heartbeat = \"8s\"  # env"), "{text}");
    assert!(text.contains("ticket-ttl = \"11s\"  # flag"), "{text}");
}

/// A users file with `dave` (admin) for servers started without the harness.
fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("users.toml");
    let hash = tokenpush::users::hash_password(PASSWORD);
    std::fs::write(
        &path,
        format!("[[user]]\nname = \"dave\"\npassword_hash = \"{hash}\"\nroles = [\"admin\"]\n"),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_config_file_alone_starts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let data = dir.path().join("state");
    let path = dir.path().join("tokenpush.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {data:?}\nusers = {users:?}\nstore = \"memory\"\n\
             access-ttl = \"42s\"\nrenew-lead = \"5s\"\nrenew-jitter = \"0s\"\n\
             issuer = \"https://auth.example.test\"\naudience = \"my-api\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("tokenpush listening on ").map(String::from))
    })
    .await
    .unwrap()
    .expect("server announced its address");
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{addr}/auth/login"))
        .json(&json!({"username": "dave", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let ttl = login["expires_in"].as_i64().unwrap();
    assert!((41..=42).contains(&ttl), "{login}");
    let c = claims(login["access_token"].as_str().unwrap());
    assert_eq!(c["iss"], "https://auth.example.test");
    assert_eq!(c["aud"], "my-api");
    assert!(
        data.join("signing-ed25519.key").exists(),
        "data dir from file"
    );
}

#[tokio::test]
async fn serve_refuses_a_lead_longer_than_the_ttl() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--access-ttl",
            "30s",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
        ])
        .args(["--users", "/nonexistent"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--renew-lead") && err.contains("--access-ttl"),
        "{err}"
    );
}

#[test]
fn the_example_config_file_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/tokenpush.example.toml"
    ))
    .unwrap();
    // As shipped it names /etc/tokenpush/users.toml, which this machine lacks: check refuses
    // it by name, as `serve` would refuse to start.
    let (ok, _, err) = config_check(&text);
    assert!(!ok, "a missing users file passed the check");
    assert!(
        err.contains("users") && err.contains("/etc/tokenpush/users.toml"),
        "{err}"
    );
    // With a users file that exists, the rest of the example is valid.
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        "[[user]]\nname = \"alice\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY\"\nroles = []\n",
    )
    .unwrap();
    let text = text.replace("/etc/tokenpush/users.toml", &users.to_string_lossy());
    let (ok, out, err) = config_check(&text);
    assert!(ok, "{err}");
    assert!(
        out.contains("issuer = \"https://auth.example.com\"  # file"),
        "{out}"
    );
}

const S: Duration = Duration::from_secs(1);
const SERVICE_KEY: &str = "integration-test-service-key-0123456789";

/// A service key file with mode 0600 (the server refuses a readable one).
fn service_key_file(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("service.key");
    std::fs::write(&path, format!("{SERVICE_KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_string_lossy().into_owned()
}

async fn mint(app: &TestApp, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = app.client.post(app.url("/admin/sessions")).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    app.remember(&v);
    (st, v)
}

/// Opens an SSE channel for a session and waits for its first scheduled renewal.
async fn sees_a_renewal(app: &TestApp, tokens: &Value) -> Value {
    let rt = tokens["refresh_token"].as_str().unwrap();
    let mut sse = app.sse(&app.ticket(rt).await, None).await.unwrap();
    sse.expect("ready", 5 * S).await;
    let ev = sse.expect("tokens", 8 * S).await;
    assert_eq!(ev.data["reason"], "renewal");
    ev.data
}

#[tokio::test]
async fn trusted_backend_mints_sessions_that_get_pushes() {
    let keydir = tempfile::tempdir().unwrap();
    let key = service_key_file(keydir.path());
    let app = TestApp::spawn(&["--service-key-file", &key]).await;
    let body = json!({"sub": "ext-42", "name": "Erin External", "roles": ["staff"],
        "device_id": "backend", "ext": {"tenant": "acme", "plan": 3}});

    assert_eq!(mint(&app, None, body.clone()).await.0, 401, "no key");
    assert_eq!(
        mint(
            &app,
            Some("integration-test-service-key-0123456788"),
            body.clone()
        )
        .await
        .0,
        401,
        "wrong key"
    );
    let (st, bad) = mint(&app, Some(SERVICE_KEY), json!({"sub": "x", "ext": [1]})).await;
    assert_eq!((st, bad["error"].as_str()), (400, Some("invalid_request")));

    let (st, tokens) = mint(&app, Some(SERVICE_KEY), body).await;
    assert_eq!(st, 200, "{tokens}");
    let c = claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "ext:ext-42");
    assert_eq!(c["name"], "Erin External");
    assert_eq!(c["roles"], json!(["staff"]));
    assert_eq!(c["ext"], json!({"tenant": "acme", "plan": 3}));
    let (st, me) = app
        .get_auth("/api/me", tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!((st, me["sub"].as_str()), (200, Some("ext:ext-42")));
    let admin = app.login_as("alice").await;
    let (_, list) = app
        .get_auth("/admin/sessions", admin["access_token"].as_str().unwrap())
        .await;
    let row = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == tokens["session_id"])
        .cloned()
        .unwrap();
    assert_eq!(
        (row["user"].clone(), row["roles"].clone()),
        (json!("ext:ext-42"), json!(["staff"]))
    );

    // The user is in no users file, yet the scheduled push re-issues the same claims.
    let pushed = sees_a_renewal(&app, &tokens).await;
    let c = claims(pushed["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].clone(), c["gen"].clone()),
        (json!("ext:ext-42"), json!(1))
    );
    assert_eq!(c["ext"]["tenant"], "acme");
}

#[tokio::test]
async fn minted_identities_survive_a_restart() {
    let keydir = tempfile::tempdir().unwrap();
    let key = service_key_file(keydir.path());
    let mut app = TestApp::spawn(&["--service-key-file", &key]).await;
    let (st, tokens) = mint(
        &app,
        Some(SERVICE_KEY),
        json!({"sub": "ext-7", "roles": ["viewer"], "ext": {"org": 9}}),
    )
    .await;
    assert_eq!(st, 200);
    app.restart().await;
    let (st, next) = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(st, 200, "{next}");
    let c = claims(next["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].clone(), c["ext"].clone()),
        (json!("ext:ext-7"), json!({"org": 9}))
    );
}

#[tokio::test]
async fn trusted_backend_route_is_404_without_a_key_file() {
    let app = TestApp::spawn(&[]).await;
    let (st, _) = mint(&app, Some(SERVICE_KEY), json!({"sub": "x"})).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn a_readable_service_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = service_key_file(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--service-key-file",
            &key,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by group or other"), "{err}");
}

/// A login hook served by the test: `erin`/PASSWORD is accepted, `slow` never answers in
/// time, `broken` gets a 500, anyone else a 401. Every call must carry the secret header.
async fn hook() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = move |headers: HeaderMap, axum::Json(q): axum::Json<Value>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let secret = headers
                .get("x-tokenpush-hook-secret")
                .and_then(|v| v.to_str().ok());
            if secret != Some(SERVICE_KEY) {
                return (StatusCode::FORBIDDEN, axum::Json(json!({})));
            }
            assert!(q["ip"].as_str().is_some() && q["device_id"].as_str().is_some());
            match (q["username"].as_str(), q["password"].as_str()) {
                (Some("erin"), Some(PASSWORD)) => (
                    StatusCode::OK,
                    axum::Json(json!({"sub": "erin@app", "name": "Erin", "roles": ["staff"]})),
                ),
                (Some("slow"), _) => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    (StatusCode::OK, axum::Json(json!({"sub": "slow"})))
                }
                (Some("broken"), _) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))),
                _ => (StatusCode::UNAUTHORIZED, axum::Json(json!({}))),
            }
        }
    };
    let app = axum::Router::new().route("/check", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

async fn login(app: &TestApp, user: &str, password: &str) -> (u16, Value) {
    app.post_json(
        "/auth/login",
        json!({"username": user, "password": password, "device_id": "hook-test"}),
    )
    .await
}

#[tokio::test]
async fn login_hook_accepts_refuses_and_fails_closed() {
    let keydir = tempfile::tempdir().unwrap();
    let key = service_key_file(keydir.path());
    let (url, calls) = hook().await;
    let app = TestApp::spawn(&[
        "--login-hook",
        &url,
        "--service-key-file",
        &key,
        "--login-failures",
        "3",
    ])
    .await;

    // Accepted: the hook's claims, and pushes like any other session.
    let (st, tokens) = login(&app, "erin", PASSWORD).await;
    assert_eq!(st, 200, "{tokens}");
    let c = claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["name"].as_str()),
        (Some("hook:erin@app"), Some("Erin"))
    );
    assert_eq!(c["roles"], json!(["staff"]));
    let pushed = sees_a_renewal(&app, &tokens).await;
    assert_eq!(
        claims(pushed["access_token"].as_str().unwrap())["sub"],
        "hook:erin@app"
    );

    // Users file first: alice never reaches the hook, right or wrong.
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(login(&app, "alice", PASSWORD).await.0, 200);
    assert_eq!(login(&app, "alice", "wrong").await.0, 401);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before);

    // Broken hook → 503, never a login.
    let (st, body) = login(&app, "broken", PASSWORD).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );

    // Slow hook → 503 once the 5 s timeout passes, not a hang.
    let t = Instant::now();
    let (st, _) = login(&app, "slow", PASSWORD).await;
    assert_eq!(st, 503);
    assert!(t.elapsed() < Duration::from_secs(12), "{:?}", t.elapsed());

    // Refused → 401, counted by the failed-login limit.
    for _ in 0..3 {
        let (st, body) = login(&app, "mallory", "guess").await;
        assert_eq!(
            (st, body["error"].as_str()),
            (401, Some("invalid_credentials"))
        );
    }
    assert_eq!(login(&app, "mallory", "guess").await.0, 429);
}

/// Issue 22: a name the users file does not know must not cost the hash *plus* the hook round
/// trip (that sets the file's names apart by latency): the hook is asked while the dummy hash
/// waits or runs. With the hash slots busy with a queue of wrong-password logins, the hook
/// hears the unknown name before that queue has drained.
#[tokio::test]
async fn login_hook_is_asked_while_the_dummy_hash_runs() {
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
    let handler = move |axum::Json(q): axum::Json<Value>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(q["username"].as_str().unwrap_or_default().to_string());
            axum::http::StatusCode::UNAUTHORIZED
        }
    };
    let hook = axum::Router::new().route("/check", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let app = std::sync::Arc::new(
        TestApp::spawn(&["--login-hook", &url, "--login-failures", "1000"]).await,
    );
    // As many hash slots as the server has (cores, at most 5 for these hashes), each with a
    // queue of 20: well inside the queue the gate admits, so nobody is turned away.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queued: Vec<_> = (0..cores.min(5) * 20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { login(&app, "bob", "wrong").await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unknown = tokio::spawn({
        let app = app.clone();
        async move { login(&app, "mallory", "guess").await.0 }
    });
    let drained = futures::future::join_all(queued);
    tokio::select! {
        who = heard.recv() => assert_eq!(who.as_deref(), Some("mallory")),
        codes = drained => panic!("the hook was asked only after the hash queue drained: {codes:?}"),
    }
    assert_eq!(unknown.await.unwrap(), 401);
}

#[tokio::test]
async fn login_hook_down_is_503() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/check");
    let app = TestApp::spawn(&["--login-hook", &url]).await;
    let (st, body) = login(&app, "erin", PASSWORD).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    assert_eq!(
        login(&app, "bob", PASSWORD).await.0,
        200,
        "users file still works"
    );
}

#[tokio::test]
async fn discovery_document_points_under_the_issuer() {
    let app = TestApp::spawn(&["--issuer", "https://auth.example.test/"]).await;
    let (st, d) = app.get_auth("/.well-known/openid-configuration", "x").await;
    assert_eq!(st, 200);
    assert_eq!(d["issuer"], "https://auth.example.test/");
    assert_eq!(
        d["jwks_uri"],
        "https://auth.example.test/.well-known/jwks.json"
    );
    assert_eq!(
        d["token_endpoint"],
        "https://auth.example.test/auth/refresh"
    );
    assert_eq!(
        d["revocation_endpoint"],
        "https://auth.example.test/auth/revoke"
    );
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
}

#[tokio::test]
async fn openapi_document_is_served_and_matches_the_committed_one() {
    let app = TestApp::spawn(&[]).await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let served: Value = r.json().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("TOKENPUSH_BLESS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&served).unwrap() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is stale: TOKENPUSH_BLESS=1 cargo test --test integration openapi"
    );
    assert_eq!(served["openapi"], "3.1.0");
    for route in [
        "/auth/login",
        "/auth/refresh",
        "/events",
        "/admin/sessions",
        "/api/me",
    ] {
        assert!(served["paths"][route].is_object(), "{route} missing");
    }
    let login = &served["paths"]["/auth/login"]["post"]["responses"];
    for code in ["200", "400", "401", "413", "415", "429", "503"] {
        assert!(login[code].is_object(), "login {code} undocumented");
    }
}

/// The example resource server's code, verbatim (examples/resource_server.rs).
#[path = "../examples/resource_server.rs"]
mod resource_server;

#[tokio::test]
async fn example_resource_server_accepts_pushed_tokens_until_exp_only() {
    let app = TestApp::spawn(&[]).await;
    let api = resource_server::app(&app.base, "tokenpush", None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/hello", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api).await });
    let call = |token: Option<String>| {
        let req = app.client.get(&api_url);
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };

    let tokens = app.login_as("bob").await;
    assert_eq!(call(None).await, 401);
    assert_eq!(
        call(Some(tokens["refresh_token"].as_str().unwrap().into())).await,
        401
    );
    let pushed = sees_a_renewal(&app, &tokens).await;
    let access = pushed["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        call(Some(access.clone())).await,
        200,
        "pushed token accepted"
    );

    // Revoked: tokenpush refuses it at once; a JWKS-only resource server until exp (+2 s leeway).
    assert_eq!(app.logout(&access).await, 204);
    assert_eq!(app.get_auth("/api/me", &access).await.0, 401);
    let exp = claims(&access)["exp"].as_i64().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    if now() < exp {
        assert_eq!(call(Some(access.clone())).await, 200, "valid until exp");
    }
    while now() <= exp + 3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(call(Some(access)).await, 401, "expired token refused");
}

/// Reads an SSE response until an event of `kind` arrives; its data.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String, kind: &str) -> Value {
    let deadline = Instant::now() + 5 * S;
    loop {
        while let Some(i) = buf.find("\n\n") {
            let frame: String = buf.drain(..i + 2).collect();
            if frame.lines().any(|l| l == format!("event: {kind}")) {
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("null");
                return serde_json::from_str(data).unwrap();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event in 5 s"))
            .unwrap()
            .expect("feed still open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn revocation_feed_tells_service_key_holders_at_once() {
    let keydir = tempfile::tempdir().unwrap();
    let key = service_key_file(keydir.path());
    let app = TestApp::spawn(&["--service-key-file", &key]).await;
    let feed = |k: Option<&str>| {
        let req = app.client.get(app.url("/admin/events"));
        let req = match k {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        async move { req.send().await.unwrap() }
    };
    assert_eq!(feed(None).await.status().as_u16(), 401);
    let alice = app.login_as("alice").await;
    assert_eq!(
        feed(Some(alice["access_token"].as_str().unwrap()))
            .await
            .status()
            .as_u16(),
        401,
        "an admin access token is not the service key"
    );
    let mut resp = feed(Some(SERVICE_KEY)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut buf = String::new();
    next_event(&mut resp, &mut buf, "ready").await;

    let bob = app.login_as("bob").await;
    assert_eq!(app.logout(bob["access_token"].as_str().unwrap()).await, 204);
    let ev = next_event(&mut resp, &mut buf, "revoked").await;
    assert_eq!(ev["session_id"], bob["session_id"]);
    assert_eq!(ev["reason"], "logout");

    // Graceful shutdown: `reconnect`, then the feed ends (it does not hold the drain up).
    let mut app = app;
    let stop = tokio::spawn(async move {
        app.stop().await;
        app
    });
    let ev = next_event(&mut resp, &mut buf, "reconnect").await;
    assert!(ev["retry_ms"].as_u64().unwrap() > 0);
    let end = tokio::time::timeout(2 * S, resp.chunk()).await;
    assert!(matches!(end, Ok(Ok(None))), "feed ended: {end:?}");
    drop(stop.await.unwrap());

    let without = TestApp::spawn(&[]).await;
    let r = without
        .client
        .get(without.url("/admin/events"))
        .bearer_auth(SERVICE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn example_resource_server_following_the_feed_refuses_revoked_tokens_at_once() {
    let keydir = tempfile::tempdir().unwrap();
    let key = service_key_file(keydir.path());
    let app = TestApp::spawn(&["--service-key-file", &key]).await;
    let api = resource_server::app(&app.base, "tokenpush", Some(SERVICE_KEY.into()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/hello", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api).await });
    let call = |token: String| {
        let req = app.client.get(&api_url).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let tokens = app.login_as("carol").await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(access.clone()).await, 200);
    // Give the feed subscription a moment to be in place, then revoke.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.logout(&access).await, 204);
    let deadline = Instant::now() + 2 * S;
    while call(access.clone()).await != 401 {
        assert!(Instant::now() < deadline, "still accepted 2 s after logout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

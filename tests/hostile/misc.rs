//! Hostile clients: proxy addresses, key-file permissions, admin demotion, loose input.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{claims, status_json, TestApp, PASSWORD};

/// POSTs a login as `user` with `password`, sending `X-Forwarded-For: xff`.
async fn login_via(
    app: &TestApp,
    xff: &str,
    user: &str,
    password: &str,
) -> (u16, serde_json::Value) {
    let r = app
        .client
        .post(app.url("/auth/login"))
        .header("X-Forwarded-For", xff)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    let (st, v) = status_json(r).await;
    app.remember(&v);
    (st, v)
}

#[tokio::test]
async fn trusted_proxy_address_is_the_rightmost_forwarded_entry() {
    let app = TestApp::spawn(&["--trust-proxy", "--login-failures", "3"]).await;
    // The `ip` claim is what the nearest proxy saw, whatever the client put to its left.
    for xff in ["6.6.6.6, 203.0.113.9", "7.7.7.7,203.0.113.9", "203.0.113.9"] {
        let (st, body) = login_via(&app, xff, "alice", PASSWORD).await;
        assert_eq!(st, 200, "{body}");
        let ip = claims(body["access_token"].as_str().unwrap())["ip"].clone();
        assert_eq!(ip, "203.0.113.9", "X-Forwarded-For {xff:?}");
    }
    // Rotating the leftmost entry does not buy more guesses: one limit for 203.0.113.9.
    for i in 0..3 {
        let (st, _) = login_via(&app, &format!("10.0.0.{i}, 203.0.113.9"), "bob", "wrong").await;
        assert_eq!(st, 401);
    }
    let (st, _) = login_via(&app, "10.9.9.9, 203.0.113.9", "bob", "wrong").await;
    assert_eq!(
        st, 429,
        "a forged leftmost X-Forwarded-For reset the login limit"
    );
    // Another address behind the proxy has its own limit; garbage on the right is ignored
    // (the socket peer counts instead).
    let (st, _) = login_via(&app, "203.0.113.9, 198.51.100.7", "bob", "wrong").await;
    assert_eq!(st, 401);
    let (st, body) = login_via(&app, "1.2.3.4, not-an-ip", "alice", PASSWORD).await;
    assert_eq!(st, 200);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["ip"],
        "127.0.0.1"
    );
}

#[tokio::test]
async fn hs256_secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, [42u8; 48]).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenpush"))
        .args(["--listen", "127.0.0.1:0", "--signing", "hs256"])
        .arg("--hs256-secret-file")
        .arg(&secret)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with a 0644 HS256 secret file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&secret.display().to_string()),
        "message names the file: {err}"
    );
    assert!(err.contains("chmod 600"), "message gives the fix: {err}");

    // Fixed as told, the same file is accepted.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = secret.display().to_string();
    let app = TestApp::spawn(&["--signing", "hs256", "--hs256-secret-file", &path]).await;
    app.login_as("bob").await;
}

#[tokio::test]
async fn everything_in_the_data_dir_is_private() {
    let app = TestApp::spawn(&[]).await;
    app.login_as("bob").await;
    let data = app.data_dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut names = vec![];
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(mode(&path) & 0o077, 0, "{name} is open to group or other");
        names.push(name);
    }
    for suffix in ["-wal", "-shm"] {
        assert!(
            names.iter().any(|n| n.ends_with(suffix)),
            "no {suffix} file among {names:?}"
        );
    }
}

#[tokio::test]
async fn demoted_admin_loses_admin_routes_at_once() {
    let app = TestApp::spawn(&[]).await;
    let alice = app.login_as("alice").await;
    let alice_at = alice["access_token"].as_str().unwrap();
    let bob = app.login_as("bob").await;
    let bob_at = bob["access_token"].as_str().unwrap();
    assert_eq!(app.get_auth("/admin/sessions", alice_at).await.0, 200);
    assert_eq!(app.get_auth("/admin/sessions", bob_at).await.0, 403);

    // Alice makes bob an admin and steps down herself; both old tokens stay unexpired.
    for (user, roles) in [("bob", json!(["admin"])), ("alice", json!([]))] {
        let r = app
            .client
            .put(app.url(&format!("/admin/users/{user}/roles")))
            .bearer_auth(alice_at)
            .json(&json!({"roles": roles}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (st, body) = app.get_auth("/admin/sessions", alice_at).await;
    assert_eq!(
        st, 403,
        "a demoted admin's old token still opens /admin: {body}"
    );
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(app.get_auth("/admin/sessions", bob_at).await.0, 200);
    // Only the role went: the session itself is untouched.
    assert_eq!(app.get_auth("/api/me", alice_at).await.0, 200);
}

#[tokio::test]
async fn device_id_loses_bidi_and_invisible_characters() {
    let app = TestApp::spawn(&[]).await;
    let (st, body) = app
        .post_json(
            "/auth/login",
            json!({"username": "alice", "password": PASSWORD,
                   "device_id": "phone\u{202E}txt.exe\u{200B}\u{2066}\u{7}\u{FEFF}"}),
        )
        .await;
    assert_eq!(st, 200);
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["device"], "phonetxt.exe");
    let (_, list) = app.get_auth("/admin/sessions", access).await;
    assert_eq!(list["sessions"][0]["device"], "phonetxt.exe");
}

#[tokio::test]
async fn served_pages_carry_browser_hardening_headers() {
    let app = TestApp::spawn(&[]).await;
    for path in ["/", "/app.js", "/tokenpush-client.js", "/style.css"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for want in [
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(want), "{path}: CSP {csp:?} lacks {want}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    let r = app.client.get(app.url("/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let host = app.base.trim_start_matches("http://");
    assert!(csp.contains(&format!("ws://{host}")), "{csp}");
    // The page itself has no inline script or style for the CSP to block.
    let page = r.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "inline code in index.html"
    );
}

/// A CORS preflight for `POST /auth/refresh` from `origin`: (status, Access-Control-Allow-Origin).
async fn preflight(app: &TestApp, origin: &str) -> (u16, Option<String>) {
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/refresh"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    let allow = r
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), allow)
}

#[tokio::test]
async fn cors_allows_exactly_the_listed_origins() {
    let app = TestApp::spawn(&["--allowed-origins", "http://app.example:3000"]).await;
    let (st, allow) = preflight(&app, "http://app.example:3000").await;
    assert_eq!(
        (st, allow.as_deref()),
        (200, Some("http://app.example:3000"))
    );
    let (_, allow) = preflight(&app, "http://evil.example").await;
    assert_eq!(allow, None, "an unlisted origin was allowed");
    // The actual response carries the header too, and never allows credentials.
    let r = app
        .client
        .post(app.url("/auth/refresh"))
        .header("Origin", "http://app.example:3000")
        .json(&json!({"refresh_token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example:3000"
    );
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());

    // `*`: any origin, still without credentials.
    let any = TestApp::spawn(&["--allowed-origins", "*"]).await;
    assert_eq!(
        preflight(&any, "http://evil.example").await,
        (200, Some("*".into()))
    );

    // Default (own origin only): no CORS for anyone.
    let own = TestApp::spawn(&[]).await;
    let origin = own.base.clone();
    assert_eq!(preflight(&own, &origin).await.1, None);
    assert_eq!(preflight(&own, "http://app.example:3000").await.1, None);
}

/// Sends one `GET /events` head on a fresh connection (the direct path) and returns what the
/// server wrote before `until` appeared or the connection closed.
async fn raw_events(app: &TestApp, ticket: &str, origin: &str, until: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "GET /events?ticket={ticket} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains(until) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

#[tokio::test]
async fn direct_sse_path_answers_cors_for_listed_origins_only() {
    let app = TestApp::spawn(&["--allowed-origins", "http://app.example:3000"]).await;
    let t = app.login_as("bob").await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();

    let ok = raw_events(
        &app,
        &app.ticket(&rt).await,
        "http://app.example:3000",
        "event: ready",
    )
    .await;
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
    assert!(
        ok.contains("access-control-allow-origin: http://app.example:3000"),
        "a listed origin cannot read the direct SSE stream: {ok}"
    );
    // Errors are readable too, so a cross-origin client sees `invalid_ticket`.
    let bad = raw_events(&app, "nope", "http://app.example:3000", "invalid_ticket").await;
    assert!(bad.starts_with("http/1.1 401"), "{bad}");
    assert!(
        bad.contains("access-control-allow-origin: http://app.example:3000"),
        "{bad}"
    );

    let foreign = raw_events(
        &app,
        &app.ticket(&rt).await,
        "http://evil.example",
        "event: ready",
    )
    .await;
    assert!(foreign.starts_with("http/1.1 200"), "{foreign}");
    assert!(
        !foreign.contains("access-control-allow-origin"),
        "an unlisted origin was allowed: {foreign}"
    );
}

/// Every byte of `raw` percent-encoded, as a query value.
fn percent_encode(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Property test through the real binary: arbitrary bytes as the `ticket` of `/events`
/// (served directly or by hyper) and `/ws`, and as the refresh token of `/auth/ticket`,
/// always get the documented refusal and never hurt the server.
#[tokio::test]
async fn arbitrary_tickets_and_tokens_are_refused_cleanly() {
    use proptest::strategy::{Strategy, ValueTree};
    let app = TestApp::spawn(&[]).await;
    let mut runner = proptest::test_runner::TestRunner::default();
    let bytes = proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96);
    for _ in 0..48 {
        let raw = bytes.new_tree(&mut runner).unwrap().current();
        let ticket = percent_encode(&raw);
        // A fresh connection each time, so `/events` takes the direct path too.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        for client in [&app.client, &fresh] {
            let r = client
                .get(app.url(&format!("/events?ticket={ticket}")))
                .send()
                .await
                .unwrap();
            let (st, body) = status_json(r).await;
            assert_eq!(
                (st, body["error"].as_str()),
                (401, Some("invalid_ticket")),
                "ticket bytes {raw:?}"
            );
        }
        let ws = crate::common::Ws::open(app.port, &ticket, None).await.err();
        assert_eq!(ws, Some(401), "ws ticket bytes {raw:?}");
        let text = String::from_utf8_lossy(&raw).to_string();
        let (st, body) = app
            .post_json("/auth/ticket", json!({"refresh_token": text}))
            .await;
        assert!(st == 400, "refresh token {raw:?}: {st} {body}");
        assert!(
            matches!(
                body["error"].as_str(),
                Some("invalid_grant" | "invalid_request")
            ),
            "{body}"
        );
    }
    assert_eq!(app.get_text("/healthz").await, r#"{"status":"ok"}"#);
}

/// Issue 10 item 6: at `RUST_LOG=trace` (every crate, every level) a login, both channel
/// kinds, a refresh, pushes and a logout leave no password, token or ticket in the log (the
/// harness checks every secret it saw when the app drops).
#[tokio::test]
async fn nothing_secret_is_logged_even_at_trace() {
    let app = TestApp::spawn_logging("trace", &[]).await;
    let login = app.login_as("bob").await;
    let rt = login["refresh_token"].as_str().unwrap().to_string();
    let mut sse = app.sse(&app.ticket(&rt).await, None).await.unwrap();
    let mut ws = app.ws(&app.ticket(&rt).await).await;
    sse.expect("ready", Duration::from_secs(5)).await;
    ws.expect("ready", Duration::from_secs(5)).await;
    // A renewal push down both channels (FAST: every 4 s); its tokens are secrets too.
    let pushed = sse.expect("tokens", Duration::from_secs(8)).await;
    app.remember(&pushed.data);
    let frame = ws.expect("tokens", Duration::from_secs(2)).await;
    app.remember(&frame);
    ws.send_json(json!({"type": "ack", "id": frame["id"]}))
        .await;
    let (st, refreshed) = app
        .refresh(pushed.data["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(st, 200, "{refreshed}");
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(app.logout(access).await, 204);
    sse.expect("revoked", Duration::from_secs(2)).await;
}

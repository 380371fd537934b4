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

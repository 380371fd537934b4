//! Core token service against a real server: login, rotation rule, token checks, restart,
//! bad input, and no tokens in logs (issue: core token service).

mod common;

use std::time::Duration;

use common::{claims, status_json, TestApp, PASSWORD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

#[tokio::test]
async fn login_then_me_and_wrong_password_and_rate_limit() {
    let app = TestApp::spawn(&[]).await;
    let t = app.login_as("alice").await;
    for k in [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "session_id",
    ] {
        assert!(t.get(k).is_some(), "TokenResponse lacks {k}");
    }
    let (st, me) = app
        .get_auth("/api/me", t["access_token"].as_str().unwrap())
        .await;
    assert_eq!(st, 200);
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["session_id"], t["session_id"]);

    for i in 0..10 {
        let (st, body) = app
            .post_json(
                "/auth/login",
                json!({"username": "bob", "password": "wrong"}),
            )
            .await;
        assert_eq!(
            (st, body["error"].as_str()),
            (401, Some("invalid_credentials")),
            "attempt {i}"
        );
    }
    let r = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username": "bob", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(status_json(r).await.1["error"], "rate_limited");
    // Unknown users are limited the same way and answer like wrong passwords.
    let (st, body) = app
        .post_json(
            "/auth/login",
            json!({"username": "nobody", "password": "x"}),
        )
        .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_credentials"))
    );
    // Another user from the same address is not locked out.
    app.login_as("carol").await;
}

#[tokio::test]
async fn fifty_concurrent_refreshes_get_one_successor() {
    let app = TestApp::spawn(&[]).await;
    let t = app.login_as("bob").await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let successors = common::concurrent_refreshes(&[&app], &rt, 50).await;
    assert_eq!(successors.len(), 1, "all callers get the same successor");
    let next = successors.into_iter().next().unwrap();
    assert_ne!(next, rt);
    assert!(next.contains(".1."), "exactly one generation step: {next}");
    // Using the successor moves to generation 2, not further.
    let (st, body) = app.refresh(&next).await;
    assert_eq!(st, 200);
    assert!(body["refresh_token"].as_str().unwrap().contains(".2."));
    assert_eq!(claims(body["access_token"].as_str().unwrap())["gen"], 2);
}

#[tokio::test]
async fn replay_after_grace_revokes_the_session() {
    let app = TestApp::spawn(&["--grace", "1s"]).await;
    let t0 = app.login_as("bob").await;
    let (_, t1) = app.refresh(t0["refresh_token"].as_str().unwrap()).await;
    let (st, t2) = app.refresh(t1["refresh_token"].as_str().unwrap()).await; // uses the successor
    assert_eq!(st, 200);
    // Inside the grace window, a racing caller with the original still converges.
    let (st, same) = app.refresh(t0["refresh_token"].as_str().unwrap()).await;
    assert_eq!((st, &same["refresh_token"]), (200, &t2["refresh_token"]));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (st, body) = app.refresh(t0["refresh_token"].as_str().unwrap()).await;
    assert_eq!((st, body["error"].as_str()), (400, Some("invalid_grant")));
    let (st, body) = app.refresh(t2["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "successor revoked too"
    );
    for at in [&t0, &t1, &t2] {
        let (st, _) = app
            .get_auth("/api/me", at["access_token"].as_str().unwrap())
            .await;
        assert_eq!(
            st, 401,
            "access tokens of a revoked session stop working at once"
        );
    }
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("tokenpush_reuse_detected_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unused_successor_keeps_predecessor_redeemable_after_grace() {
    let app = TestApp::spawn(&["--grace", "1s"]).await;
    let t0 = app.login_as("bob").await;
    let (_, t1) = app.refresh(t0["refresh_token"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The response carrying t1 was "lost": the client retries with what it has.
    let (st, again) = app.refresh(t0["refresh_token"].as_str().unwrap()).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["refresh_token"], t1["refresh_token"]);
    let (st, _) = app
        .get_auth("/api/me", again["access_token"].as_str().unwrap())
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused_with_www_authenticate() {
    let app = TestApp::spawn(&[]).await;
    let t = app.login_as("alice").await;
    let at = t["access_token"].as_str().unwrap();
    let seed = std::fs::read(app.data_dir.path().join("data/signing-ed25519.key")).unwrap();
    let key = tokenpush::tokens::keys::ed25519(&seed).unwrap();
    let header = {
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(key.kid.clone());
        h
    };
    let good: Value = claims(at);
    let sign = |c: &Value, h: &Header| jsonwebtoken::encode(h, c, &key.encoding).unwrap();
    let now = tokenpush::clock::now_secs();

    let mut cases: Vec<(&str, String)> = vec![];
    let mut parts: Vec<String> = at.split('.').map(String::from).collect();
    let flip = if parts[2].starts_with('A') { "B" } else { "A" };
    parts[2].replace_range(0..1, flip);
    cases.push(("tampered signature", parts.join(".")));
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = at.split('.').nth(1).unwrap();
    cases.push((
        "alg none",
        format!(
            "{}.{payload}.",
            b64(&json!({"alg": "none", "typ": "at+jwt", "kid": key.kid}))
        ),
    ));
    let public = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.jwk.as_ref().unwrap()["x"].as_str().unwrap(),
    )
    .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(key.kid.clone());
    cases.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&public)).unwrap(),
    ));
    let mut unknown = header.clone();
    unknown.kid = Some("not-our-key".into());
    cases.push(("unknown kid", sign(&good, &unknown)));
    let mut c = good.clone();
    c["exp"] = json!(now - 10);
    c["iat"] = json!(now - 100);
    cases.push(("expired", sign(&c, &header)));
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    cases.push(("wrong aud", sign(&c, &header)));
    let mut c = good.clone();
    c["iss"] = json!("http://evil");
    cases.push(("wrong iss", sign(&c, &header)));
    let mut plain = header.clone();
    plain.typ = Some("JWT".into());
    cases.push(("not at+jwt", sign(&good, &plain)));
    cases.push((
        "refresh token as Bearer",
        t["refresh_token"].as_str().unwrap().to_string(),
    ));

    for (name, token) in cases {
        let r = app
            .client
            .get(app.url("/api/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            www.starts_with("Bearer") && www.contains(r#"error="invalid_token""#),
            "{name}: {www}"
        );
    }
    // A well-signed token with our key is accepted: the cases above fail for their own reason.
    assert_eq!(app.get_auth("/api/me", &sign(&good, &header)).await.0, 200);

    let r = app.client.get(app.url("/api/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="tokenpush""#
    );
    let r = app
        .client
        .get(app.url(&format!("/api/me?access_token={at}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "tokens are never read from the URL");
    let r = app
        .client
        .get(app.url("/api/me"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .get(app.url("/api/me"))
        .header("Authorization", format!("bEaReR {at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "scheme is case-insensitive");
    let r = app
        .client
        .get(app.url("/api/me"))
        .header("Authorization", format!("Bearer {at}"))
        .header("Authorization", format!("Bearer {at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "two Authorization headers");
    // bob is not an admin.
    let bob = app.login_as("bob").await;
    let r = app
        .client
        .get(app.url("/admin/sessions"))
        .bearer_auth(bob["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
}

#[tokio::test]
async fn sessions_and_keys_survive_a_restart() {
    let mut app = TestApp::spawn(&["--access-ttl", "60s"]).await;
    let t = app.login_as("bob").await;
    let jwks_before = app.get_text("/.well-known/jwks.json").await;
    app.restart().await;
    let jwks_after = app.get_text("/.well-known/jwks.json").await;
    assert_eq!(jwks_before, jwks_after, "same signing key after restart");
    let (st, _) = app
        .get_auth("/api/me", t["access_token"].as_str().unwrap())
        .await;
    assert_eq!(st, 200, "old access token still works");
    let (st, body) = app.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["session_id"], t["session_id"]);
    // A revocation made before a restart is still enforced after it.
    let (st, _) = app
        .post_json(
            "/auth/logout",
            json!({"refresh_token": body["refresh_token"]}),
        )
        .await;
    assert_eq!(st, 204);
    app.restart().await;
    let (st, _) = app
        .get_auth("/api/me", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_logs_hold_no_token() {
    let app = TestApp::spawn(&[]).await;
    let post_raw = |path: &'static str, ctype: &'static str, body: Vec<u8>| {
        let req = app
            .client
            .post(app.url(path))
            .header("content-type", ctype)
            .body(body);
        async move { status_json(req.send().await.unwrap()).await }
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/auth/login",
            "application/json",
            b"{not json".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/login",
            "text/plain",
            b"{}".to_vec(),
            415,
            "invalid_request",
        ),
        (
            "/auth/login",
            "application/json",
            vec![b' '; 20_000],
            413,
            "invalid_request",
        ),
        (
            "/auth/login",
            "application/json",
            br#"{"username":"","password":""}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/login",
            "application/json",
            br#"{"username":"bob"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/login",
            "application/json",
            br#"[1,2]"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/refresh",
            "application/json",
            br#"{"refresh_token":""}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/refresh",
            "application/json",
            br#"{"refresh_token":"garbage"}"#.to_vec(),
            400,
            "invalid_grant",
        ),
        (
            "/auth/refresh",
            "application/json",
            br#"{"refresh_token":"a.1.AAAA"}"#.to_vec(),
            400,
            "invalid_grant",
        ),
        (
            "/auth/refresh",
            "application/x-www-form-urlencoded",
            b"grant_type=password&refresh_token=x".to_vec(),
            400,
            "unsupported_grant_type",
        ),
        (
            "/auth/refresh",
            "application/x-www-form-urlencoded",
            b"refresh_token=x".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/ticket",
            "application/json",
            br#"{}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/auth/revoke",
            "application/x-www-form-urlencoded",
            b"".to_vec(),
            400,
            "invalid_request",
        ),
    ];
    for (path, ctype, body, want, code) in cases {
        let (st, json) = post_raw(path, ctype, body.clone()).await;
        assert_eq!(
            (st, json["error"].as_str()),
            (want, Some(code)),
            "{path} {ctype} {:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        assert!(json["error_description"].is_string());
    }
    // RFC 7009: unknown tokens still get 200.
    let (st, _) = post_raw(
        "/auth/revoke",
        "application/x-www-form-urlencoded",
        b"token=whatever".to_vec(),
    )
    .await;
    assert_eq!(st, 200);

    // A whole flow, then no token, refresh token or ticket in the log.
    let t = app.login_as("alice").await;
    let mut secrets = vec![
        t["access_token"].as_str().unwrap().to_string(),
        t["refresh_token"].as_str().unwrap().to_string(),
    ];
    let (_, t2) = app.refresh(t["refresh_token"].as_str().unwrap()).await;
    secrets.push(t2["refresh_token"].as_str().unwrap().to_string());
    let ticket = app.ticket(t2["refresh_token"].as_str().unwrap()).await;
    secrets.push(ticket.clone());
    let mut sse = app.sse(&ticket, None).await.unwrap();
    sse.expect("ready", Duration::from_secs(5)).await;
    let (st, _) = app
        .post_json(
            "/auth/login",
            json!({"username": "alice", "password": PASSWORD.to_string() + "x"}),
        )
        .await;
    assert_eq!(st, 401);
    secrets.push(PASSWORD.to_string());
    let (st, _) = app
        .post_json("/auth/revoke", json!({"token": t2["refresh_token"]}))
        .await;
    assert_eq!(st, 200, "JSON is accepted beside the RFC 7009 form");
    let r = app
        .client
        .post(app.url("/auth/revoke"))
        .form(&[("token", t2["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sse.expect("revoked", Duration::from_secs(2)).await;
    let logs = app.logs();
    assert!(logs.contains("login"), "the log is being captured");
    common::assert_no_secrets(&logs, &secrets);
}

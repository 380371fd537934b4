//! Hostile clients: raced login-failure limits and ticket floods, on every store.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{status_json, Redis, TestApp, PASSWORD};

/// 40 parallel wrong guesses for one address and username: the attempt is reserved before the
/// hash, so at most `--login-failures` (10) are evaluated (401) and the rest are 429.
async fn parallel_guesses_are_capped(app: &TestApp) {
    let mut tasks = vec![];
    for _ in 0..40 {
        let (client, url) = (app.client.clone(), app.url("/auth/login"));
        tasks.push(tokio::spawn(async move {
            let body = json!({"username": "bob", "password": "wrong-guess"});
            let r = client.post(&url).json(&body).send().await.unwrap();
            let retry = r.headers().contains_key("retry-after");
            let (st, v) = status_json(r).await;
            (st, v, retry)
        }));
    }
    let (mut evaluated, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (401, v, _) => {
                assert_eq!(v["error"], "invalid_credentials");
                evaluated += 1
            }
            (429, v, retry) => {
                assert_eq!(v["error"], "rate_limited");
                assert!(retry, "429 without Retry-After");
                limited += 1
            }
            (st, v, _) => panic!("unexpected {st} {v}"),
        }
    }
    assert!(
        evaluated <= 10,
        "{evaluated} of 40 parallel guesses evaluated"
    );
    assert_eq!(evaluated + limited, 40);
    // The right password from the same address is limited too, until the window ends.
    let (st, _) = app
        .post_json(
            "/auth/login",
            json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(st, 429);
}

#[tokio::test]
async fn parallel_wrong_passwords_are_capped_on_sqlite() {
    let app = TestApp::spawn(&[]).await;
    parallel_guesses_are_capped(&app).await;
}

#[tokio::test]
async fn parallel_wrong_passwords_are_capped_on_redis() {
    let redis = Redis::start().await;
    let url = redis.url();
    let app = TestApp::spawn(&["--store", &url, "--issuer", "http://tokenpush.test"]).await;
    parallel_guesses_are_capped(&app).await;
    // A second node shares the count.
    let peer = app
        .spawn_peer(&["--store", &url, "--issuer", "http://tokenpush.test"])
        .await;
    let (st, _) = peer
        .post_json("/auth/login", json!({"username": "bob", "password": "x"}))
        .await;
    assert_eq!(st, 429);
}

/// Successful logins give their reservation back: they never use up the failure budget.
#[tokio::test]
async fn successful_logins_do_not_count_against_the_limit() {
    let app = TestApp::spawn(&[]).await;
    let login =
        |pw: &'static str| app.post_json("/auth/login", json!({"username": "bob", "password": pw}));
    for _ in 0..9 {
        assert_eq!(login("wrong").await.0, 401);
    }
    for _ in 0..5 {
        let (st, v) = login(PASSWORD).await;
        assert_eq!(st, 200, "{v}");
        app.remember(&v);
    }
    assert_eq!(
        login("wrong").await.0,
        401,
        "the tenth failure is still evaluated"
    );
    assert_eq!(login("wrong").await.0, 429);
}

/// Tickets are rate-limited per session: 10 per 10 s, then 429 with `Retry-After`; another
/// session is unaffected.
#[tokio::test]
async fn tickets_are_limited_per_session() {
    let app = TestApp::spawn(&[]).await;
    let (a, b) = (app.login_as("bob").await, app.login_as("bob").await);
    let rt = |t: &Value| t["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..10 {
        let (st, v) = app
            .post_json("/auth/ticket", json!({"refresh_token": rt(&a)}))
            .await;
        assert_eq!(st, 200, "{v}");
        app.remember(&v);
    }
    let r = app
        .client
        .post(app.url("/auth/ticket"))
        .json(&json!({"refresh_token": rt(&a)}))
        .send()
        .await
        .unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    let (st, v) = status_json(r).await;
    assert_eq!((st, v["error"].as_str()), (429, Some("rate_limited")));
    let (st, v) = app
        .post_json("/auth/ticket", json!({"refresh_token": rt(&b)}))
        .await;
    assert_eq!(st, 200, "another session is not limited: {v}");
    app.remember(&v);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (st, v) = app
        .post_json("/auth/ticket", json!({"refresh_token": rt(&a)}))
        .await;
    assert_eq!(st, 200, "the window ended: {v}");
    app.remember(&v);
}

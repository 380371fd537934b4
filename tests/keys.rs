//! Signing-key rotation on one node (issue 14 defect 7): `tokenpush keys rotate`, SIGHUP,
//! JWKS with the retired key until its tokens expired, verification by `kid`, a restart in
//! between. The cluster part is tests/cluster.rs::signing_key_rotation_reaches_every_node….

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestApp;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_string()
}

fn kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt)
        .unwrap()
        .kid
        .expect("every access token names its key")
}

/// `tokenpush keys rotate --data-dir DIR`.
fn rotate(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenpush"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn jwks(app: &TestApp) -> JwkSet {
    serde_json::from_str(&app.get_text("/.well-known/jwks.json").await).unwrap()
}

fn kids(set: &JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

/// Verifies `jwt` with the JWKS key its header names, as a resource server would.
fn verify_with_jwks(set: &JwkSet, jwt: &str, app: &TestApp) -> Value {
    let jwk = set
        .find(&kid(jwt))
        .unwrap_or_else(|| panic!("kid {} not in JWKS", kid(jwt)));
    let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["tokenpush"]);
    v.set_issuer(&[app.base.as_str()]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

fn hangup(app: &TestApp) {
    // SAFETY: sends a signal to the server process this test started.
    assert_eq!(unsafe { libc::kill(app.pid() as i32, libc::SIGHUP) }, 0);
}

#[tokio::test]
async fn old_tokens_stay_valid_until_they_expire_and_new_ones_carry_the_new_kid() {
    const TTL: u64 = 6;
    let mut app = TestApp::spawn(&["--access-ttl", "6s", "--renew-lead", "2s"]).await;
    let data = app.data_dir.path().join("data");
    let old = app.login_as("bob").await;
    let old_at = s(&old, "access_token");
    let old_kid = kid(&old_at);
    assert_eq!(kids(&jwks(&app).await), vec![old_kid.clone()]);

    rotate(&data);
    let rotated_at = Instant::now();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("signing-ed25519.key")), 0o600);
        assert_eq!(mode(&data.join("signing-retired")), 0o700);
        for e in std::fs::read_dir(data.join("signing-retired")).unwrap() {
            assert_eq!(mode(&e.unwrap().path()), 0o600);
        }
    }
    hangup(&app);
    let end = Instant::now() + 3 * S;
    let new = loop {
        let t = app.login_as("bob").await;
        if kid(&s(&t, "access_token")) != old_kid {
            break t;
        }
        assert!(
            Instant::now() < end,
            "still signing with the old key after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_at = s(&new, "access_token");
    let new_kid = kid(&new_at);
    // A refresh token from before the rotation yields a token of the new key too.
    let (st, refreshed) = app.refresh(&s(&old, "refresh_token")).await;
    assert_eq!(st, 200, "{refreshed}");
    assert_eq!(kid(&s(&refreshed, "access_token")), new_kid);

    // Both keys are published, the new one first; each token verifies with its JWKS key.
    let set = jwks(&app).await;
    assert_eq!(kids(&set), vec![new_kid.clone(), old_kid.clone()]);
    assert_eq!(verify_with_jwks(&set, &old_at, &app)["sub"], "bob");
    assert_eq!(verify_with_jwks(&set, &new_at, &app)["sub"], "bob");
    // The server still accepts the old token, also after a restart (the retired key is read
    // back from the data dir).
    assert_eq!(app.get_auth("/api/me", &old_at).await.0, 200);
    app.restart().await;
    assert_eq!(app.get_auth("/api/me", &old_at).await.0, 200);
    assert_eq!(app.get_auth("/api/me", &new_at).await.0, 200);
    assert_eq!(kid(&s(&app.login_as("bob").await, "access_token")), new_kid);

    // The old token expires on its own; its key is still published then.
    let exp = common::claims(&old_at)["exp"].as_i64().unwrap();
    let now = tokenpush::clock::now_secs();
    tokio::time::sleep(Duration::from_secs((exp - now).max(0) as u64 + 1)).await;
    assert_eq!(app.get_auth("/api/me", &old_at).await.0, 401);
    assert!(kids(&jwks(&app).await).contains(&old_kid));
    // Gone once no token it signed can be unexpired: access TTL + reload interval + leeway
    // after the rotation, noticed at the next reload.
    let keep = Duration::from_secs(TTL)
        + tokenpush::service::KEY_RELOAD_EVERY
        + tokenpush::service::RETIRED_KEY_LEEWAY;
    let end = rotated_at + keep + tokenpush::service::KEY_RELOAD_EVERY + 2 * S;
    let mut published = kids(&jwks(&app).await);
    while published.contains(&old_kid) && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        published = kids(&jwks(&app).await);
    }
    assert_eq!(published, vec![new_kid.clone()], "retired key dropped");
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(TTL),
        "not dropped before its last token expired"
    );
    let fresh = s(&app.login_as("bob").await, "access_token");
    assert_eq!(kid(&fresh), new_kid);
    assert_eq!(app.get_auth("/api/me", &fresh).await.0, 200);
}

#[test]
fn hs256_is_not_rotated_here() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenpush"))
        .args(["--signing", "hs256", "keys", "rotate", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HS256 keeps one secret"));
    assert!(!dir.path().join("signing-ed25519.key").exists());
}

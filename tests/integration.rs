//! Fitting tokenpush into an app (issue 13): the config file and `config check`, trusted-backend
//! sessions (`POST /admin/sessions`), the login hook, discovery and the OpenAPI document — all
//! against the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{claims, PASSWORD};
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
    let (ok, out, err) = config_check(&text);
    assert!(ok, "{err}");
    assert!(
        out.contains("issuer = \"https://auth.example.com\"  # file"),
        "{out}"
    );
}

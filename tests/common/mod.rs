//! Test harness: runs the real `tokenpush` binary on an ephemeral port with short TTLs and
//! speaks HTTP, SSE and WebSocket to it (like zero-to-production's `spawn_app`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const PASSWORD: &str = "correct horse battery staple";

/// A users file shared by every test: alice (admin), bob, carol.
fn users_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let hash = tokenpush::users::hash_password(PASSWORD);
        let dir = std::env::temp_dir().join(format!("tokenpush-test-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.toml");
        let mut text = String::new();
        for (name, roles) in [("alice", "[\"admin\"]"), ("bob", "[]"), ("carol", "[]")] {
            text += &format!(
                "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\nroles = {roles}\n\n"
            );
        }
        std::fs::write(&path, text).unwrap();
        path
    })
    .clone()
}

/// Flags every test server gets unless overridden: 6 s access tokens renewed 2 s ahead.
pub const FAST: &[&str] = &[
    "--access-ttl",
    "6s",
    "--renew-lead",
    "2s",
    "--renew-jitter",
    "0s",
    "--grace",
    "2s",
    "--heartbeat",
    "2s",
];

/// A running server process and a client for it.
pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub args: Vec<String>,
    /// `RUST_LOG` for the server (`info` unless a test asks for more).
    pub rust_log: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// Every token, refresh token and ticket the helpers saw: checked against the log on drop.
    secrets: Mutex<Vec<String>>,
}

impl TestApp {
    /// Starts a server with `FAST` settings, any of which `extra` replaces, plus `extra`.
    pub async fn spawn(extra: &[&str]) -> TestApp {
        Self::spawn_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// Starts another node sharing this one's key files (what a cluster node needs).
    pub async fn spawn_peer(&self, extra: &[&str]) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        for f in ["signing-ed25519.key", "refresh-mac.key"] {
            std::fs::copy(self.data_dir.path().join("data").join(f), data.join(f)).unwrap();
        }
        Self::spawn_in(dir, extra).await
    }

    /// Starts a server logging at `rust_log` (e.g. `trace`), so the log check on drop covers
    /// everything every crate can log.
    pub async fn spawn_logging(rust_log: &str, extra: &[&str]) -> TestApp {
        Self::spawn_with(tempfile::tempdir().unwrap(), rust_log, extra).await
    }

    /// Starts a server in an existing (possibly pre-seeded) directory.
    pub async fn spawn_in(data_dir: tempfile::TempDir, extra: &[&str]) -> TestApp {
        Self::spawn_with(data_dir, "info", extra).await
    }

    async fn spawn_with(data_dir: tempfile::TempDir, rust_log: &str, extra: &[&str]) -> TestApp {
        let mut args: Vec<String> = vec![];
        for pair in FAST.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend(pair.iter().map(|s| s.to_string()));
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut app = TestApp {
            base: String::new(),
            port: 0,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // The server closes an idle keep-alive connection at `--header-timeout`
                // (10 s): a pooled connection reused just then fails mid-request, so the
                // pool lets go of idle ones well before.
                .pool_idle_timeout(Duration::from_secs(4))
                .build()
                .unwrap(),
            data_dir,
            args,
            rust_log: rust_log.to_string(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            secrets: Mutex::new(vec![PASSWORD.to_string()]),
        };
        app.start(0).await;
        app
    }

    async fn start(&mut self, port: u16) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenpush"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .arg("--users")
            .arg(users_file())
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start tokenpush");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(addr)) =
                        (&tx, line.strip_prefix("tokenpush listening on "))
                    {
                        let _ = tx.send(addr.to_string());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("server did not start; log:\n{}", self.logs()));
        self.base = addr;
        self.port = self.base.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    /// The server's process id, for reading `/proc/<pid>/` in resource tests.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Everything the server printed so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Graceful stop (SIGTERM), waiting for exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Graceful stop, then start again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start(self.port).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (st, v) = status_json(r).await;
        self.remember(&v);
        (st, v)
    }

    /// Records the secrets in a response, so the log check on drop looks for them.
    pub fn remember(&self, v: &Value) {
        let mut secrets = self.secrets.lock().unwrap();
        for k in ["access_token", "refresh_token", "ticket"] {
            if let Some(t) = v[k].as_str() {
                secrets.push(t.to_string());
            }
        }
    }

    /// `GET path` as text (metrics, JWKS).
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `POST /auth/logout` with a Bearer access token; returns the status.
    pub async fn logout(&self, access: &str) -> u16 {
        let r = self
            .client
            .post(self.url("/auth/logout"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    pub async fn get_auth(&self, path: &str, access: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    /// POST with no body and `access` as Bearer (ack, renew): the response as it came.
    pub async fn post_bearer(&self, path: &str, access: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    pub async fn login_as(&self, user: &str) -> Value {
        let (st, body) = self
            .post_json(
                "/auth/login",
                json!({"username": user, "password": PASSWORD, "device_id": "test"}),
            )
            .await;
        assert_eq!(st, 200, "login failed: {body}");
        body
    }

    pub async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.post_json("/auth/refresh", json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn ticket(&self, refresh_token: &str) -> String {
        let (st, body) = self
            .post_json("/auth/ticket", json!({"refresh_token": refresh_token}))
            .await;
        assert_eq!(st, 200, "ticket failed: {body}");
        body["ticket"].as_str().unwrap().to_string()
    }

    pub async fn sse(&self, ticket: &str, last_event_id: Option<&str>) -> Result<Sse, u16> {
        Sse::open(
            &self.client,
            &self.url(&format!("/events?ticket={ticket}")),
            last_event_id,
        )
        .await
    }

    pub async fn ws(&self, ticket: &str) -> Ws {
        Ws::open(self.port, ticket, None).await.expect("ws upgrade")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // I7 for every test: the server never logged a token, ticket or password it handed out.
        if !std::thread::panicking() {
            let log = self.logs();
            let secrets = self.secrets.lock().unwrap();
            assert_no_secrets(&log, &secrets);
        }
    }
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let st = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends `n` refreshes of one token at once, spread round-robin over `nodes`; asserts each
/// got 200 and returns the distinct successor refresh tokens.
pub async fn concurrent_refreshes(
    nodes: &[&TestApp],
    refresh_token: &str,
    n: usize,
) -> std::collections::HashSet<String> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let node = nodes[i % nodes.len()];
            let req = node
                .client
                .post(node.url("/auth/refresh"))
                .json(&json!({"refresh_token": refresh_token}));
            tokio::spawn(async move { status_json(req.send().await.unwrap()).await })
        })
        .collect();
    let mut successors = std::collections::HashSet::new();
    for t in tasks {
        let (st, body) = t.await.unwrap();
        assert_eq!(st, 200, "{body}");
        successors.insert(body["refresh_token"].as_str().unwrap().to_string());
    }
    successors
}

/// Decodes a JWT's claims without checking anything.
pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// An open SSE stream, parsed by a background task.
pub struct Sse {
    rx: mpsc::UnboundedReceiver<Option<SseEvent>>,
    pub closed: bool,
}

impl Sse {
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Result<Sse, u16> {
        let mut req = client.get(url).timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut ev = SseEvent {
                        event: String::new(),
                        id: None,
                        data: Value::Null,
                    };
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            ev.event = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("id:") {
                            ev.id = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim());
                        }
                    }
                    if !ev.event.is_empty() {
                        ev.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                        if tx.send(Some(ev)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(None);
        });
        Ok(Sse { rx, closed: false })
    }

    /// Next event within `wait`; `None` on timeout or end of stream (then `closed` is set).
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(Some(ev))) => Some(ev),
            Ok(_) => {
                self.closed = true;
                None
            }
            Err(_) => None,
        }
    }

    /// Waits for an event of type `kind`, skipping others.
    pub async fn expect(&mut self, kind: &str, wait: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(ev) if ev.event == kind => return ev,
                Some(_) => continue,
                None => panic!(
                    "no SSE `{kind}` event within {wait:?} (closed: {})",
                    self.closed
                ),
            }
        }
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An open WebSocket.
pub struct Ws {
    pub stream: WsStream,
    /// Close code received, if the server closed.
    pub close_code: Option<u16>,
}

impl Ws {
    /// Connects; `Err(status)` when the upgrade is refused.
    pub async fn open(port: u16, ticket: &str, origin: Option<&str>) -> Result<Ws, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://127.0.0.1:{port}/ws?ticket={ticket}")
            .into_client_request()
            .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(Ws {
                stream,
                close_code: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("ws connect: {e}"),
        }
    }

    /// Next JSON text frame within `wait`; `None` on timeout or close.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    pub async fn expect(&mut self, kind: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(v) if v["type"] == kind => return v,
                Some(_) => continue,
                None => panic!(
                    "no WS `{kind}` frame within {wait:?} (close code {:?})",
                    self.close_code
                ),
            }
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                _ => return self.close_code,
            }
        }
        None
    }
}

/// Asserts that none of `secrets` appears in `log`.
pub fn assert_no_secrets(log: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !log.contains(s.as_str()),
            "a token appears in the server log"
        );
    }
    let _ = std::io::stdout().flush();
}

/// A real `redis-server` on a free loopback port, with an append-only file so a stop and
/// start loses nothing.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.run().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn run(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for cluster tests (./scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    /// SIGTERM (Redis flushes its append-only file) and wait.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

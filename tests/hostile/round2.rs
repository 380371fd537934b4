//! Hostile clients, round 2 (issue 19): request shapes that grew memory or held sockets
//! without bound. One test (or two) per item of the issue, each against the real binary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::{Redis, TestApp, PASSWORD};

const S: Duration = Duration::from_secs(1);

/// `VmRSS` of the server in KiB.
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Samples the server's RSS every 50 ms until `stop`; returns the peak in KiB.
fn rss_sampler(
    pid: u32,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u64>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        let mut peak = rss_kib(pid);
        loop {
            peak = peak.max(rss_kib(pid));
            tokio::select! {
                _ = &mut rx => return peak.max(rss_kib(pid)),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    (tx, h)
}

/// Reads until EOF or error within `wait`: `Some(bytes read)` when the server closed.
async fn read_to_close(sock: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(end, sock.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A ticket for a fresh session of `user`.
async fn ticket(app: &TestApp, user: &str) -> String {
    let login = app.login_as(user).await;
    app.ticket(login["refresh_token"].as_str().unwrap()).await
}

/// A WebSocket handshake on a raw socket (so the test controls every frame and never reads).
async fn raw_ws(app: &TestApp, ticket: &str) -> TcpStream {
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let req = format!(
        "GET /ws?ticket={ticket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        app.port
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(sock.read(&mut b).await.unwrap(), 1, "handshake cut short");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    sock
}

/// One masked client frame.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![
        opcode | if fin { 0x80 } else { 0 },
        0x80 | payload.len() as u8,
    ];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Writes `chunk` again and again for at most `wait`; true when a write failed (closed).
async fn flood_until_closed(sock: &mut TcpStream, chunk: &[u8], wait: Duration) -> bool {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        match tokio::time::timeout_at(end, sock.write_all(chunk)).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(())) => {}
        }
    }
    false
}

/// The close code in the server's (unmasked) frames, if a close frame is there.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut i = 0;
    while i + 2 <= bytes.len() {
        let (op, len) = (bytes[i] & 0x0f, (bytes[i + 1] & 0x7f) as usize);
        let (start, len) = match len {
            126 if i + 4 <= bytes.len() => (
                i + 4,
                u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize,
            ),
            126 | 127 => return None,
            n => (i + 2, n),
        };
        if op == 8 && len >= 2 && start + 2 <= bytes.len() {
            return Some(u16::from_be_bytes([bytes[start], bytes[start + 1]]));
        }
        i = start + len;
    }
    None
}

/// Item 1: protocol pings sent as fast as the socket takes them, by clients that never read.
/// Every pong used to be queued without bound (~95 MiB/s per connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_ping_flood_that_never_reads_is_closed_and_memory_stays_bounded() {
    let app = TestApp::spawn(&["--heartbeat", "20s"]).await;
    let pid = app.pid();
    let mut socks = Vec::new();
    for _ in 0..2 {
        let t = ticket(&app, "bob").await;
        socks.push(raw_ws(&app, &t).await);
    }
    let base = rss_kib(pid);
    let (stop, peak) = rss_sampler(pid);
    let ping = frame(0x9, true, &[b'p'; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 2000)
        .collect();
    let floods = socks.into_iter().map(|mut s| {
        let chunk = chunk.clone();
        tokio::spawn(async move { flood_until_closed(&mut s, &chunk, 5 * S).await })
    });
    let closed = futures::future::join_all(floods).await;
    let _ = stop.send(());
    let peak = peak.await.unwrap();
    eprintln!("ping flood: RSS {base} KiB → peak {peak} KiB");
    assert!(
        peak < base + 64 * 1024,
        "RSS grew from {base} KiB to {peak} KiB during a ping flood"
    );
    for c in closed {
        assert!(c.unwrap(), "a ping flood is closed (frame rate), not held");
    }
}

/// Item 1, the frame itself: a burst of JSON pings over `--ws-frame-rate` is closed 1008.
#[tokio::test]
async fn ws_frames_over_the_rate_are_closed_1008() {
    let app = TestApp::spawn(&["--heartbeat", "20s", "--ws-frame-rate", "5"]).await;
    let t = ticket(&app, "bob").await;
    let mut sock = raw_ws(&app, &t).await;
    let ping = frame(0x1, true, br#"{"type":"ping"}"#);
    // 5/s with a burst of 25: the 26th frame at once is over.
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 40).collect();
    sock.write_all(&burst).await.unwrap();
    let got = read_to_close(&mut sock, 5 * S).await.expect("closed");
    assert_eq!(close_code(&got), Some(1008));
}

/// Item 2: bodies dribbled a byte at a time (fixed length and chunked), or cut short, are
/// answered 408 at `--body-timeout` and their sockets released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbled_and_stalled_request_bodies_end_at_the_body_timeout() {
    let app = TestApp::spawn(&["--body-timeout", "2s", "--header-timeout", "5s"]).await;
    let pid = app.pid();
    let before = fds(pid);
    let heads = [
        "POST /auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 16000\r\n\r\n{",
        "POST /auth/refresh HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n",
        "POST /auth/ticket HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    ];
    let start = Instant::now();
    let mut conns = Vec::new();
    for i in 0..60 {
        let head = heads[i % heads.len()].to_string();
        let chunked = head.contains("chunked");
        let port = app.port;
        conns.push(tokio::spawn(async move {
            let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            sock.write_all(head.as_bytes()).await.unwrap();
            // Half dribble a byte every 500 ms; half send nothing more.
            let dribble = i % 2 == 0;
            let end = Instant::now() + 6 * S;
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while Instant::now() < end {
                let wait = tokio::time::sleep(S / 2);
                tokio::select! {
                    r = sock.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Some(got),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    },
                    () = wait => if dribble {
                        let b: &[u8] = if chunked { b"1\r\n \r\n" } else { b" " };
                        if sock.write_all(b).await.is_err() { return Some(got) }
                    },
                }
            }
            None
        }));
    }
    for c in conns {
        let got = c
            .await
            .unwrap()
            .expect("connection closed within the body timeout");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    eprintln!("60 dribbled bodies answered by {:?}", start.elapsed());
    let t = Instant::now();
    while fds(pid) > before + 2 {
        assert!(t.elapsed() < 3 * S, "server still holds {} fds", fds(pid));
        tokio::time::sleep(S / 10).await;
    }
    // A declared 100 MB body is refused at once, not waited for.
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    sock.write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(S, sock.read_exact(&mut buf))
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 413");
}

/// Item 2: `--max-connections`: one over is answered 503 at accept and counted.
#[tokio::test]
async fn connections_over_the_cap_are_refused_at_accept() {
    let app = TestApp::spawn(&["--max-connections", "20", "--header-timeout", "30s"]).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        s.write_all(b"GET").await.unwrap(); // a head that never ends
        held.push(s);
    }
    tokio::time::sleep(S / 4).await;
    let mut over = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let got = read_to_close(&mut over, 2 * S)
        .await
        .expect("closed at once");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(text.contains("retry-after: 1") && text.contains("temporarily_unavailable"));
    drop(held);
    // Places come back as the held sockets close.
    let t = Instant::now();
    let metrics = loop {
        if let Ok(r) = app.client.get(app.url("/metrics")).send().await {
            if r.status() == 200 {
                break r.text().await.unwrap();
            }
        }
        assert!(
            t.elapsed() < 5 * S,
            "no place after the held sockets closed"
        );
        tokio::time::sleep(S / 10).await;
    };
    assert!(
        metrics.contains("tokenpush_connections_refused_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tokenpush_connections_open"), "{metrics}");
}

/// Item 3: request heads on the hyper path are capped at 16 KiB (431), so unfinished huge
/// heads cannot hold hundreds of KiB each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_heads_get_431_and_cost_little() {
    let app = TestApp::spawn(&["--header-timeout", "5s"]).await;
    let pid = app.pid();
    let ask = |extra: usize| async move {
        let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
            "a".repeat(extra)
        );
        let _ = s.write_all(head.as_bytes()).await;
        let got = read_to_close(&mut s, 5 * S).await.unwrap_or_default();
        String::from_utf8_lossy(&got)
            .chars()
            .take(12)
            .collect::<String>()
    };
    assert_eq!(ask(12 * 1024).await, "HTTP/1.1 200");
    assert_eq!(ask(390 * 1024).await, "HTTP/1.1 431");
    // 300 unterminated 390 KiB heads at once.
    let base = rss_kib(pid);
    let (stop, peak) = rss_sampler(pid);
    let big = Arc::new(vec![b'a'; 390 * 1024]);
    let mut socks = Vec::new();
    for _ in 0..300 {
        let big = big.clone();
        let port = app.port;
        socks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nx-big: ").await;
            let _ = tokio::time::timeout(2 * S, s.write_all(&big)).await;
            s
        }));
    }
    let socks = futures::future::join_all(socks).await;
    tokio::time::sleep(S / 2).await;
    let _ = stop.send(());
    let peak = peak.await.unwrap();
    drop(socks);
    eprintln!("300 huge heads: RSS {base} KiB → peak {peak} KiB");
    assert!(peak < base + 48 * 1024, "RSS {base} → {peak} KiB");
}

/// A login hook for item 4: `big` answers a 1 MiB name, `roles` 32 roles of 1 KiB,
/// `stream` 128 MiB of body, `slow*` a 401 after 3 s. Counts calls in flight.
async fn hostile_hook() -> (String, Arc<AtomicUsize>) {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (now, most) = (in_flight.clone(), max.clone());
    let handler = move |axum::Json(q): axum::Json<Value>| {
        let (now, most) = (now.clone(), most.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            let user = q["username"].as_str().unwrap_or("").to_string();
            let resp = match user.as_str() {
                "big" => {
                    axum::Json(json!({"sub": "big", "name": "n".repeat(1 << 20)})).into_response()
                }
                "roles" => axum::Json(json!({"sub": "roles", "roles": vec!["r".repeat(1024); 32]}))
                    .into_response(),
                "stream" => {
                    let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
                    let body = futures::stream::iter(
                        std::iter::once(Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
                            b"{\"sub\":\"s\",\"name\":\"",
                        )))
                        .chain(std::iter::repeat_n(chunk, 128).map(Ok)),
                    );
                    (StatusCode::OK, Body::from_stream(body)).into_response()
                }
                u if u.starts_with("slow") => {
                    tokio::time::sleep(3 * S).await;
                    StatusCode::UNAUTHORIZED.into_response()
                }
                _ => StatusCode::UNAUTHORIZED.into_response(),
            };
            now.fetch_sub(1, Ordering::SeqCst);
            resp
        }
    };
    let app = axum::Router::new().route("/check", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, max)
}

/// Item 4: hook answers are capped (body, name, roles) and hook calls are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_hook_answers_and_calls_are_bounded() {
    let (url, max_in_flight) = hostile_hook().await;
    let app = TestApp::spawn(&["--login-hook", &url, "--login-failures", "100000"]).await;
    let pid = app.pid();
    let login = |user: &'static str| {
        app.post_json("/auth/login", json!({"username": user, "password": "pw"}))
    };
    for user in ["big", "roles"] {
        let (st, body) = login(user).await;
        assert_eq!(
            st, 503,
            "{user}: oversized claims are never a login: {body}"
        );
    }
    let base = rss_kib(pid);
    let (stop, peak) = rss_sampler(pid);
    let (st, _) = login("stream").await;
    let _ = stop.send(());
    let peak = peak.await.unwrap();
    assert_eq!(st, 503);
    eprintln!("128 MiB hook answer: RSS {base} KiB → peak {peak} KiB");
    // The login's own (dummy) argon2 check maps 19 MiB while it runs.
    assert!(
        peak < base + 48 * 1024,
        "RSS {base} → {peak} KiB reading a hook answer"
    );

    // 150 logins at a hook that takes 3 s: at most 32 calls at once; the rest wait or get
    // 503 with Retry-After.
    let mut all = Vec::new();
    for i in 0..150 {
        let (client, url) = (app.client.clone(), app.url("/auth/login"));
        all.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"username": format!("slow{i}"), "password": "pw"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }));
    }
    for r in futures::future::join_all(all).await {
        let (st, retry) = r.unwrap();
        assert!(st == 401 || (st == 503 && retry), "status {st}");
    }
    let most = max_in_flight.load(Ordering::SeqCst);
    eprintln!("hook calls in flight at most: {most}");
    assert!(most <= 32, "{most} hook calls were in flight at once");
}

/// Item 5: a burst of correct logins must not lock the account, nor be answered 429: attempts
/// still in flight are not failures. Each answer is 200 or 503 with `Retry-After: 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_correct_logins_does_not_lock_the_account() {
    correct_burst(&TestApp::spawn(&[]).await).await;
}

/// Item 5 on a shared store, whose counters live in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_correct_logins_does_not_lock_the_account_on_redis() {
    let redis = Redis::start().await;
    let url = redis.url();
    let app = TestApp::spawn(&["--store", &url, "--issuer", "http://tokenpush.test"]).await;
    correct_burst(&app).await;
}

async fn correct_burst(app: &TestApp) {
    let mut all = Vec::new();
    for _ in 0..200 {
        let (client, url) = (app.client.clone(), app.url("/auth/login"));
        all.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"username": "bob", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (r.status().as_u16(), retry)
        }));
    }
    let answers: Vec<(u16, Option<String>)> = futures::future::join_all(all)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    eprintln!("200 correct logins at once: {ok} x 200, {busy} x 503");
    for (st, retry) in &answers {
        match st {
            200 => {}
            503 => assert_eq!(retry.as_deref(), Some("1"), "503 needs a short Retry-After"),
            _ => panic!("a correct login in a burst got {st} (Retry-After {retry:?})"),
        }
    }
    assert!(ok > 0, "{answers:?}");
    // The burst over, the right password works at once, again and again.
    for _ in 0..12 {
        let (st, body) = app
            .post_json(
                "/auth/login",
                json!({"username": "bob", "password": PASSWORD}),
            )
            .await;
        assert_eq!(st, 200, "after a burst of correct logins: {body}");
    }
}

/// Item 6: `config check` masks a secret in the hook URL's query.
#[test]
fn config_check_masks_query_values_and_shows_the_new_limits() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenpush"))
        .args([
            "--login-hook",
            "http://127.0.0.1:9/check?token=s3cr3t-value&v=2",
            "config",
            "check",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("token=***"), "{text}");
    for key in ["body-timeout", "max-connections", "ws-frame-rate"] {
        assert!(text.contains(&format!("{key} = ")), "{key}: {text}");
    }
}

/// Item 6: an allowed origin written with a trailing slash works for WebSockets too.
#[tokio::test]
async fn an_allowed_origin_with_a_trailing_slash_opens_a_websocket() {
    let app = TestApp::spawn(&["--allowed-origins", "https://b.example/"]).await;
    let t = ticket(&app, "bob").await;
    let ws = crate::common::Ws::open(app.port, &t, Some("https://b.example")).await;
    assert!(ws.is_ok(), "refused with {:?}", ws.err());
}

/// Item 6: a raw-bytes service key file is refused at startup, naming the format.
#[test]
fn a_binary_service_key_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("service.key");
    std::fs::write(
        &key,
        [
            0x00, 0xff, 0x10, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xfe, 0xc3, 0x28,
        ],
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenpush"))
        .args(["--listen", "127.0.0.1:0", "--store", "memory"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--service-key-file")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("a server with a binary service key started");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("printable ASCII"), "{err}");
}

/// Item 6: empty continuation fragments (which never make a message) count: a flood of
/// them is closed 1008 at once, not left to spin a core until the silence check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_fragments_is_closed_early() {
    let app = TestApp::spawn(&["--heartbeat", "20s"]).await;
    let t = ticket(&app, "bob").await;
    let mut sock = raw_ws(&app, &t).await;
    sock.write_all(&frame(0x1, false, b"")).await.unwrap();
    let cont = frame(0x0, false, b"");
    let chunk: Vec<u8> = cont
        .iter()
        .copied()
        .cycle()
        .take(cont.len() * 20_000)
        .collect();
    let start = Instant::now();
    // 120 KB of fragments, then read what the server says.
    sock.write_all(&chunk).await.unwrap();
    let got = read_to_close(&mut sock, 5 * S).await.expect("closed early");
    eprintln!("fragment flood closed after {:?}", start.elapsed());
    if let Some(code) = close_code(&got) {
        assert_eq!(code, 1008);
    }
}

/// Item 7: one deadline per connection head. `GET /event` dribbled most of the header
/// timeout, then a byte that makes it not `/events`, used to get a second full timeout.
#[tokio::test]
async fn a_head_that_turns_out_not_to_be_events_keeps_its_deadline() {
    let app = TestApp::spawn(&["--header-timeout", "2s"]).await;
    let start = Instant::now();
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    for b in b"GET /event" {
        sock.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    sock.write_all(b"x").await.unwrap();
    assert!(
        read_to_close(&mut sock, 3 * S).await.is_some(),
        "still open 3 s after the last byte"
    );
    let took = start.elapsed();
    eprintln!("closed {took:?} after connect (header timeout 2 s)");
    assert!(took < 2 * S + S / 2, "closed only after {took:?}");
}

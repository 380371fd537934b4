//! Server lifecycle (issue 14): graceful shutdown reaches every channel on both HTTP paths,
//! however long the server has been up.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const S: Duration = Duration::from_secs(1);
/// Channels per transport.
const CHANNELS: usize = 200;
/// Channels per session: well under any per-session ticket or channel limit.
const PER_SESSION: usize = 10;

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_string()
}

/// A direct-path SSE channel (a fresh connection whose first bytes are `GET /events?`):
/// counts `ready`, then whether `reconnect` arrives before the stream ends.
async fn direct_sse(port: u16, ticket: String, ready: Arc<AtomicUsize>, got: Arc<AtomicUsize>) {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let get = format!("GET /events?ticket={ticket} HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(get.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut counted_ready = false;
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.read(&mut buf).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if !counted_ready && text.contains("event: ready") {
            counted_ready = true;
            ready.fetch_add(1, Ordering::SeqCst);
        }
        if text.contains("event: reconnect") {
            got.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// A WebSocket channel: counts `ready`, then a `reconnect` frame followed by close 1012.
async fn ws(port: u16, ticket: String, ready: Arc<AtomicUsize>, got: Arc<AtomicUsize>) {
    let mut ws = Ws::open(port, &ticket, None).await.expect("ws upgrade");
    let mut reconnect = false;
    while let Some(Ok(msg)) = ws.stream.next().await {
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("ready") => {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("reconnect") => reconnect = true,
                    _ => {}
                }
            }
            Message::Close(frame) => {
                if reconnect && frame.map(|f| u16::from(f.code)) == Some(1012) {
                    got.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_after_a_minute_reaches_every_direct_sse_and_ws_channel() {
    let started = Instant::now();
    let mut app = TestApp::spawn(&[
        "--max-channels-per-session",
        "100",
        "--max-channels-per-user",
        "1000",
        // Renewals keep flowing during the hold, as in production.
        "--access-ttl",
        "20s",
        "--renew-lead",
        "5s",
    ])
    .await;
    let (ready, got) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut readers = Vec::new();
    for i in 0..(2 * CHANNELS / PER_SESSION) {
        let login = app.login_as(["bob", "carol"][i % 2]).await;
        let rt = s(&login, "refresh_token");
        for _ in 0..PER_SESSION {
            let ticket = app.ticket(&rt).await;
            let (r, g) = (ready.clone(), got.clone());
            readers.push(if i % 2 == 0 {
                tokio::spawn(direct_sse(app.port, ticket, r, g))
            } else {
                tokio::spawn(ws(app.port, ticket, r, g))
            });
        }
    }
    let all = 2 * CHANNELS;
    let deadline = Instant::now() + 30 * S;
    while ready.load(Ordering::SeqCst) < all && Instant::now() < deadline {
        tokio::time::sleep(S / 10).await;
    }
    assert_eq!(ready.load(Ordering::SeqCst), all, "every channel opened");
    // Well past any drain window that might have been measured from startup.
    tokio::time::sleep_until(started + 60 * S).await;
    let stopping = Instant::now();
    app.stop().await; // SIGTERM, then wait for the process to exit
    assert!(
        stopping.elapsed() < 10 * S,
        "the drain is bounded: {:?}",
        stopping.elapsed()
    );
    // What the server wrote before exiting is in the client sockets now; read it out.
    for r in readers {
        let _ = tokio::time::timeout(5 * S, r).await;
    }
    assert_eq!(
        got.load(Ordering::SeqCst),
        all,
        "every channel got `reconnect` (WS: then close 1012) before the server exited"
    );
}

/// An SSE channel on the direct path whose reader is slow at shutdown: the server's writes
/// to it are blocked on a full socket buffer when SIGTERM arrives. The drain must wait for
/// it (from the moment of shutdown, not of startup), so once the client reads on, it still
/// gets `reconnect` before the stream ends.
#[tokio::test]
async fn a_direct_sse_channel_blocked_on_a_slow_reader_still_gets_reconnect() {
    // A push every half second fills the socket buffers within seconds; heartbeats stay rare
    // so no write timeout closes the channel first.
    let mut app = TestApp::spawn(&[
        "--access-ttl",
        "1s",
        "--renew-lead",
        "500ms",
        "--heartbeat",
        "60s",
    ])
    .await;
    let login = app.login_as("bob").await;
    let ticket = app.ticket(&s(&login, "refresh_token")).await;
    // A small receive buffer, so a few dozen KiB of pushes block the server's writes.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let mut tcp = sock
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .unwrap();
    let get = format!("GET /events?ticket={ticket} HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(get.as_bytes()).await.unwrap();
    tokio::time::sleep(20 * S).await;
    let stop = tokio::spawn(async move {
        app.stop().await;
        app
    });
    tokio::time::sleep(S).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let end = Instant::now() + 10 * S;
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stop.await.unwrap());
    let text = String::from_utf8_lossy(&seen);
    let pushes = text.matches("event: tokens").count();
    assert!(pushes > 10, "the channel was busy ({pushes} pushes read)");
    assert!(
        text.contains("event: reconnect"),
        "the blocked channel got `reconnect` ({} bytes read)",
        seen.len()
    );
}

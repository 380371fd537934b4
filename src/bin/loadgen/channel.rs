//! One client channel (SSE or WebSocket) that records when each `tokens` event arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{connect, exp_of, find};

/// What a channel saw, in unix ms.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// (received at, the pushed access token's exp in s, reason)
    pub tokens: Vec<(i64, i64, String)>,
    /// When `ready` arrived: renewals due before it are not lag of this channel.
    pub opened_at: i64,
    pub dropped: bool,
}

/// Shared counters for progress.
#[derive(Default)]
pub struct Counters {
    pub ready: AtomicUsize,
    pub tokens: AtomicUsize,
    pub failed: AtomicUsize,
}

fn now_ms() -> i64 {
    tokenpush::clock::now_ms()
}

/// Opens the channel and reads until `stop` flips; returns what it saw.
pub async fn run(
    server: SocketAddr,
    i: usize,
    ws: bool,
    ticket: String,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let stream = match connect(server, i).await {
        Ok(s) => s,
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            seen.dropped = true;
            return seen;
        }
    };
    let on_event = |seen: &mut Seen, kind: &str, data: &Value| match kind {
        "ready" => {
            counters.ready.fetch_add(1, Ordering::Relaxed);
            seen.opened_at = now_ms();
        }
        "tokens" => {
            counters.tokens.fetch_add(1, Ordering::Relaxed);
            let at = data["access_token"].as_str().unwrap_or("");
            seen.tokens.push((
                now_ms(),
                exp_of(at),
                data["reason"].as_str().unwrap_or("").to_string(),
            ));
        }
        _ => {}
    };
    if ws {
        let cfg = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let url = format!("ws://{server}/ws?ticket={ticket}");
        let Ok((mut sock, _)) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(cfg)).await
        else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            seen.dropped = true;
            return seen;
        };
        loop {
            tokio::select! {
                msg = sock.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        let kind = v["type"].as_str().unwrap_or("").to_string();
                        on_event(&mut seen, &kind, &v);
                        if kind == "tokens" {
                            let ack = serde_json::json!({"type": "ack", "id": v["id"]}).to_string();
                            let _ = futures::SinkExt::send(&mut sock, Message::Text(ack.into())).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => { seen.dropped = true; break; }
                },
                _ = stop.changed() => break,
            }
        }
    } else {
        let mut stream = stream;
        let req = format!("GET /events?ticket={ticket} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
        if stream.write_all(req.as_bytes()).await.is_err() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            seen.dropped = true;
            return seen;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        let mut head_done = false;
        loop {
            let mut chunk = [0u8; 2048];
            let n = tokio::select! {
                r = stream.read(&mut chunk) => r.unwrap_or(0),
                _ = stop.changed() => break,
            };
            if n == 0 {
                seen.dropped = true;
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if !head_done {
                let Some(p) = find(&buf, b"\r\n\r\n") else {
                    continue;
                };
                if !buf.starts_with(b"HTTP/1.1 200") {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    seen.dropped = true;
                    return seen;
                }
                buf.drain(..p + 4);
                head_done = true;
            }
            // Chunked framing: "<hex>\r\n<data>\r\n"; events are small, so parse whole chunks.
            while let Some(line_end) = find(&buf, b"\r\n") {
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16)
                        .unwrap_or(0);
                if buf.len() < line_end + 2 + size + 2 {
                    break;
                }
                let text =
                    String::from_utf8_lossy(&buf[line_end + 2..line_end + 2 + size]).to_string();
                buf.drain(..line_end + 2 + size + 2);
                let mut kind = "";
                for line in text.lines() {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k;
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        let v: Value = serde_json::from_str(d).unwrap_or(Value::Null);
                        on_event(&mut seen, kind, &v);
                    }
                }
                if size == 0 {
                    seen.dropped = true;
                    return seen;
                }
            }
        }
    }
    seen
}

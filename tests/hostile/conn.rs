//! Hostile clients: stalled, half-sent and dead connections (header timeout, keep-alive, ping and write timeouts).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::TestApp;

const S: Duration = Duration::from_secs(1);
/// The `--header-timeout` these tests run with.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Open file descriptors of the server process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU time (user + system) the server process used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a system setting.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64
}

/// Waits until the server's fd count is back to `at_most`; returns how long that took.
async fn fds_back_to(pid: u32, at_most: usize, within: Duration) -> Duration {
    let start = Instant::now();
    while fds(pid) > at_most {
        assert!(
            start.elapsed() < within,
            "server still holds {} fds (want ≤ {at_most}) after {within:?}",
            fds(pid)
        );
        tokio::time::sleep(S / 10).await;
    }
    start.elapsed()
}

/// Whether the server closed the connection within `wait` (EOF or reset on read).
async fn closed_within(sock: &mut TcpStream, wait: Duration) -> bool {
    let end = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(end, sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (e.g. 408) before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_half_sent_request_heads_are_released_within_the_header_timeout() {
    let app = TestApp::spawn(&["--header-timeout", "2s"]).await;
    let pid = app.pid();
    let before = fds(pid);
    const PREFIX: &[u8] = b"GET /events?";
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        // Every proper prefix of `GET /events?`, from one byte up.
        sock.write_all(&PREFIX[..1 + i % (PREFIX.len() - 1)])
            .await
            .unwrap();
        if i % 2 == 0 {
            stalled.push(sock); // sends nothing more, stays open
        } // else: closed right after the prefix
    }
    let sent = Instant::now();
    // While they stall, the server waits without polling: CPU stays idle.
    tokio::time::sleep(S / 4).await;
    let cpu = cpu_ticks(pid);
    tokio::time::sleep(S).await;
    let busy = cpu_ticks(pid) - cpu;
    assert!(
        busy * 10 < ticks_per_sec(),
        "server used {busy} ticks of CPU in 1 s holding stalled connections"
    );
    let took = fds_back_to(pid, before + 5, HEADER_TIMEOUT + 5 * S).await;
    eprintln!(
        "stalled/half-sent connections released {:?} after the last was sent",
        sent.elapsed().min(took + S)
    );
    for mut sock in stalled {
        assert!(closed_within(&mut sock, S).await, "stalled socket closed");
    }
    // Afterwards: idle.
    let cpu = cpu_ticks(pid);
    tokio::time::sleep(2 * S).await;
    let busy = cpu_ticks(pid) - cpu;
    assert!(
        busy * 10 < ticks_per_sec(),
        "server used {busy} ticks of CPU in 2 s idle"
    );
}

#[tokio::test]
async fn a_login_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout() {
    let app = TestApp::spawn(&["--header-timeout", "2s"]).await;
    let head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let start = Instant::now();
    let mut closed = false;
    for b in head.iter() {
        if sock.write_all(&[*b]).await.is_err() || closed_within(&mut sock, S).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a head trickled a byte a second was never cut off");
    assert!(
        start.elapsed() < HEADER_TIMEOUT + 3 * S,
        "closed after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed() {
    let app = TestApp::spawn(&["--header-timeout", "2s"]).await;
    // Connects and never sends a byte.
    let mut silent = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    // One complete request, then an idle keep-alive connection.
    let mut idle = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut silent, HEADER_TIMEOUT + 2 * S).await);
    assert!(closed_within(&mut idle, HEADER_TIMEOUT + 2 * S).await);
}

/// Opens a WebSocket with a raw socket that will never answer a ping (tungstenite would
/// answer them itself). Returns the socket after the 101.
async fn raw_ws(port: u16, ticket: &str) -> TcpStream {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "GET /ws?ticket={ticket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        sock.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    sock
}

/// Reads server frames (unmasked, short) until a close frame; returns its code and when it came.
async fn close_code(sock: &mut TcpStream, wait: Duration) -> Option<(u16, Instant)> {
    let end = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Parse what we have: opcode in the low nibble of byte 0, 7-bit or 16-bit length.
        let mut at = 0;
        while buf.len() >= at + 2 {
            let (op, len7) = (buf[at] & 0x0f, (buf[at + 1] & 0x7f) as usize);
            let (len, hdr) = match len7 {
                126 if buf.len() >= at + 4 => {
                    (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                }
                126 => break,
                n => (n, 2),
            };
            if buf.len() < at + hdr + len {
                break;
            }
            if op == 0x8 && len >= 2 {
                let p = at + hdr;
                return Some((u16::from_be_bytes([buf[p], buf[p + 1]]), Instant::now()));
            }
            at += hdr + len;
        }
        match tokio::time::timeout_at(end, sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_ws_client_that_ignores_pings_is_closed_and_its_slot_freed() {
    let app = TestApp::spawn(&["--heartbeat", "1s", "--max-channels-per-session", "1"]).await;
    let login = app.login_as("bob").await;
    let rt = login["refresh_token"].as_str().unwrap().to_string();
    app.remember(&login);
    let opened = Instant::now();
    let mut ghost = raw_ws(app.port, &app.ticket(&rt).await).await;
    // While it holds the session's only slot, another channel is refused.
    let mut refused = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let req = format!(
        "GET /events?ticket={} HTTP/1.1\r\nHost: x\r\n\r\n",
        app.ticket(&rt).await
    );
    refused.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = refused.read(&mut buf).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "a second channel fits in a one-channel session"
    );
    // Never answers a ping: closed within three heartbeats, as "going away".
    let (code, at) = close_code(&mut ghost, 5 * S)
        .await
        .expect("the server closed the silent WebSocket");
    assert_eq!(code, 1001);
    assert!(
        at - opened < 3 * S + S / 2,
        "closed after {:?}",
        at - opened
    );
    // The slot is free at once: a new channel of the same session opens.
    let mut ws = crate::common::Ws::open(app.port, &app.ticket(&rt).await, None)
        .await
        .expect("the freed slot is reusable");
    ws.expect("ready", 2 * S).await;
    // A client that answers pings (tungstenite does) stays open past three heartbeats.
    assert_eq!(ws.closed(4 * S).await, None, "a live client was closed");
    ws.send_json(serde_json::json!({"type": "ping"})).await;
    ws.expect("pong", S).await;
}

/// Arbitrary bytes after a WebSocket upgrade (what tungstenite hands the handler) never take
/// the server down: each such connection ends within a few heartbeats, others keep working.
#[test]
fn arbitrary_bytes_on_an_upgraded_websocket_end_only_that_connection() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Runtime::new().unwrap();
    // One session takes a ticket per case (and more while shrinking): lift the ticket limit.
    let app = rt.block_on(TestApp::spawn(&[
        "--heartbeat",
        "1s",
        "--tickets-per-session",
        "100000",
    ]));
    let rt_token = rt.block_on(async {
        let login = app.login_as("bob").await;
        app.remember(&login);
        login["refresh_token"].as_str().unwrap().to_string()
    });
    let mut runner = TestRunner::new(Config::with_cases(12));
    // A masked client text frame with arbitrary payload, or arbitrary raw bytes.
    let input = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..300),
        proptest::collection::vec(any::<u8>(), 0..120).prop_map(|p| {
            let mut f = vec![0x81, 0x80 | p.len() as u8, 1, 2, 3, 4];
            f.extend(p.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
            f
        }),
    ];
    runner
        .run(&input, |bytes| {
            rt.block_on(async {
                let mut ws = raw_ws(app.port, &app.ticket(&rt_token).await).await;
                ws.write_all(&bytes).await.unwrap();
                // Ends (close frame or EOF) within three heartbeats, whatever was sent.
                let mut buf = [0u8; 4096];
                let end = Instant::now() + 4 * S;
                loop {
                    match tokio::time::timeout_at(end, ws.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(_)) => continue,
                        Err(_) => panic!("connection still open after {bytes:?}"),
                    }
                }
                assert!(app.get_text("/healthz").await.contains("ok"));
            });
            Ok(())
        })
        .unwrap();
}

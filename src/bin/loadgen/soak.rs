//! `loadgen soak`: every hostile request shape of issues 10 and 19 at once, from a few hundred
//! connections, while honest channels are renewed. Passes when no honest channel misses a
//! renewal or drops, server RSS stays under `--max-rss-mib`, and the server's fds are back to
//! their pre-attack count within the header timeout once the attackers stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::channel::Counters;
use crate::net::{connect, exp_of, Http};
use crate::{login_many, open_channels, summary, tickets, Server};

/// Source address numbers of attackers: apart from the honest clients' (0..).
const ATTACKER_SOURCES: usize = 200;
/// The server's `--header-timeout` and `--body-timeout` in this run.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the attackers did, for the report.
#[derive(Default)]
struct Tally {
    connections: AtomicUsize,
    closed_by_server: AtomicUsize,
    statuses: dashmap::DashMap<String, usize>,
}

impl Tally {
    fn status(&self, shape: &str, status: u16) {
        *self
            .statuses
            .entry(format!("{shape} {status}"))
            .or_default() += 1;
    }
}

/// A login hook for the attackers: `stream` answers an endless body, `big` a 1 MiB name,
/// anyone else a 401 after 2 s.
async fn hook() -> String {
    use axum::response::IntoResponse;
    let handler = |axum::Json(q): axum::Json<Value>| async move {
        match q["username"].as_str().unwrap_or("") {
            "stream" => {
                let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
                let body =
                    futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                let head = futures::stream::once(async {
                    Ok(axum::body::Bytes::from_static(
                        b"{\"sub\":\"s\",\"name\":\"",
                    ))
                });
                use futures::StreamExt;
                axum::body::Body::from_stream(head.chain(body)).into_response()
            }
            "big" => axum::Json(json!({"sub": "big", "name": "n".repeat(1 << 20)})).into_response(),
            _ => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                axum::http::StatusCode::UNAUTHORIZED.into_response()
            }
        }
    };
    let app = axum::Router::new().route("/check", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("hook");
    let url = format!("http://{}/check", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A masked client frame with a payload under 126 bytes.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![
        opcode | if fin { 0x80 } else { 0 },
        0x80 | payload.len() as u8,
    ];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A fresh session's ticket, over its own connection.
async fn ticket(addr: SocketAddr, src: usize) -> Option<String> {
    let mut http = Http::open(addr, src).await.ok()?;
    let body = json!({"username": "bench", "password": "bench", "device_id": "attacker"});
    let (st, t) = http
        .call("POST", "/auth/login", None, Some(&body))
        .await
        .ok()?;
    if st != 200 {
        return None;
    }
    let rt = json!({"refresh_token": t["refresh_token"]});
    let (st, t) = http
        .call("POST", "/auth/ticket", None, Some(&rt))
        .await
        .ok()?;
    (st == 200).then(|| t["ticket"].as_str().unwrap_or("").to_string())
}

/// A WebSocket upgrade on a raw socket.
async fn raw_ws(addr: SocketAddr, src: usize) -> Option<TcpStream> {
    let t = ticket(addr, src).await?;
    let mut s = connect(addr, src).await.ok()?;
    let req = format!(
        "GET /ws?ticket={t} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    head.starts_with(b"HTTP/1.1 101").then_some(s)
}

/// Writes `chunk` until the server closes or `stop`; never reads.
async fn flood(mut s: TcpStream, chunk: &[u8], stop: &AtomicBool) -> bool {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), s.write_all(chunk)).await
        {
            return true;
        }
    }
    false
}

/// Reads a status line (or a close) within `wait`.
async fn status(s: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) if n >= 12 => std::str::from_utf8(&buf[9..12]).ok()?.parse().ok(),
        _ => None,
    }
}

/// One attacker: repeats its shape until `stop`.
async fn attacker(
    addr: SocketAddr,
    shape: usize,
    k: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let src = k % ATTACKER_SOURCES + 50;
    let pings = frame(0x9, true, &[b'p'; 125]).repeat(512);
    let fragments = frame(0x0, false, b"").repeat(8192);
    let big = vec![b'a'; 390 * 1024];
    while !stop.load(Ordering::Relaxed) {
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let closed = match shape {
            // 1: protocol pings, never reading.
            0 => match raw_ws(addr, src).await {
                Some(s) => {
                    let closed = flood(s, &pings, &stop).await;
                    tally.status("ws ping flood closed", u16::from(closed));
                    closed
                }
                None => false,
            },
            // 6: empty continuation fragments.
            1 => match raw_ws(addr, src).await {
                Some(mut s) => {
                    let _ = s.write_all(&frame(0x1, false, b"")).await;
                    let closed = flood(s, &fragments, &stop).await;
                    tally.status("ws fragment flood closed", u16::from(closed));
                    closed
                }
                None => false,
            },
            // 2: a body dribbled a byte every 3 s.
            2 => {
                let Ok(mut s) = connect(addr, src).await else {
                    continue;
                };
                let _ = s
                    .write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 16000\r\n\r\n{")
                    .await;
                let mut got = None;
                while got.is_none() && !stop.load(Ordering::Relaxed) {
                    got = status(&mut s, Duration::from_secs(3)).await;
                    if s.write_all(b" ").await.is_err() {
                        break;
                    }
                }
                if let Some(st) = got {
                    tally.status("dribbled body", st);
                }
                got.is_some()
            }
            // 3: a 390 KiB head that never ends.
            3 => {
                let Ok(mut s) = connect(addr, src).await else {
                    continue;
                };
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nx-big: ").await;
                let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&big)).await;
                let st = status(&mut s, TIMEOUT + Duration::from_secs(2)).await;
                if let Some(st) = st {
                    tally.status("huge head", st);
                }
                st.is_some()
            }
            // 7 and issue 10: `GET /event` dribbled, then not `/events`; stalled prefixes.
            4 => {
                let Ok(mut s) = connect(addr, src).await else {
                    continue;
                };
                for b in b"GET /event" {
                    let _ = s.write_all(&[*b]).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let _ = s.write_all(b"x").await;
                let mut buf = [0u8; 256];
                matches!(
                    tokio::time::timeout(TIMEOUT + Duration::from_secs(2), s.read(&mut buf)).await,
                    Ok(Ok(_) | Err(_))
                )
            }
            // 4: login-hook abuse (endless body, huge name, slow hook), and 5: bursts of
            // correct logins for one user from one address.
            _ => {
                let user = ["stream", "big", "nobody", "bench"][k % 4];
                let Ok(mut http) = Http::open(addr, src).await else {
                    continue;
                };
                let body = json!({"username": user, "password": if user == "bench" { "bench" } else { "x" }});
                match http.call("POST", "/auth/login", None, Some(&body)).await {
                    Ok((st, _)) => tally.status(&format!("login {user}"), st),
                    Err(_) => tally.status(&format!("login {user}"), 0),
                }
                true
            }
        };
        if closed {
            tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the soak; true when every check held.
pub async fn soak(
    bin: &str,
    honest: usize,
    per_shape: usize,
    attack: Duration,
    max_rss_mib: u64,
) -> bool {
    let hook = hook().await;
    let ttl = Duration::from_secs(15);
    let lead_ms: i64 = 10_000;
    let server = Server::start(
        bin,
        &[
            "--access-ttl",
            "15s",
            "--renew-lead",
            "10s",
            "--heartbeat",
            "15s",
            "--login-hook",
            &hook,
        ],
    );
    let addr = server.addr;
    println!(
        "== soak: {honest} honest channels (half SSE, half WS) renewed every 5 s; 6 attack shapes × \
         {per_shape} connections for {attack:?}"
    );
    let sessions = login_many(addr, "bench", honest).await;
    let tks = tickets(addr, &sessions).await;
    let counters = Arc::new(Counters::default());
    let (handles, stop_honest, _) =
        open_channels(&[addr], tks, honest / 2, 256, counters.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (fds_before, rss_before, cpu_before) = (server.fds(), server.rss_kib(), server.cpu_secs());
    println!(
        "honest channels open: {} (fds {fds_before}, RSS {rss_before} KiB)",
        counters.ready.load(Ordering::Relaxed)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut attackers = Vec::new();
    for shape in 0..6 {
        for k in 0..per_shape {
            attackers.push(tokio::spawn(attacker(
                addr,
                shape,
                k,
                stop.clone(),
                tally.clone(),
            )));
        }
    }
    let (peak_rss, peak_fds) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    while started.elapsed() < attack {
        peak_rss.fetch_max(server.rss_kib(), Ordering::Relaxed);
        peak_fds.fetch_max(server.fds(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = server.cpu_secs() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    // Attackers end their current attempt (each bounded by the server's timeouts).
    for a in attackers {
        let _ = tokio::time::timeout(TIMEOUT + Duration::from_secs(5), a).await;
    }
    let mut back = None;
    while stopped.elapsed() < TIMEOUT + Duration::from_secs(8) {
        peak_rss.fetch_max(server.rss_kib(), Ordering::Relaxed);
        if server.fds() <= fds_before + 5 {
            back = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak_rss_mib = peak_rss.load(Ordering::Relaxed) / 1024;
    println!(
        "attack: {} connections, {} closed by the server; server CPU {:.1} s over {:.0} s ({:.0} % of a core)",
        tally.connections.load(Ordering::Relaxed),
        tally.closed_by_server.load(Ordering::Relaxed),
        cpu,
        attack.as_secs_f64(),
        100.0 * cpu / attack.as_secs_f64()
    );
    let mut answers: Vec<String> = tally
        .statuses
        .iter()
        .map(|e| format!("{} × {}", e.key(), e.value()))
        .collect();
    answers.sort();
    println!("answers: {}", answers.join(", "));
    println!(
        "server RSS: {rss_before} KiB before, peak {peak_rss_mib} MiB (bound {max_rss_mib} MiB); fds: {fds_before} before, peak {}, {}",
        peak_fds.load(Ordering::Relaxed),
        match back {
            Some(t) => format!("back to baseline {:.1} s after the attackers stopped", t.as_secs_f64()),
            None => format!("still {} after {:?}", server.fds(), stopped.elapsed()),
        }
    );
    // Keep the honest channels a renewal longer, so one falls after the attack too.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _ = stop_honest.send(true);
    let (mut lags, mut dropped, mut renewed) = (vec![], 0, 0);
    for (h, login) in handles.into_iter().zip(&sessions) {
        let seen = h.await.expect("channel task");
        dropped += usize::from(seen.dropped);
        renewed += usize::from(!seen.tokens.is_empty());
        let mut prev_exp = exp_of(login["access_token"].as_str().unwrap_or(""));
        for (at, exp, reason) in &seen.tokens {
            let deadline = prev_exp * 1000 - lead_ms;
            if reason == "renewal" && deadline >= seen.opened_at {
                lags.push((at - deadline) as f64);
            }
            prev_exp = *exp;
        }
    }
    let late = lags.iter().filter(|l| **l >= lead_ms as f64).count();
    let expected = honest
        * (started.elapsed().as_secs() as usize / (ttl.as_secs() as usize - 10)).saturating_sub(1);
    println!(
        "honest renewals: {} received (≥ {expected} expected), lag {}; channels renewed {renewed}/{honest}; after expiry: {late}; dropped: {dropped}",
        lags.len(),
        summary(lags.clone())
    );
    dropped == 0
        && late == 0
        && renewed == honest
        && lags.len() >= expected
        && peak_rss_mib < max_rss_mib
        && back.is_some()
}

//! Fresh `GET /events` connections served straight on the socket. hyper keeps an 8 KiB read
//! and an 8 KiB write buffer for the life of every HTTP/1.1 connection, which would make each
//! idle SSE channel cost ~18 KiB. A new connection whose first bytes are `GET /events` is
//! served here instead: the request head is parsed with `httparse`, then the same frames as
//! the axum handler are written as chunked HTTP/1.1. Every other connection (including
//! `/events` on a reused keep-alive connection) goes to axum unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::response::IntoResponse;
use axum::serve::{IncomingStream, Listener};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::events::{frames, EventsQuery, HEADERS};
use crate::error::ApiError;
use crate::hub::Kind;
use crate::service::Service;

/// How long a new connection may take to send its first bytes before it is handed to hyper.
const FIRST_BYTES: Duration = Duration::from_secs(10);
/// Largest request head accepted on the direct path.
const MAX_HEAD: usize = 8192;

/// The peer address of a connection, for `ConnectInfo`.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, SplitListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, SplitListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// What axum accepts from: every connection the direct path did not take.
pub struct SplitListener {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for SplitListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (it never does while the listener lives): stay idle.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Starts accepting on `listener`: fresh `/events` connections are served here, the rest
/// are passed to the returned listener for axum.
pub fn split(
    listener: TcpListener,
    svc: Arc<Service>,
    heartbeat: Duration,
) -> std::io::Result<SplitListener> {
    let local = listener.local_addr()?;
    // Bounded: if axum stops accepting, the accept loop waits instead of piling up sockets.
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of fds and the like: back off briefly, as axum's own loop does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, svc) = (tx.clone(), svc.clone());
            tokio::spawn(async move {
                if is_events(&stream).await {
                    serve(stream, svc, heartbeat).await;
                } else {
                    let _ = tx.send((stream, addr)).await;
                }
            });
        }
    });
    Ok(SplitListener { rx, local })
}

/// Peeks (without consuming) until the request line shows whether this is `GET /events`.
async fn is_events(stream: &TcpStream) -> bool {
    const WANT: &[&[u8]] = &[b"GET /events?", b"GET /events "];
    let mut buf = [0u8; 12];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if n == buf.len() {
            return WANT.iter().any(|w| buf == **w);
        }
        if !WANT.iter().any(|w| w.starts_with(&buf[..n])) {
            return false;
        }
        // A prefix so far: wait for more of the request line.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serve(mut stream: TcpStream, svc: Arc<Service>, heartbeat: Duration) {
    let _ = stream.set_nodelay(true);
    let Some((query, last_event_id)) = read_head(&mut stream).await else {
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let q: EventsQuery = serde_urlencoded::from_str(&query).unwrap_or(EventsQuery {
        ticket: String::new(),
        last_event_id: None,
    });
    let opened = match svc
        .open_channel(
            &q.ticket,
            last_event_id.as_deref().or(q.last_event_id.as_deref()),
            Kind::Sse,
        )
        .await
    {
        Ok(o) => o,
        Err(e) => return write_error(&mut stream, e).await,
    };
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (k, v) in HEADERS {
        head += &format!("{k}: {v}\r\n");
    }
    head += "transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut frames = std::pin::pin!(frames(svc, opened, heartbeat));
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            next = frames.next() => match next {
                Some(bytes) => {
                    if write_chunk(&mut stream, &bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                    let _ = stream.shutdown().await;
                    return;
                }
            },
            // The client never sends more on an SSE connection: a read means it went away.
            r = stream.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { return },
        }
    }
}

async fn write_chunk(stream: &mut TcpStream, data: &Bytes) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await
}

/// Reads the request head; returns the query string and any `Last-Event-ID` header.
async fn read_head(stream: &mut TcpStream) -> Option<(String, Option<String>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(FIRST_BYTES, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path?;
                let query = path
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .to_string();
                let last = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_string);
                return Some((query, last));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            _ => return None,
        }
    }
}

/// Writes the same error response axum would (status, JSON body, headers).
async fn write_error(stream: &mut TcpStream, e: ApiError) {
    let (parts, body) = e.into_response().into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (k, v) in &parts.headers {
        if let Ok(v) = v.to_str() {
            head += &format!("{k}: {v}\r\n");
        }
    }
    head += &format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

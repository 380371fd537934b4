//! Fresh `GET /events` connections served straight on the socket. hyper keeps an 8 KiB read
//! and an 8 KiB write buffer for the life of every HTTP/1.1 connection, which would make each
//! idle SSE channel cost ~18 KiB. A new connection whose first bytes are `GET /events` is
//! served here instead: the request head is parsed with `httparse`, then the same frames as
//! the axum handler are written as chunked HTTP/1.1. Every other connection (including
//! `/events` on a reused keep-alive connection) goes to hyper with the bytes read so far.
//! The server's connection task calls [`first_bytes`], [`read_head`] and
//! [`serve`] with one deadline for the whole head.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::events::{frames, EventsQuery, HEADERS};
use super::hardening;
use super::wire::Wire;
use crate::error::ApiError;
use crate::hub::Kind;
use crate::service::Service;

/// Largest request head accepted on the direct path.
pub const MAX_HEAD: usize = 8192;
/// The request-line starts served here.
const WANT: [&[u8]; 2] = [b"GET /events?", b"GET /events "];

/// The peer address of a connection, for `ConnectInfo`.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// How a fresh connection starts.
pub enum First {
    /// `GET /events`: served here; the bytes read so far.
    Events(Vec<u8>),
    /// Anything else: the bytes read so far, to put back in front for hyper.
    Other(Vec<u8>),
}

/// Reads (never more than the 12 bytes that decide) until the request line shows whether
/// this is `GET /events`. `None` when the client closes, fails or stalls past `deadline`.
/// Each read waits for new bytes, so a stalled client costs no CPU.
pub async fn first_bytes(stream: &mut TcpStream, deadline: Instant) -> Option<First> {
    let mut buf = [0u8; 12];
    let mut n = 0;
    loop {
        match timeout_at(deadline, stream.read(&mut buf[n..])).await {
            Ok(Ok(k)) if k > 0 => n += k,
            _ => return None,
        }
        if n == buf.len() && WANT.contains(&&buf[..]) {
            return Some(First::Events(buf.to_vec()));
        }
        if !WANT.iter().any(|w| w.starts_with(&buf[..n])) {
            return Some(First::Other(buf[..n].to_vec()));
        }
    }
}

/// What the direct path needs from a request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// The query string (after `?`), undecoded.
    pub query: String,
    /// A `Last-Event-ID` header, when present and UTF-8.
    pub last_event_id: Option<String>,
    /// An `Origin` header, when present and UTF-8 (for CORS).
    pub origin: Option<String>,
}

/// Why no head came.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Closed, failed or stalled past the deadline: nothing to answer.
    Gone,
    /// Not an HTTP/1.x request head, or larger than [`MAX_HEAD`]: answered 400.
    Malformed,
}

/// Parses a request head from `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.ok_or(HeadError::Malformed)?;
            let query = path.split_once('?').map_or("", |(_, q)| q).to_string();
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_string)
            };
            Ok(Some(Head {
                query,
                last_event_id: header("last-event-id"),
                origin: header("origin"),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        _ => Err(HeadError::Malformed),
    }
}

/// Reads the rest of the head after `read`, all of it by `deadline`.
pub async fn read_head(
    stream: &mut TcpStream,
    read: Vec<u8>,
    deadline: Instant,
) -> Result<Head, HeadError> {
    let mut buf = read;
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(head) = parse_head(&buf)? {
            return Ok(head);
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(HeadError::Gone),
        }
    }
}

/// Serves one SSE channel on a socket whose head was read: opens the channel with the
/// ticket, then writes its frames as chunks until it ends or the client goes away.
pub async fn serve(
    mut stream: TcpStream,
    head: Result<Head, HeadError>,
    svc: Arc<Service>,
    heartbeat: Duration,
    allowed_origins: &[String],
) {
    let _ = stream.set_nodelay(true);
    let head = match head {
        Ok(h) => h,
        Err(HeadError::Gone) => return,
        Err(HeadError::Malformed) => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        }
    };
    // Cross-origin apps listed in --allowed-origins read this response as they read the JSON
    // routes (tower's CorsLayer does not see this path).
    let cors = head
        .origin
        .as_deref()
        .and_then(|o| hardening::cors_origin(allowed_origins, o))
        .map_or(String::new(), |o| {
            format!("access-control-allow-origin: {o}\r\nvary: origin\r\n")
        });
    let (query, last_event_id) = (head.query, head.last_event_id);
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
        Err(e) => return write_error(&mut stream, e, &cors).await,
    };
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (k, v) in HEADERS {
        head += &format!("{k}: {v}\r\n");
    }
    head += &cors;
    head += "transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut frames = std::pin::pin!(frames(svc, opened, heartbeat, Wire::SseChunked));
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            next = frames.next() => match next {
                Some(bytes) => {
                    // A reader that stopped reading for two heartbeats is gone: close.
                    let write = tokio::time::timeout(2 * heartbeat, stream.write_all(&bytes));
                    if !matches!(write.await, Ok(Ok(()))) {
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

/// Writes the same error response axum would (status, JSON body, headers).
async fn write_error(stream: &mut TcpStream, e: ApiError, cors: &str) {
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
    head += cors;
    head += &format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: &[u8] = b"GET /events?ticket=abc HTTP/1.1\r\nHost: x\r\nLast-Event-ID: s:4\r\n\r\n";

    #[test]
    fn heads() {
        assert_eq!(
            parse_head(HEAD),
            Ok(Some(Head {
                query: "ticket=abc".into(),
                last_event_id: Some("s:4".into()),
                origin: None,
            }))
        );
        assert_eq!(parse_head(&HEAD[..20]), Ok(None));
        assert_eq!(
            parse_head(b"\x00\x01 garbage\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        let huge = [b"GET /events?".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
        assert_eq!(parse_head(&huge), Err(HeadError::Malformed));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes never panic: a head, "not yet", or malformed.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_head(&bytes);
            let with_prefix = [b"GET /events?".as_slice(), &bytes].concat();
            let _ = parse_head(&with_prefix);
        }

        /// Every proper prefix of a valid head is incomplete, never an error.
        #[test]
        fn prefixes_of_a_valid_head_wait_for_more(n in 0..HEAD.len()) {
            prop_assert_eq!(parse_head(&HEAD[..n]), Ok(None));
        }

        /// Arbitrary header values (any bytes httparse accepts) come back whole or not at all.
        #[test]
        fn last_event_id_is_utf8_or_absent(v in proptest::collection::vec(0x20u8..0x7f, 0..64)) {
            let head = [b"GET /events HTTP/1.1\r\nLast-Event-ID: ".as_slice(), &v, b"\r\n\r\n"].concat();
            if let Ok(Some(h)) = parse_head(&head) {
                prop_assert_eq!(h.last_event_id.map(String::into_bytes), Some(v.trim_ascii().to_vec()));
            }
        }
    }
}

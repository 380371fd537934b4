//! Per-connection limits that the connection layer and the handlers share: the request head
//! size on the hyper path, the WebSocket read budget (every byte a client sends after the
//! upgrade, so every frame, fragments and control frames included, costs from it), the
//! WebSocket frame rate, and the 503 written at accept when `--max-connections` is reached.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

/// Largest request head (request line and headers) on the hyper path: hyper answers 431
/// beyond it. (hyper's floor is 8 KiB; the direct `/events` path caps at 8 KiB.)
pub const MAX_HEAD: usize = 16 * 1024;

/// Bytes a WebSocket client may send at once after the upgrade, and per second after that.
/// The smallest client frame is 6 bytes (header and mask), so this also bounds the frame rate
/// of frames the handler never sees one by one (empty continuation fragments).
pub const WS_READ_BURST: f64 = 64.0 * 1024.0;
/// See [`WS_READ_BURST`].
pub const WS_READ_PER_SEC: f64 = 16.0 * 1024.0;
/// The IO error a WebSocket read gets once the client is over its read budget.
pub const READ_RATE_EXCEEDED: &str = "websocket read rate exceeded";

/// Bytes the server may have queued for one WebSocket client that does not read: pongs
/// beyond it coalesce (only the latest is answered), and a message that does not fit ends
/// the channel.
pub const WS_MAX_WRITE_BUFFER: usize = 64 * 1024;

/// The answer to a connection accepted while `--max-connections` are open.
pub const FULL_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncache-control: no-store\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 93\r\n\r\n\
{\"error\":\"temporarily_unavailable\",\"error_description\":\"too many connections; retry shortly\"}";

/// A token bucket: `burst` at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: f64, rate: f64) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            rate,
            last: Instant::now(),
        }
    }

    /// Takes `n`; false when the bucket cannot cover it (what was left stays spent, so a
    /// client over the limit stays over it).
    pub fn take(&mut self, n: f64) -> bool {
        self.take_at(n, Instant::now())
    }

    fn take_at(&mut self, n: f64, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        self.tokens -= n;
        self.tokens >= 0.0
    }
}

/// Set by the WebSocket handler once a connection is upgraded, read by the connection's IO:
/// from then on every byte read counts against [`WS_READ_BURST`] / [`WS_READ_PER_SEC`].
/// (Plain HTTP requests on the connection are bounded by the head and body limits instead.)
#[derive(Clone, Debug, Default)]
pub struct ReadMeter(Arc<AtomicBool>);

impl ReadMeter {
    /// Starts metering this connection's reads.
    pub fn arm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether reads are metered.
    pub fn armed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_response_length_is_right() {
        let text = std::str::from_utf8(FULL_RESPONSE).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(10.0, 5.0);
        let t0 = b.last;
        for _ in 0..10 {
            assert!(b.take_at(1.0, t0));
        }
        assert!(!b.take_at(1.0, t0));
        // 5 refilled a second later, one of them owed.
        let t1 = t0 + std::time::Duration::from_secs(1);
        for _ in 0..4 {
            assert!(b.take_at(1.0, t1));
        }
        assert!(!b.take_at(1.0, t1));
    }
}

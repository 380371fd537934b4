//! Connections: the accept loop and one task per connection. A fresh connection's first
//! bytes decide its path: `GET /events` is served straight on the socket
//! ([`crate::http::direct`]); everything else goes to hyper (HTTP/1.1 with upgrades for
//! WebSocket) with the bytes already read put back in front. Both paths bound the request
//! head by `--header-timeout` (one deadline from accept, whichever path the head ends up
//! on); hyper's timer also closes a keep-alive connection that sends no new request head
//! within it. A write that stays blocked for two heartbeats (a reader that stopped reading)
//! fails, which closes the connection and any channel on it. At most `--max-connections`
//! are open at once: each holds a permit for as long as its socket lives (a WebSocket's
//! too, after the upgrade), and one more is answered 503 at accept and closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Config;
use crate::http::direct::{self, First, Peer};
use crate::http::limits::{self, Bucket, ReadMeter};
use crate::service::Service;

/// What every connection task needs: cheap handles.
pub(super) struct Conns {
    router: Router,
    service: Arc<Service>,
    heartbeat: Duration,
    header_timeout: Duration,
    allowed_origins: Vec<String>,
    http1: http1::Builder,
    /// One permit per open connection (`--max-connections`).
    open: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Conns {
    pub(super) fn new(
        router: Router,
        service: Arc<Service>,
        config: &Config,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Arc<Conns> {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            // hyper's default read buffer (~400 KiB) would let every unfinished head hold
            // that much; past this it answers 431.
            .max_buf_size(limits::MAX_HEAD)
            .keep_alive(true);
        Arc::new(Conns {
            router,
            service,
            heartbeat: config.heartbeat,
            header_timeout: config.header_timeout,
            allowed_origins: config.allowed_origins.clone(),
            http1,
            open: Arc::new(Semaphore::new(config.max_connections())),
            tasks,
            stop,
        })
    }

    /// Accepts until dropped (the server drops it when shutdown begins, closing the listener).
    pub(super) async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of fds and the like: back off briefly, as hyper's own loops do.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.open.clone().try_acquire_owned() else {
                // Full: a fresh socket's send buffer is empty, so this write does not block.
                self.service.metrics().connections_refused.inc();
                let _ = stream.try_write(limits::FULL_RESPONSE);
                continue;
            };
            let me = self.clone();
            self.tasks.spawn(async move {
                let open = &me.service.metrics().connections_open;
                open.inc();
                let permit = Permit {
                    _place: permit,
                    open: open.clone(),
                };
                me.serve(stream, addr, permit).await
            });
        }
    }

    async fn serve(&self, mut stream: TcpStream, addr: SocketAddr, permit: Permit) {
        // The whole head, from accept on, gets one deadline.
        let deadline = tokio::time::Instant::now() + self.header_timeout;
        let first = tokio::select! {
            f = direct::first_bytes(&mut stream, deadline) => f,
            () = self.stop.cancelled() => return,
        };
        match first {
            // Closed, stalled past the deadline, or failed before a request began.
            None => {}
            Some(First::Events(read)) => {
                let head = tokio::select! {
                    h = direct::read_head(&mut stream, read, deadline) => h,
                    () = self.stop.cancelled() => return,
                };
                direct::serve(
                    stream,
                    head,
                    self.service.clone(),
                    self.heartbeat,
                    &self.allowed_origins,
                )
                .await;
                drop(permit);
            }
            Some(First::Other(read)) => {
                let meter = ReadMeter::default();
                let io = ClientIo::new(read, stream, 2 * self.heartbeat, meter.clone(), permit);
                self.serve_http(io, addr, meter, deadline).await
            }
        }
    }

    async fn serve_http(
        &self,
        io: ClientIo,
        addr: SocketAddr,
        meter: ReadMeter,
        deadline: tokio::time::Instant,
    ) {
        let router = self.router.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(Peer(addr)));
            req.extensions_mut().insert(meter.clone());
            router.clone().oneshot(req)
        });
        // The first head has what is left of the deadline taken at accept, not a fresh one:
        // `GET /event` dribbled for 9 s is not given 10 s more when it turns out not to be
        // `/events`. (Later heads on the connection get the same, shorter, limit.)
        let mut http1 = self.http1.clone();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        http1.header_read_timeout(left.max(Duration::from_millis(1)));
        let conn = http1
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = self.stop.cancelled() => {}
        }
        // Shutdown: finish the response in flight (an SSE stream ends after its `reconnect`),
        // then close instead of waiting for another request.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// A connection's place under `--max-connections`, counted in the open-connections gauge.
struct Permit {
    _place: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A client socket for hyper: the bytes already read put back in front, and a write timeout.
/// hyper has none, and WebSocket connections keep this IO after the upgrade, so one limit
/// covers every response, SSE stream and WebSocket served through hyper. Once the WebSocket
/// handler arms the [`ReadMeter`], reads are metered too, and the connection's permit lives
/// as long as the socket does.
struct ClientIo {
    read: Option<Vec<u8>>,
    pos: usize,
    inner: TcpStream,
    write_timeout: Duration,
    /// Running while a write is blocked; allocated only then.
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
    meter: ReadMeter,
    /// Created on the first metered read.
    budget: Option<Bucket>,
    _permit: Permit,
}

impl ClientIo {
    fn new(
        read: Vec<u8>,
        inner: TcpStream,
        write_timeout: Duration,
        meter: ReadMeter,
        permit: Permit,
    ) -> Self {
        ClientIo {
            read: (!read.is_empty()).then_some(read),
            pos: 0,
            inner,
            write_timeout,
            blocked: None,
            meter,
            budget: None,
            _permit: permit,
        }
    }

    /// Passes a write's result on; a write still pending after `write_timeout` fails.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.blocked = None;
            return r;
        }
        let wait = self.write_timeout;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write blocked for two heartbeats",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if let Some(read) = &me.read {
            let n = (read.len() - me.pos).min(buf.remaining());
            buf.put_slice(&read[me.pos..me.pos + n]);
            me.pos += n;
            if me.pos == read.len() {
                // Freed as soon as it is handed over, so a long-lived connection keeps nothing.
                me.read = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if me.meter.armed() {
                let n = (buf.filled().len() - before) as f64;
                let budget = me.budget.get_or_insert_with(|| {
                    Bucket::new(limits::WS_READ_BURST, limits::WS_READ_PER_SEC)
                });
                if !budget.take(n) {
                    return Poll::Ready(Err(std::io::Error::other(limits::READ_RATE_EXCEEDED)));
                }
            }
        }
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        me.timed(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        me.timed(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_flush(cx);
        me.timed(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

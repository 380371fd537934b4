//! Connections: the accept loop and one task per connection. A fresh connection's first
//! bytes decide its path: `GET /events` is served straight on the socket
//! ([`crate::http::direct`]); everything else goes to hyper (HTTP/1.1 with upgrades for
//! WebSocket) with the bytes already read put back in front. Both paths bound the request
//! head by `--header-timeout`; hyper's timer also closes a keep-alive connection that sends
//! no new request head within it. A write that stays blocked for two heartbeats (a reader
//! that stopped reading) fails, which closes the connection and any channel on it.

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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Config;
use crate::http::direct::{self, First, Peer};
use crate::service::Service;

/// What every connection task needs: cheap handles.
pub(super) struct Conns {
    router: Router,
    service: Arc<Service>,
    heartbeat: Duration,
    header_timeout: Duration,
    allowed_origins: Vec<String>,
    http1: http1::Builder,
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
            .keep_alive(true);
        Arc::new(Conns {
            router,
            service,
            heartbeat: config.heartbeat,
            header_timeout: config.header_timeout,
            allowed_origins: config.allowed_origins.clone(),
            http1,
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
            let me = self.clone();
            self.tasks
                .spawn(async move { me.serve(stream, addr).await });
        }
    }

    async fn serve(&self, mut stream: TcpStream, addr: SocketAddr) {
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
            }
            Some(First::Other(read)) => {
                let io = ClientIo::new(read, stream, 2 * self.heartbeat);
                self.serve_http(io, addr).await
            }
        }
    }

    async fn serve_http(&self, io: ClientIo, addr: SocketAddr) {
        let router = self.router.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(Peer(addr)));
            router.clone().oneshot(req)
        });
        let conn = self
            .http1
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

/// A client socket for hyper: the bytes already read put back in front, and a write timeout.
/// hyper has none, and WebSocket connections keep this IO after the upgrade, so one limit
/// covers every response, SSE stream and WebSocket served through hyper.
struct ClientIo {
    read: Option<Vec<u8>>,
    pos: usize,
    inner: TcpStream,
    write_timeout: Duration,
    /// Running while a write is blocked; allocated only then.
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientIo {
    fn new(read: Vec<u8>, inner: TcpStream, write_timeout: Duration) -> Self {
        ClientIo {
            read: (!read.is_empty()).then_some(read),
            pos: 0,
            inner,
            write_timeout,
            blocked: None,
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
        Pin::new(&mut me.inner).poll_read(cx, buf)
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

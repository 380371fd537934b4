//! tokenpush: short-lived JWT access tokens and rotating refresh tokens, pushed down SSE and
//! WebSocket channels before they expire.
//!
//! - [`config`]: CLI flags and `TOKENPUSH_*` env vars.
//! - [`error`]: the one error enum and its HTTP mapping.
//! - [`clock`]: unix-millisecond time.
//! - [`tokens`]: keys and JWKS, access JWTs, refresh tokens `<sid>.<gen>.<mac>`.
//! - [`sessions`]: the session record, the rotation rule, stores (memory, SQLite, Redis).
//! - [`users`]: users file, demo users, argon2id.
//! - [`hub`]: live channels, renewal scheduler, cluster bus.
//! - [`service`]: login, redeem, confirm, renew, revoke — what handlers and the scheduler call.
//! - [`http`]: router, extractors and handlers.
//! - [`metrics`]: Prometheus metrics.

pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

use config::{Config, Signing};
use hub::bus::Bus;
use hub::scheduler::Scheduler;
use hub::{Hub, Limits};
use service::{Parts, Service, Timing};
use sessions::{Policy, Sessions};
use tokens::{keys, AccessTokens, Issuer, RefreshTokens};

/// How long graceful shutdown waits for channels to take their `reconnect` and go.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    config: Arc<Config>,
    service: Arc<Service>,
}

/// Binds with a deep accept backlog: tokio's default (128) drops connect storms.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Server {
    /// Loads keys, users and the store, binds the listener and starts background tasks.
    pub async fn bind(config: Config) -> Result<Server, String> {
        keys::ensure_data_dir(&config.data_dir).map_err(|e| e.to_string())?;
        let listener = listen(config.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let signing = match config.signing {
            Signing::Eddsa => {
                keys::load_or_create_secret(&config.data_dir.join("signing-ed25519.key"), 32)
                    .and_then(|seed| keys::ed25519(&seed))
            }
            Signing::Hs256 => {
                let path = config
                    .hs256_secret_file
                    .as_ref()
                    .ok_or("--signing hs256 needs --hs256-secret-file")?;
                keys::read_private(path).and_then(|s| keys::hs256(&s))
            }
        }
        .map_err(|e| e.to_string())?;
        let refresh_key = keys::load_or_create_secret(&config.data_dir.join("refresh-mac.key"), 32)
            .map_err(|e| e.to_string())?;
        let issuer_name = config
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let issuer = Issuer {
            access: AccessTokens::new(signing, &issuer_name, &config.audience),
            refresh: RefreshTokens::new(refresh_key),
            issuer: issuer_name,
            audience: config.audience.clone(),
            access_ttl_ms: millis(config.access_ttl),
            idle_ttl_ms: millis(config.refresh_idle_ttl),
            max_ttl_ms: millis(config.refresh_max_ttl),
        };
        let users = match &config.users {
            Some(path) => users::Directory::load(path)?,
            None => users::Directory::demo(&config.data_dir)?,
        };
        let (store, redis) =
            sessions::open(&config.store, &config.data_dir, config.refresh_max_ttl).await?;
        let policy = Policy {
            grace_ms: millis(config.grace),
            idle_ms: millis(config.refresh_idle_ttl),
            max_ms: millis(config.refresh_max_ttl),
        };
        let limits = Limits {
            per_session: config.max_channels_per_session,
            per_user: config.max_channels_per_user,
            total: config.max_channels(),
        };
        let timing = Timing {
            lead_ms: millis(config.renew_lead),
            jitter_ms: millis(config.renew_jitter()),
            ticket_ttl: config.ticket_ttl,
            login_failures: config.login_failures,
        };
        let (bus, bus_rx) = match redis {
            Some((client, conn)) => {
                let (bus, rx) = Bus::redis(client, conn);
                (bus, Some(rx))
            }
            None => (Bus::local(), None),
        };
        let (due_tx, mut due_rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::spawn(due_tx);
        let service = Arc::new(Service::new(Parts {
            sessions: Sessions::new(store, policy),
            issuer,
            users,
            hub: Arc::new(Hub::new(limits)),
            metrics: Arc::new(metrics::Metrics::default()),
            timing,
            bus,
            scheduler,
        }));
        service
            .load()
            .await
            .map_err(|e| format!("loading state: {e}"))?;

        let svc = service.clone();
        tokio::spawn(async move {
            while let Some((sid, deadline)) = due_rx.recv().await {
                let svc = svc.clone();
                tokio::spawn(async move { svc.renewal_due(&sid, deadline).await });
            }
        });
        if let Some(mut rx) = bus_rx {
            let svc = service.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    svc.on_bus(ev);
                }
            });
        }
        let svc = service.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                svc.prune().await;
                // Hand memory freed after a connect storm (request buffers of thousands of
                // upgrades) back to the OS, so idle channels cost what they hold.
                // SAFETY: malloc_trim only releases free heap pages.
                unsafe { libc::malloc_trim(0) };
            }
        });
        Ok(Server {
            listener,
            config: Arc::new(config),
            service,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then every channel gets `reconnect` and the server
    /// drains for a few seconds at most.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let heartbeat = self.config.heartbeat;
        let state = http::AppState {
            config: self.config,
            service: self.service.clone(),
        };
        let app = http::router(state).into_make_service_with_connect_info::<http::direct::Peer>();
        let listener = http::direct::split(self.listener, self.service.clone(), heartbeat)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let svc = self.service.clone();
        let signal = async move {
            shutdown.await;
            let n = svc.shutdown_channels();
            tracing::info!(
                channels = n,
                "shutting down: reconnect sent to every channel"
            );
            let _ = stop_tx.send(true);
        };
        let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
        let mut stop = stop_rx;
        let deadline = async move {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        };
        let drain_until = tokio::time::Instant::now() + DRAIN;
        let result = tokio::select! {
            r = serve => r,
            _ = deadline => {
                tracing::warn!("drain timed out; closing remaining connections");
                Ok(())
            }
        };
        // Channels served outside hyper (direct SSE) are not in axum's drain: let them write
        // their `reconnect` and close too.
        let hub = &self.service.hub;
        while hub.live(hub::Kind::Sse) + hub.live(hub::Kind::Ws) > 0
            && tokio::time::Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        result
    }
}

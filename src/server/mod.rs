//! Startup and shutdown, in the manner of mini-redis's `Listener` + `Shutdown`. [`Server::bind`]
//! builds the service from the config; [`Server::run`] runs every background loop (scheduler
//! glue, bus subscriber, prune loop) and every connection as a task of one [`TaskTracker`],
//! and every live channel holds a token of it (see [`crate::hub::Registration`]). Shutdown
//! cancels one [`CancellationToken`] (accepting stops, loops end, idle connections close),
//! sends `reconnect` to every channel and waits for all tasks, with a drain deadline taken
//! when shutdown begins. Nothing below `http/` knows this module.

mod conn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Signing};
use crate::hub::bus::{Bus, BusEvent};
use crate::hub::scheduler::{Due, Scheduler};
use crate::hub::{Hub, Limits};
use crate::service::{Parts, Service, Timing};
use crate::sessions::{self, Policy, Sessions};
use crate::tokens::{keys, AccessTokens, Issuer, RefreshTokens};
use crate::{http, metrics, users};

/// How long graceful shutdown waits, from the moment it begins, for channels to take their
/// `reconnect` and go.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    config: Arc<Config>,
    service: Arc<Service>,
    tasks: TaskTracker,
    stop: CancellationToken,
    due: mpsc::UnboundedReceiver<Due>,
    bus: Option<mpsc::UnboundedReceiver<BusEvent>>,
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
    /// Loads keys, users and the store and binds the listener. Nothing is served (and no
    /// background loop runs) until [`Server::run`].
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
            tickets_per_window: config.tickets_per_session,
        };
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let (bus, bus_rx) = match redis {
            Some((client, conn)) => {
                let (bus, rx) = Bus::redis(client, conn, &tasks, stop.clone());
                (bus, Some(rx))
            }
            None => (Bus::local(), None),
        };
        let (due_tx, due_rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::spawn(due_tx, &tasks, stop.clone());
        let service = Arc::new(Service::new(Parts {
            sessions: Sessions::new(store, policy),
            issuer,
            users,
            hub: Arc::new(Hub::new(limits, tasks.clone())),
            metrics: Arc::new(metrics::Metrics::default()),
            timing,
            bus,
            scheduler,
            integration: crate::service::integration::Integration::from_config(&config)?,
        }));
        service
            .load()
            .await
            .map_err(|e| format!("loading state: {e}"))?;
        service.set_node(node_name(addr.port()));
        Ok(Server {
            listener,
            config: Arc::new(config),
            service,
            tasks,
            stop,
            due: due_rx,
            bus: bus_rx,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves. Then accepting stops, every channel gets `reconnect`
    /// (WebSocket close 1012), and the server waits for every connection, channel and loop to
    /// end, at most [`DRAIN`] from that moment.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Server {
            listener,
            config,
            service,
            tasks,
            stop,
            due,
            bus,
        } = self;
        spawn_loops(&service, &tasks, &stop, due, bus);
        spawn_key_reload(&service, &tasks, &stop, config.data_dir.clone());
        let conns = conn::Conns::new(
            http::router(http::AppState {
                config: config.clone(),
                service: service.clone(),
            }),
            service.clone(),
            &config,
            tasks.clone(),
            stop.clone(),
        );
        tokio::select! {
            () = conns.accept(listener) => {}
            () = shutdown => {}
        }
        // The deadline is taken now, not at startup: a server up for days drains as long
        // as one up for a second.
        let deadline = tokio::time::Instant::now() + DRAIN;
        stop.cancel();
        let n = service.shutdown_channels();
        tracing::info!(
            channels = n,
            "shutting down: reconnect sent to every channel"
        );
        tasks.close();
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "drain timed out; closing remaining connections"
            );
        }
        Ok(())
    }
}

/// `host:port`, how this node is named in cluster-wide admin views.
fn node_name(port: u16) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let host = if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "node".into()
    };
    format!("{host}:{port}")
}

/// The background loops, each a task of `tasks` that ends when `stop` is cancelled.
fn spawn_loops(
    service: &Arc<Service>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    mut due: mpsc::UnboundedReceiver<Due>,
    bus: Option<mpsc::UnboundedReceiver<BusEvent>>,
) {
    // Scheduler glue: each due renewal runs as its own (tracked) task.
    let (svc, t, s) = (service.clone(), tasks.clone(), stop.clone());
    tasks.spawn(async move {
        while let Some(Some((sid, deadline))) = s.run_until_cancelled(due.recv()).await {
            let svc = svc.clone();
            t.spawn(async move { svc.renewal_due(&sid, deadline).await });
        }
    });
    if let Some(mut rx) = bus {
        let (svc, s) = (service.clone(), stop.clone());
        tasks.spawn(async move {
            while let Some(Some(ev)) = s.run_until_cancelled(rx.recv()).await {
                svc.on_bus(ev);
            }
        });
        let (svc, s) = (service.clone(), stop.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(crate::service::PRESENCE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while s.run_until_cancelled(every.tick()).await.is_some() {
                svc.announce_presence().await;
            }
        });
        // The store is the truth, the bus only the fast path: see `Service::catch_up`.
        let (svc, s) = (service.clone(), stop.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(crate::service::CATCH_UP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while s.run_until_cancelled(every.tick()).await.is_some() {
                svc.catch_up().await;
            }
        });
    }
    let (svc, s) = (service.clone(), stop.clone());
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        while s.run_until_cancelled(every.tick()).await.is_some() {
            svc.prune().await;
            // Hand memory freed after a connect storm (request buffers of thousands of
            // upgrades) back to the OS, so idle channels cost what they hold.
            // SAFETY: malloc_trim only releases free heap pages.
            unsafe { libc::malloc_trim(0) };
        }
    });
}

/// Signing-key rotation without a restart: the key set is re-read from the data dir on
/// SIGHUP and every few seconds, so every node sharing the dir picks up
/// `tokenpush keys rotate` on its own.
fn spawn_key_reload(
    service: &Arc<Service>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    data_dir: std::path::PathBuf,
) {
    service.reload_keys(&data_dir);
    let (svc, s) = (service.clone(), stop.clone());
    tasks.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut every = tokio::time::interval(crate::service::KEY_RELOAD_EVERY);
        loop {
            let hup_or_tick = async {
                match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = h.recv() => {}
                        _ = every.tick() => {}
                    },
                    None => {
                        every.tick().await;
                    }
                }
            };
            if s.run_until_cancelled(hup_or_tick).await.is_none() {
                break;
            }
            // File reads: on a blocking thread, never on a runtime worker serving channels.
            let (svc, dir) = (svc.clone(), data_dir.clone());
            let _ = tokio::task::spawn_blocking(move || svc.reload_keys(&dir)).await;
        }
    });
}

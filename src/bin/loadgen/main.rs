//! Load driver for BENCHMARKS.md. Starts a release `tokenpush` with bench settings on
//! loopback, drives it, and prints the measured numbers. Bounded in count and time.
//!
//! Modes: `channels` (connect storm, memory per channel, renewal lag, drops over a hold),
//! `burst` (every session renewed at once), `pull` (`/auth/refresh` and `/api/me`), and
//! `smoke` (a small run of each that fails on any drop, for `./scripts/test`), and `soak`
//! (every hostile request shape at once while honest channels renew; `scripts/hostile-soak`).

mod channel;
mod net;
mod soak;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::sync::watch;

use channel::{Counters, Seen};
use net::Http;

#[derive(Parser)]
#[command(about = "tokenpush load driver (loopback only)")]
struct Args {
    /// Server binary to start.
    #[arg(long, default_value = "target/release/tokenpush")]
    server_bin: String,
    /// Extra server flag (repeatable), e.g. `--server-arg=--signing --server-arg=hs256`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// `channels` mode: start this many nodes (sharing key files; give them one
    /// `--server-arg=--store --server-arg=redis://…`) and spread the channels over them, the
    /// tickets all coming from the first.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Clone)]
enum Mode {
    /// Open SSE and WS channels as fast as allowed, hold them, measure memory, lag and drops.
    Channels {
        #[arg(long, default_value_t = 9000)]
        sse: usize,
        #[arg(long, default_value_t = 9000)]
        ws: usize,
        /// How long to hold the channels open.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Access token lifetime on the server (renewals happen every ttl − 10 s).
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Channels opening at once.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
    },
    /// N sessions with one channel each, all renewed at one moment (an admin role change).
    Burst {
        #[arg(long, default_value_t = 18000)]
        sessions: usize,
    },
    /// Pull path throughput: `/auth/refresh` (rotating) and `/api/me`.
    Pull {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// 500 channels for 10 s plus short pull and burst runs; exits non-zero on any failure.
    Smoke,
    /// Every hostile shape at once while honest channels renew; exits non-zero when an honest
    /// channel misses a renewal, RSS passes the bound, or fds stay up after the attack.
    Soak {
        #[arg(long, default_value_t = 1000)]
        honest: usize,
        /// Attacking connections per shape (six shapes).
        #[arg(long, default_value_t = 50)]
        per_shape: usize,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        attack: Duration,
        #[arg(long, default_value_t = 256)]
        max_rss_mib: u64,
    },
}

/// `--server-arg`s, appended to every server start.
static SERVER_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// A server process with bench settings.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &str, extra: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().expect("temp dir"), bin, extra)
    }

    /// Another cluster node: its own directory with this node's key files.
    fn start_peer(&self, bin: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        for f in ["signing-ed25519.key", "refresh-mac.key"] {
            std::fs::copy(self._dir.path().join("data").join(f), data.join(f)).expect("key file");
        }
        Self::start_in(dir, bin, extra)
    }

    fn start_in(dir: tempfile::TempDir, bin: &str, extra: &[&str]) -> Server {
        let extra: Vec<String> = extra
            .iter()
            .map(|s| s.to_string())
            .chain(SERVER_ARGS.get().cloned().unwrap_or_default())
            .collect();
        // A deliberately cheap argon2 hash: the benchmarks measure tokens, not password hashing.
        let params = argon2::Params::new(8, 1, 1, None).expect("argon2 params");
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt =
            argon2::password_hash::SaltString::encode_b64(b"loadgen-salt-16b").expect("salt");
        let hash = argon2::PasswordHasher::hash_password(&argon, b"bench", &salt)
            .expect("hash")
            .to_string();
        let users = dir.path().join("users.toml");
        let text = format!(
            "[[user]]\nname = \"bench\"\npassword_hash = \"{hash}\"\nroles = []\n\n[[user]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nroles = [\"admin\"]\n"
        );
        std::fs::write(&users, text).expect("users file");
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0", "--users"])
            .arg(&users)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--max-channels-per-user",
                "1000000",
                "--login-failures",
                "1000000",
                "--renew-jitter",
                "0s",
            ])
            .args(&extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (cargo build --release first)"));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let addr = loop {
            let line = lines.next().expect("server exited").expect("server output");
            if let Some(a) = line.strip_prefix("tokenpush listening on http://") {
                break a.parse().expect("address");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Open fds of the server.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    /// CPU time (user + system) the server used so far, in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // utime and stime are fields 14 and 15; fields after `(comm)` start at 3.
        let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        // SAFETY: sysconf only reads a system setting.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        f.iter().sum::<u64>() as f64 / tck
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// p-th percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
        pct(&v, 0.5),
        pct(&v, 0.99),
        pct(&v, 1.0),
        v.len()
    )
}

/// Logs in `n` sessions of `user`; returns their TokenResponses.
async fn login_many(addr: SocketAddr, user: &str, n: usize) -> Vec<serde_json::Value> {
    let workers = 32.min(n.max(1));
    let per = n.div_ceil(workers);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let user = user.to_string();
            tokio::spawn(async move {
                let mut http = Http::open(addr, w).await.expect("connect");
                let mut out = vec![];
                for _ in 0..per {
                    let body =
                        json!({"username": user, "password": "bench", "device_id": "loadgen"});
                    let (st, t) = loop {
                        let (st, t) = http
                            .call("POST", "/auth/login", None, Some(&body))
                            .await
                            .expect("login");
                        // Password hashing is bounded: a full queue answers 503, retry.
                        if st != 503 {
                            break (st, t);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    };
                    assert_eq!(st, 200, "login: {t}");
                    out.push(t);
                }
                out
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("login task"));
    }
    all.truncate(n);
    all
}

/// Gets one ticket per session (`n` workers over keep-alive connections).
async fn tickets(addr: SocketAddr, sessions: &[serde_json::Value]) -> Vec<String> {
    let chunks: Vec<Vec<String>> = sessions
        .chunks(sessions.len().div_ceil(32).max(1))
        .map(|c| {
            c.iter()
                .map(|t| t["refresh_token"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(w, rts)| {
            tokio::spawn(async move {
                let mut http = Http::open(addr, w).await.expect("connect");
                let mut out = vec![];
                for rt in rts {
                    let (st, t) = http
                        .call(
                            "POST",
                            "/auth/ticket",
                            None,
                            Some(&json!({"refresh_token": rt})),
                        )
                        .await
                        .expect("ticket");
                    assert_eq!(st, 200, "ticket: {t}");
                    out.push(t["ticket"].as_str().unwrap().to_string());
                }
                out
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("ticket task"));
    }
    all
}

/// Opens one channel per ticket (first `sse` as SSE, the rest WS) with bounded concurrency.
/// Returns the handles, the stop switch and how long until all were ready.
async fn open_channels(
    addrs: &[SocketAddr],
    tickets: Vec<String>,
    sse: usize,
    concurrency: usize,
    counters: Arc<Counters>,
) -> (
    Vec<tokio::task::JoinHandle<Seen>>,
    watch::Sender<bool>,
    Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let n = tickets.len();
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut handles = Vec::with_capacity(n);
    for (i, ticket) in tickets.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (counters, stop) = (counters.clone(), stop_rx.clone());
        let ready_before = counters.ready.load(Ordering::Relaxed);
        let addr = addrs[i % addrs.len()];
        handles.push(tokio::spawn(async move {
            let c2 = counters.clone();
            let fut = channel::run(addr, i, i >= sse, ticket, counters, stop);
            tokio::pin!(fut);
            // Hold the permit until this channel is ready (or failed): that bounds the storm.
            let mut permit = Some(permit);
            loop {
                tokio::select! {
                    seen = &mut fut => return seen,
                    _ = tokio::time::sleep(Duration::from_millis(5)), if permit.is_some() => {
                        if c2.ready.load(Ordering::Relaxed) > ready_before || c2.failed.load(Ordering::Relaxed) > 0 {
                            permit = None;
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters.ready.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (handles, stop_tx, start.elapsed())
}

async fn channels(
    bin: &str,
    nodes: usize,
    sse: usize,
    ws: usize,
    hold: Duration,
    ttl: Duration,
    concurrency: usize,
) -> bool {
    let n = sse + ws;
    let lead_ms: i64 = 10_000;
    let ttl_s = format!("{}s", ttl.as_secs());
    let flags = [
        "--access-ttl",
        &ttl_s,
        "--renew-lead",
        "10s",
        "--heartbeat",
        "15s",
    ];
    let server = Server::start(bin, &flags);
    let peers: Vec<Server> = (1..nodes).map(|_| server.start_peer(bin, &flags)).collect();
    let addrs: Vec<SocketAddr> = std::iter::once(server.addr)
        .chain(peers.iter().map(|p| p.addr))
        .collect();
    let all = || std::iter::once(&server).chain(&peers);
    println!(
        "== channels: {sse} SSE + {ws} WS over {nodes} node(s), hold {hold:?}, access TTL {ttl:?} (renewal every {}s)",
        ttl.as_secs() - 10
    );
    let sessions = login_many(server.addr, "bench", n).await;
    let tks = tickets(server.addr, &sessions).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let rss_before: u64 = all().map(Server::rss_kib).sum();
    let counters = Arc::new(Counters::default());
    let (handles, stop, took) =
        open_channels(&addrs, tks, sse, concurrency, counters.clone()).await;
    let ready = counters.ready.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    println!(
        "connect storm: {ready} ready, {failed} failed in {:.2} s = {:.0} channels/s",
        took.as_secs_f64(),
        ready as f64 / took.as_secs_f64()
    );
    // The server trims freed heap every 10 s; measure what the idle channels really hold.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let rss_after: u64 = all().map(Server::rss_kib).sum();
    let per = (rss_after.saturating_sub(rss_before)) as f64 / n.max(1) as f64;
    println!("server RSS: {rss_before} KiB idle → {rss_after} KiB with {n} channels = {per:.1} KiB per channel");
    let started = Instant::now();
    let cpu_now = || all().map(Server::cpu_secs).sum::<f64>();
    let (cpu_before, tokens_before) = (cpu_now(), counters.tokens.load(Ordering::Relaxed));
    while started.elapsed() < hold {
        tokio::time::sleep(Duration::from_secs(10).min(hold.saturating_sub(started.elapsed())))
            .await;
        println!(
            "  t+{:>4.0}s: tokens received {}, server RSS {} KiB",
            started.elapsed().as_secs_f64(),
            counters.tokens.load(Ordering::Relaxed),
            all().map(Server::rss_kib).sum::<u64>()
        );
    }
    let cpu = cpu_now() - cpu_before;
    let delivered = counters.tokens.load(Ordering::Relaxed) - tokens_before;
    println!(
        "server CPU per delivered event: {:.1} µs ({cpu:.2} s CPU over the hold / {delivered} tokens events)",
        cpu * 1e6 / delivered.max(1) as f64
    );
    let _ = stop.send(true);
    let mut lags = vec![];
    let mut due_before_open = 0;
    let mut dropped = 0;
    let mut renewed_channels = 0;
    for (h, login) in handles.into_iter().zip(&sessions) {
        let seen = h.await.expect("channel task");
        if seen.dropped {
            dropped += 1;
        }
        let mut prev_exp = net::exp_of(login["access_token"].as_str().unwrap());
        if !seen.tokens.is_empty() {
            renewed_channels += 1;
        }
        for (at, exp, reason) in &seen.tokens {
            let deadline = prev_exp * 1000 - lead_ms;
            // A deadline that fell before the channel opened was answered at open; counting it
            // as lag would report the time the channel did not exist yet.
            if reason == "renewal" && deadline >= seen.opened_at {
                lags.push((at - deadline) as f64);
            } else if reason == "renewal" {
                due_before_open += 1;
            }
            prev_exp = *exp;
        }
    }
    let late = lags.iter().filter(|l| **l >= lead_ms as f64).count();
    println!(
        "renewal lag (deadline → received): {}; renewals due before their channel opened (not counted): {due_before_open}",
        summary(lags.clone())
    );
    println!("channels renewed at least once: {renewed_channels}/{n}; renewals after expiry: {late}; dropped: {dropped}; failed to open: {failed}");
    dropped == 0 && failed == 0 && late == 0 && (hold < ttl || renewed_channels == n)
}

async fn burst(bin: &str, n: usize) -> bool {
    let server = Server::start(bin, &["--access-ttl", "15m"]);
    println!("== burst: {n} sessions (half SSE, half WS), all renewed at once by a role change");
    let sessions = login_many(server.addr, "bench", n).await;
    let tks = tickets(server.addr, &sessions).await;
    let counters = Arc::new(Counters::default());
    let (handles, stop, _) = open_channels(&[server.addr], tks, n / 2, 512, counters.clone()).await;
    let admin = login_many(server.addr, "admin", 1).await.remove(0);
    let mut http = Http::open(server.addr, 0).await.expect("connect");
    println!("firing: all {n} channels ready, changing roles now");
    let t0 = tokenpush::clock::now_ms();
    let started = Instant::now();
    let (st, body) = http
        .call(
            "PUT",
            "/admin/users/bench/roles",
            admin["access_token"].as_str(),
            Some(&json!({"roles": ["burst"]})),
        )
        .await
        .expect("role change");
    assert_eq!(st, 200, "{body}");
    while counters.tokens.load(Ordering::Relaxed) < n && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);
    let mut lags = vec![];
    let mut missed = 0;
    for h in handles {
        let seen = h.await.expect("channel task");
        match seen.tokens.iter().find(|t| t.2 == "claims_changed") {
            Some(t) => lags.push((t.0 - t0) as f64),
            None => missed += 1,
        }
    }
    let last = lags.iter().cloned().fold(0.0, f64::max);
    println!(
        "burst delivery (request → received): {}",
        summary(lags.clone())
    );
    println!(
        "signed pushes/s: {:.0} ({} pushes in {:.0} ms); missed: {missed}",
        lags.len() as f64 / (last / 1000.0),
        lags.len(),
        last
    );
    missed == 0
}

async fn pull(bin: &str, clients: usize, duration: Duration) -> bool {
    let server = Server::start(bin, &["--access-ttl", "15m"]);
    println!("== pull: {clients} concurrent clients, {duration:?} each, SQLite store");
    let sessions = login_many(server.addr, "bench", clients).await;
    let mut ok = true;
    for route in ["/auth/refresh", "/api/me"] {
        let tasks: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (mut rt, at) = (
                    t["refresh_token"].as_str().unwrap().to_string(),
                    t["access_token"].as_str().unwrap().to_string(),
                );
                let addr = server.addr;
                tokio::spawn(async move {
                    let mut http = Http::open(addr, i).await.expect("connect");
                    let (mut lat, mut errors) = (vec![], 0usize);
                    let end = Instant::now() + duration;
                    while Instant::now() < end {
                        let t = Instant::now();
                        let (st, body) = if route == "/api/me" {
                            http.call("GET", route, Some(&at), None)
                                .await
                                .expect("call")
                        } else {
                            http.call("POST", route, None, Some(&json!({"refresh_token": rt})))
                                .await
                                .expect("call")
                        };
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        if st != 200 {
                            errors += 1;
                        } else if let Some(next) = body["refresh_token"].as_str() {
                            rt = next.to_string();
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let (mut all, mut errors) = (vec![], 0);
        for t in tasks {
            let (lat, e) = t.await.expect("pull task");
            all.extend(lat);
            errors += e;
        }
        println!(
            "{route}: {:.0} req/s, {}, errors {errors}",
            all.len() as f64 / duration.as_secs_f64(),
            summary(all.clone())
        );
        ok &= errors == 0;
    }
    ok
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let _ = SERVER_ARGS.set(args.server_args.clone());
    let bin = args.server_bin.as_str();
    let ok = match args.mode {
        Mode::Channels {
            sse,
            ws,
            hold,
            ttl,
            concurrency,
        } => channels(bin, args.nodes, sse, ws, hold, ttl, concurrency).await,
        Mode::Burst { sessions } => burst(bin, sessions).await,
        Mode::Pull { clients, duration } => pull(bin, clients, duration).await,
        Mode::Soak {
            honest,
            per_shape,
            attack,
            max_rss_mib,
        } => soak::soak(bin, honest, per_shape, attack, max_rss_mib).await,
        Mode::Smoke => {
            let c = channels(
                bin,
                1,
                250,
                250,
                Duration::from_secs(10),
                Duration::from_secs(15),
                128,
            )
            .await;
            let b = burst(bin, 200).await;
            let p = pull(bin, 8, Duration::from_secs(2)).await;
            c && b && p
        }
    };
    println!("{}", if ok { "RESULT: ok" } else { "RESULT: FAILED" });
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

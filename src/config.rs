//! Command-line and `TOKENPUSH_*` environment configuration (DESIGN.md "Configuration").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// The `tokenpush` command line.
#[derive(Debug, Parser)]
#[command(
    name = "tokenpush",
    version,
    about = "Keeps users logged in: rotating refresh tokens pushed over SSE and WebSocket before expiry"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands; running with none serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Read a password on stdin and print its argon2id hash for the users file.
    HashPassword,
    /// Show where the demo users live; with `--reset`, make new passwords and print them.
    DemoUsers {
        /// Replace the demo users' passwords with new random ones (printed once).
        #[arg(long)]
        reset: bool,
        /// Data dir holding `demo-users.toml` (default: the server's `--data-dir`).
        #[arg(long, env = "TOKENPUSH_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

impl Cli {
    /// Parses the process's arguments and environment, remembering which settings were given
    /// explicitly (see [`Config::was_set`]).
    pub fn parse_with_sources() -> Cli {
        Self::from_matches(Self::command().get_matches())
    }

    /// Like [`Cli::parse_with_sources`] for a given argument list (tests).
    pub fn parse_from_with_sources<I, T>(args: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_matches(Self::command().get_matches_from(args))
    }

    fn from_matches(m: ArgMatches) -> Cli {
        let mut cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
        cli.config.explicit = m
            .ids()
            .filter(|id| {
                matches!(
                    m.value_source(id.as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| id.as_str().to_string())
            .collect();
        cli
    }
}

/// Which access-token signature to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Signing {
    Eddsa,
    Hs256,
}

/// Every server setting. Durations are humantime strings (`500ms`, `6s`, `7d`).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "TOKENPUSH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for keys, secrets and the SQLite file (created 0700).
    #[arg(long, env = "TOKENPUSH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Session store: `sqlite` (file in the data dir), `memory`, or `redis://host:port/db`.
    #[arg(long, env = "TOKENPUSH_STORE", default_value = "sqlite")]
    pub store: String,
    /// Users file (TOML). Without one, demo users `alice` (admin) and `bob` are created.
    #[arg(long, env = "TOKENPUSH_USERS")]
    pub users: Option<PathBuf>,
    /// Access token lifetime.
    #[arg(long, env = "TOKENPUSH_ACCESS_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_ttl: Duration,
    /// A refresh token unused for this long expires.
    #[arg(long, env = "TOKENPUSH_REFRESH_IDLE_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after login, however active.
    #[arg(long, env = "TOKENPUSH_REFRESH_MAX_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub refresh_max_ttl: Duration,
    /// How long before access expiry a channel gets new tokens.
    #[arg(long, env = "TOKENPUSH_RENEW_LEAD", default_value = "60s", value_parser = humantime::parse_duration)]
    pub renew_lead: Duration,
    /// Up to this much earlier still, at random, to spread renewals (default 10 % of the access TTL).
    #[arg(long, env = "TOKENPUSH_RENEW_JITTER", value_parser = humantime::parse_duration)]
    pub renew_jitter: Option<Duration>,
    /// How long an older refresh token is still answered after its successor was confirmed.
    #[arg(long, env = "TOKENPUSH_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Interval of SSE `: ping` comments and WebSocket pings.
    #[arg(long, env = "TOKENPUSH_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Lifetime of a single-use channel ticket.
    #[arg(long, env = "TOKENPUSH_TICKET_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ticket_ttl: Duration,
    /// Origins allowed to open a WebSocket and to call the API cross-origin (CORS): comma list,
    /// `*` for any; default the server's own origin (then no CORS headers at all).
    #[arg(long, env = "TOKENPUSH_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// `iss` claim (default `http://<listen>`).
    #[arg(long, env = "TOKENPUSH_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim.
    #[arg(long, env = "TOKENPUSH_AUDIENCE", default_value = "tokenpush")]
    pub audience: String,
    /// Access token signature.
    #[arg(long, env = "TOKENPUSH_SIGNING", value_enum, default_value = "eddsa")]
    pub signing: Signing,
    /// HMAC key file for `--signing hs256` (at least 32 bytes).
    #[arg(long, env = "TOKENPUSH_HS256_SECRET_FILE")]
    pub hs256_secret_file: Option<PathBuf>,
    /// Behind a reverse proxy: take the client address from the rightmost `X-Forwarded-For` entry.
    #[arg(long, env = "TOKENPUSH_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// Live channels allowed per session.
    #[arg(long, env = "TOKENPUSH_MAX_CHANNELS_PER_SESSION", default_value_t = 8)]
    pub max_channels_per_session: usize,
    /// Live channels allowed per user.
    #[arg(long, env = "TOKENPUSH_MAX_CHANNELS_PER_USER", default_value_t = 32)]
    pub max_channels_per_user: usize,
    /// Live channels allowed in this process (default: fd limit − 1000).
    #[arg(long, env = "TOKENPUSH_MAX_CHANNELS")]
    pub max_channels: Option<usize>,
    /// Failed logins allowed per client address and username per minute.
    #[arg(long, env = "TOKENPUSH_LOGIN_FAILURES", default_value_t = 10)]
    pub login_failures: u32,
    /// The whole request head must arrive within this, on every connection; an idle
    /// keep-alive connection is closed when no new request head completes within it.
    #[arg(long, env = "TOKENPUSH_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Field ids (`access_ttl`, …) given by flag or env var rather than defaulted.
    #[arg(skip)]
    pub explicit: std::collections::HashSet<String>,
}

/// Access lifetime in demo mode (no `--users`): a renewal shows up within a minute.
pub const DEMO_ACCESS_TTL: Duration = Duration::from_secs(60);
/// Renewal lead in demo mode.
pub const DEMO_RENEW_LEAD: Duration = Duration::from_secs(15);

impl Config {
    /// Whether a setting (by field id, e.g. `"access_ttl"`) was given explicitly rather than
    /// left at its default.
    pub fn was_set(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Whether the server runs with generated demo users (no users file).
    pub fn demo_mode(&self) -> bool {
        self.users.is_none()
    }

    /// Demo mode without explicit timings: 60 s access tokens renewed 15 s ahead (jitter
    /// stays 10 % of the TTL unless set), so a visitor sees a renewal within a minute.
    /// Returns whether anything changed. Production defaults apply with a users file.
    pub fn apply_demo_defaults(&mut self) -> bool {
        if !self.demo_mode() {
            return false;
        }
        let mut changed = false;
        if !self.was_set("access_ttl") {
            self.access_ttl = DEMO_ACCESS_TTL;
            changed = true;
        }
        if !self.was_set("renew_lead") {
            // Never so long that lead + jitter reaches an explicitly short access TTL.
            self.renew_lead = DEMO_RENEW_LEAD.min(self.access_ttl / 4);
            changed = true;
        }
        changed
    }

    /// Renewal jitter, defaulting to 10 % of the access lifetime.
    pub fn renew_jitter(&self) -> Duration {
        self.renew_jitter.unwrap_or(self.access_ttl / 10)
    }

    /// Channel cap for the process, defaulting to the fd limit less 1000.
    pub fn max_channels(&self) -> usize {
        self.max_channels
            .unwrap_or_else(|| fd_limit().saturating_sub(1000).max(100))
    }
}

/// The soft limit on open files of this process.
pub fn fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_cur as usize
    } else {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_design() {
        let cli = Cli::parse_from(["tokenpush"]);
        let c = cli.config;
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.renew_jitter(), Duration::from_secs(90));
        assert_eq!(c.grace, Duration::from_secs(30));
        assert_eq!(c.max_channels_per_session, 8);
        assert!(!c.trust_proxy);
    }

    #[test]
    fn demo_defaults_only_without_users_and_explicit_flags() {
        let mut c = Cli::parse_from_with_sources(["tokenpush"]).config;
        assert!(c.apply_demo_defaults());
        assert_eq!(
            (c.access_ttl, c.renew_lead, c.renew_jitter()),
            (DEMO_ACCESS_TTL, DEMO_RENEW_LEAD, Duration::from_secs(6))
        );
        let mut c = Cli::parse_from_with_sources(["tokenpush", "--access-ttl", "2m"]).config;
        c.apply_demo_defaults();
        assert_eq!(
            (c.access_ttl, c.renew_lead),
            (Duration::from_secs(120), DEMO_RENEW_LEAD)
        );
        let mut c = Cli::parse_from_with_sources(["tokenpush", "--users", "u.toml"]).config;
        assert!(!c.apply_demo_defaults());
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.renew_lead, Duration::from_secs(60));
    }

    #[test]
    fn humantime_and_lists_parse() {
        let cli = Cli::parse_from([
            "tokenpush",
            "--access-ttl",
            "6s",
            "--renew-jitter",
            "0s",
            "--allowed-origins",
            "http://a,http://b",
        ]);
        assert_eq!(cli.config.access_ttl, Duration::from_secs(6));
        assert_eq!(cli.config.renew_jitter(), Duration::ZERO);
        assert_eq!(cli.config.allowed_origins, vec!["http://a", "http://b"]);
    }
}

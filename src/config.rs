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
    /// Inspect the configuration: `tokenpush config check --config FILE`.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Read a password on stdin and print its argon2id hash for the users file.
    HashPassword,
    /// Signing keys: `tokenpush keys rotate --data-dir D`.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
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

/// What `tokenpush keys` does.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// A new Ed25519 signing key signs from now on; the old one still verifies (and JWKS
    /// publishes it) until its tokens expired. Running servers pick it up within seconds
    /// (at once on SIGHUP).
    Rotate {
        /// Data dir holding the signing key (default: the server's `--data-dir`).
        #[arg(long, env = "TOKENPUSH_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// What `tokenpush config` does.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate flags, env and `--config FILE`; print the effective settings (secrets masked).
    Check,
}

/// Why the command line, environment or config file cannot be used.
#[derive(Debug)]
pub enum CliError {
    /// clap's own error (bad flag, `--help`, `--version`): it knows how to print and exit.
    Clap(clap::Error),
    /// A config file problem, naming the file and the key.
    File(String),
}

impl Cli {
    /// Parses the process's arguments, environment and `--config` file, remembering which
    /// settings were given explicitly (see [`Config::was_set`]). Exits on an error.
    pub fn parse_with_sources() -> Cli {
        Self::parse_from_with_sources(std::env::args_os())
    }

    /// Like [`Cli::parse_with_sources`] for a given argument list (tests).
    pub fn parse_from_with_sources<I, T>(args: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Self::try_parse_from_with_sources(args) {
            Ok(cli) => cli,
            Err(CliError::Clap(e)) => e.exit(),
            Err(CliError::File(msg)) => {
                eprintln!("tokenpush: {msg}");
                std::process::exit(2)
            }
        }
    }

    /// Parses flags and env, then fills every setting given by neither from the `--config`
    /// TOML file (keys are the long flag names): flag > env > file > default.
    pub fn try_parse_from_with_sources<I, T>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let first = Self::command()
            .try_get_matches_from(&args)
            .map_err(CliError::Clap)?;
        let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
            return Self::from_matches(first, Default::default());
        };
        let file_args = file_args(&path, &first)?;
        let from_file = file_args
            .iter()
            .filter_map(|a| a.to_str())
            .filter_map(|a| a.strip_prefix("--"))
            .map(|a| a.split('=').next().unwrap_or(a).to_string())
            .collect();
        // File values go first as flags: clap then applies env and defaults to the rest, and
        // nothing on the real command line can collide (those keys were skipped).
        let mut merged = args.clone();
        merged.splice(1.min(merged.len())..1.min(merged.len()), file_args);
        let m = Self::command()
            .try_get_matches_from(&merged)
            .map_err(|e| CliError::File(format!("{}: {}", path.display(), e.render())))?;
        Self::from_matches(m, from_file)
    }

    /// `from_file`: long names whose value came from the config file.
    fn from_matches(
        m: ArgMatches,
        from_file: std::collections::HashSet<String>,
    ) -> Result<Cli, CliError> {
        let mut cli = Cli::from_arg_matches(&m).map_err(CliError::Clap)?;
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
        cli.config.settings = Self::command()
            .get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?;
                if matches!(long, "help" | "version" | "config") {
                    return None;
                }
                let id = a.get_id().as_str();
                let value = m
                    .get_raw(id)
                    .map(|vs| {
                        vs.map(|v| v.to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .filter(|v| !v.is_empty());
                let source = if from_file.contains(long) {
                    "file"
                } else {
                    match m.value_source(id) {
                        Some(ValueSource::CommandLine) => "flag",
                        Some(ValueSource::EnvVariable) => "env",
                        _ => "default",
                    }
                };
                Some(Setting {
                    key: long.to_string(),
                    value,
                    source,
                })
            })
            .collect();
        Ok(cli)
    }
}

/// The config file as `--key=value` arguments, skipping keys already given by flag or env.
fn file_args(
    path: &std::path::Path,
    given: &ArgMatches,
) -> Result<Vec<std::ffi::OsString>, CliError> {
    let where_ = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::File(format!("cannot read config file {where_}: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| CliError::File(format!("{where_}: not valid TOML: {e}")))?;
    let cmd = Cli::command();
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(key.as_str())
                    && !matches!(key.as_str(), "help" | "version" | "config")
            })
            .ok_or_else(|| {
                CliError::File(format!(
                    "{where_}: unknown key `{key}` (keys are the long flag names without `--`, \
                     e.g. `access-ttl`; `tokenpush --help` lists them)"
                ))
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let bad = |want: &str| {
            CliError::File(format!(
                "{where_}: key `{key}` has value {value}, expected {want}"
            ))
        };
        let text = match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    out.push(format!("--{key}").into());
                }
                continue;
            }
            _ if !takes_value => return Err(bad("true or false")),
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => Err(bad("a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => return Err(bad("a string, number or boolean")),
        };
        out.push(format!("--{key}={text}").into());
    }
    Ok(out)
}

/// One effective setting, for `tokenpush config check`.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Long flag name (= config file key).
    pub key: String,
    /// Raw value, `None` when unset.
    pub value: Option<String>,
    /// `flag`, `env`, `file` or `default`.
    pub source: &'static str,
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
    /// TOML file whose keys are these flags' long names (`access-ttl = "15m"`); a flag or env
    /// var still wins over the file.
    #[arg(long, env = "TOKENPUSH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
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
    #[arg(long, env = "TOKENPUSH_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = origin)]
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
    /// Channel tickets allowed per session per 10 seconds (then 429 `rate_limited`).
    #[arg(long, env = "TOKENPUSH_TICKETS_PER_SESSION", default_value_t = 10)]
    pub tickets_per_session: u32,
    /// The whole request head must arrive within this, on every connection; an idle
    /// keep-alive connection is closed when no new request head completes within it.
    #[arg(long, env = "TOKENPUSH_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// The whole request body must arrive within this after its head (then 408).
    #[arg(long, env = "TOKENPUSH_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Open connections allowed in this process, of every kind (default: fd limit − 100);
    /// one more is answered 503 at accept and closed.
    #[arg(long, env = "TOKENPUSH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Frames per second a WebSocket client may send (pings, pongs and text alike), with
    /// bursts of five seconds' worth; beyond it the connection is closed 1008.
    #[arg(long, env = "TOKENPUSH_WS_FRAME_RATE", default_value_t = 20)]
    pub ws_frame_rate: u32,
    /// Key file for trusted-backend routes (`POST /admin/sessions`, bearer = the file's bytes,
    /// trimmed); none → those routes answer 404.
    #[arg(long, env = "TOKENPUSH_SERVICE_KEY_FILE")]
    pub service_key_file: Option<PathBuf>,
    /// URL of the app's own credential check, asked by `/auth/login` after the users file.
    #[arg(long, env = "TOKENPUSH_LOGIN_HOOK")]
    pub login_hook: Option<String>,
    /// Field ids (`access_ttl`, …) given by flag, env var or config file rather than defaulted.
    #[arg(skip)]
    pub explicit: std::collections::HashSet<String>,
    /// Every setting with its raw value and source, for `tokenpush config check`.
    #[arg(skip)]
    pub settings: Vec<Setting>,
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

    /// The startup refusals of DESIGN.md "Configuration", shared by `serve` and `config check`.
    /// Call after [`Config::apply_demo_defaults`].
    pub fn validate(&self) -> Result<(), String> {
        let jitter = self.renew_jitter();
        if self.renew_lead + jitter >= self.access_ttl {
            let fmt = |d: Duration| humantime::format_duration(d).to_string();
            let lead = (self.access_ttl / 4).max(Duration::from_millis(1));
            let hint = if jitter < self.access_ttl / 2 {
                format!("e.g. --renew-lead {}", fmt(lead))
            } else {
                format!(
                    "e.g. --renew-lead {} --renew-jitter {}",
                    fmt(lead),
                    fmt(self.access_ttl / 10)
                )
            };
            return Err(format!(
                "--renew-lead ({}) + --renew-jitter ({}) must be shorter than --access-ttl ({}), \
                 else every token would be renewed before it is even used: {hint}",
                fmt(self.renew_lead),
                fmt(jitter),
                fmt(self.access_ttl)
            ));
        }
        if self.store.starts_with("redis") && self.issuer.is_none() {
            return Err(format!(
                "--store {} needs an explicit --issuer: the default http://<listen> differs per \
                 node, so cluster nodes would reject each other's tokens (e.g. --issuer \
                 https://auth.example.com)",
                mask_url(&self.store)
            ));
        }
        if self.signing == Signing::Hs256 && self.hs256_secret_file.is_none() {
            return Err("--signing hs256 needs --hs256-secret-file".into());
        }
        if let Some(hook) = &self.login_hook {
            // The hook is the app beside us (loopback or a private network): plain HTTP only,
            // so no TLS stack is built in; put a local proxy in front of a remote https hook.
            if !hook.starts_with("http://") {
                return Err(format!(
                    "--login-hook {} must be an http:// URL (e.g. http://127.0.0.1:3000/login-check)",
                    mask_url(hook)
                ));
            }
        }
        Ok(())
    }

    /// The effective settings as TOML lines (`key = value  # source`), URL passwords masked.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for s in &self.settings {
            let value = match (s.key.as_str(), &s.value) {
                ("access-ttl", _) => Some(humantime::format_duration(self.access_ttl).to_string()),
                ("renew-lead", _) => Some(humantime::format_duration(self.renew_lead).to_string()),
                ("renew-jitter", _) => {
                    Some(humantime::format_duration(self.renew_jitter()).to_string())
                }
                ("max-channels", _) => Some(self.max_channels().to_string()),
                ("max-connections", _) => Some(self.max_connections().to_string()),
                (_, v) => v.as_deref().map(mask_url),
            };
            let source = match s.key.as_str() {
                "access-ttl" | "renew-lead" | "renew-jitter" | "max-channels"
                | "max-connections"
                    if s.source == "default" =>
                {
                    "derived default"
                }
                _ => s.source,
            };
            match value {
                Some(v) if v == "true" || v == "false" || v.parse::<i64>().is_ok() => {
                    out.push_str(&format!("{} = {v}  # {source}\n", s.key))
                }
                Some(v) => out.push_str(&format!("{} = {v:?}  # {source}\n", s.key)),
                None => out.push_str(&format!("# {} unset\n", s.key)),
            }
        }
        out
    }

    /// Renewal jitter, defaulting to 10 % of the access lifetime.
    pub fn renew_jitter(&self) -> Duration {
        self.renew_jitter.unwrap_or(self.access_ttl / 10)
    }

    /// Connection cap for the process, defaulting to the fd limit less 100 (room for the
    /// store, the hook and files).
    pub fn max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| fd_limit().saturating_sub(100).max(100))
    }

    /// Channel cap for the process, defaulting to the fd limit less 1000.
    pub fn max_channels(&self) -> usize {
        self.max_channels
            .unwrap_or_else(|| fd_limit().saturating_sub(1000).max(100))
    }
}

/// A URL with any password (`user:pass@`) and every query value (`?token=…`) replaced by
/// `***`, for printing.
pub fn mask_url(s: &str) -> String {
    let (s, query) = match s.split_once('?') {
        Some((base, q)) if s.contains("://") => {
            let masked: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None => kv.to_string(),
                })
                .collect();
            (base, format!("?{}", masked.join("&")))
        }
        _ => (s, String::new()),
    };
    if let Some((scheme, rest)) = s.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{scheme}://***@{}{query}", &rest[at + 1..]);
        }
    }
    format!("{s}{query}")
}

/// One `--allowed-origins` entry, normalised once at startup: an origin has no path, so a
/// trailing `/` (`https://b.example/`) is dropped and every check compares like with like.
fn origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    Ok(match s.trim_end_matches('/') {
        "" => s.to_string(),
        o => o.to_string(),
    })
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

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenpush.toml");
        std::fs::write(&p, text).unwrap();
        let p = p.to_string_lossy().into_owned();
        (dir, p)
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        match Cli::try_parse_from_with_sources(args) {
            Ok(cli) => Ok(cli.config),
            Err(CliError::File(m)) => Err(m),
            Err(CliError::Clap(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn file_fills_what_flags_do_not_give() {
        let (_d, p) = file(
            "access-ttl = \"2m\"\nrenew-lead = \"10s\"\ntrust-proxy = true\n\
             allowed-origins = [\"http://a\", \"http://b\"]\nmax-channels-per-session = 3\n",
        );
        let c = parse(&["tokenpush", "--config", &p, "--renew-lead", "5s"]).unwrap();
        assert_eq!(c.access_ttl, Duration::from_secs(120));
        assert_eq!(c.renew_lead, Duration::from_secs(5), "flag beats file");
        assert!(c.trust_proxy);
        assert_eq!(c.allowed_origins, vec!["http://a", "http://b"]);
        assert_eq!(c.max_channels_per_session, 3);
        assert!(c.was_set("access_ttl") && c.was_set("renew_lead") && !c.was_set("grace"));
        let text = c.describe();
        assert!(text.contains("access-ttl = \"2m\"  # file"), "{text}");
        assert!(text.contains("renew-lead = \"5s\"  # flag"), "{text}");
        assert!(text.contains("grace = \"30s\"  # default"), "{text}");
    }

    #[test]
    fn unknown_key_and_bad_value_are_named() {
        let (_d, p) = file("acess-ttl = \"2m\"\n");
        let e = parse(&["tokenpush", "--config", &p]).unwrap_err();
        assert!(e.contains("unknown key `acess-ttl`"), "{e}");
        let (_d, p) = file("access-ttl = \"soon\"\n");
        let e = parse(&["tokenpush", "--config", &p]).unwrap_err();
        assert!(e.contains("--access-ttl") && e.contains("soon"), "{e}");
        let (_d, p) = file("trust-proxy = \"yes\"\n");
        let e = parse(&["tokenpush", "--config", &p]).unwrap_err();
        assert!(e.contains("`trust-proxy`"), "{e}");
    }

    #[test]
    fn validate_refuses_lead_over_ttl_and_redis_without_issuer() {
        let c = parse(&["tokenpush", "--access-ttl", "30s"]).unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("--renew-lead") && e.contains("--access-ttl") && e.contains("e.g."),
            "{e}"
        );
        let c = parse(&["tokenpush", "--store", "redis://:pw@127.0.0.1:6379/0"]).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("--issuer") && !e.contains("pw"), "{e}");
        let c = parse(&["tokenpush", "--store", "redis://x", "--issuer", "https://a"]).unwrap();
        c.validate().unwrap();
        assert_eq!(mask_url("redis://u:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(
            mask_url("http://u:p@h/check?token=s3cret&x&y=1"),
            "http://***@h/check?token=***&x&y=***"
        );
        assert_eq!(
            mask_url("http://h/check?token=s3cret"),
            "http://h/check?token=***"
        );
        assert_eq!(mask_url("sqlite"), "sqlite");
    }

    #[test]
    fn origins_lose_a_trailing_slash_at_startup() {
        let c = parse(&[
            "tokenpush",
            "--allowed-origins",
            "https://b.example/,http://a,*",
        ])
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            vec!["https://b.example", "http://a", "*"]
        );
    }
}

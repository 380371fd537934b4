//! The `tokenpush` binary: parses the CLI, sets up logging, and serves (or hashes a password).

use std::io::Read;
use std::process::ExitCode;

use tokenpush::config::{Cli, Command, Config, ConfigAction, KeysAction, Signing};
use tokenpush::Server;

fn main() -> ExitCode {
    let cli = Cli::parse_with_sources();
    match cli.command {
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Keys {
            action: KeysAction::Rotate { data_dir },
        }) => rotate_keys(&data_dir.unwrap_or(cli.config.data_dir), cli.config.signing),
        Some(Command::DemoUsers { reset, data_dir }) => {
            demo_users(&data_dir.unwrap_or(cli.config.data_dir), reset)
        }
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => config_check(cli.config),
        Some(Command::Serve) | None => serve(cli.config),
    }
}

/// `tokenpush keys rotate`.
fn rotate_keys(data_dir: &std::path::Path, signing: Signing) -> ExitCode {
    if signing == Signing::Hs256 {
        // An Ed25519 key file would be written and never used: say what rotation means here.
        eprintln!(
            "tokenpush keys rotate: HS256 keeps one secret (--hs256-secret-file); changing it \
             needs a restart and refuses every access token signed with the old one"
        );
        return ExitCode::FAILURE;
    }
    match tokenpush::tokens::keys::rotate_ed25519(data_dir) {
        Ok(kid) => {
            println!(
                "new signing key {kid} in {}; running servers use it within {} s (at once on SIGHUP); the old key verifies until its tokens expire",
                data_dir.display(),
                tokenpush::service::KEY_RELOAD_EVERY.as_secs()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenpush keys rotate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tokenpush config check`: the same validation `serve` does, including that the files it
/// names can be read, then the effective settings.
fn config_check(mut config: Config) -> ExitCode {
    config.apply_demo_defaults();
    if let Err(e) = config.validate() {
        eprintln!("tokenpush: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &config.users {
        if let Err(e) = tokenpush::users::Directory::load(path) {
            eprintln!("tokenpush: users: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &config.service_key_file {
        if let Err(e) = tokenpush::tokens::keys::service_key(path) {
            eprintln!("tokenpush: service-key-file: {e}");
            return ExitCode::FAILURE;
        }
    }
    let private = [("hs256-secret-file", &config.hs256_secret_file)];
    for (key, path) in private {
        if let Some(path) = path {
            if let Err(e) = tokenpush::tokens::keys::read_private(path) {
                eprintln!("tokenpush: {key}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &config.config {
        println!("# {} is valid; effective settings:", path.display());
    } else {
        println!("# valid; effective settings:");
    }
    print!("{}", config.describe());
    ExitCode::SUCCESS
}

fn demo_users(data_dir: &std::path::Path, reset: bool) -> ExitCode {
    let result =
        if reset {
            tokenpush::users::Directory::reset_demo(data_dir).map(|_| ())
        } else {
            let path = data_dir.join(tokenpush::users::DEMO_USERS_FILE);
            println!(
            "demo users alice (admin) and bob: {} ({}); `demo-users --reset` prints new passwords",
            path.display(),
            if path.exists() { "exists" } else { "created at the next start" }
        );
            Ok(())
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenpush: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("could not read a password from stdin");
        return ExitCode::FAILURE;
    }
    let password = input.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("empty password");
        return ExitCode::FAILURE;
    }
    println!("{}", tokenpush::users::hash_password(password));
    ExitCode::SUCCESS
}

#[tokio::main]
async fn serve(mut config: Config) -> ExitCode {
    // Everything the server creates (data dir, keys, the SQLite file and its -wal/-shm, demo
    // users) is the server's alone: 0700 directories, 0600 files, whatever the shell's umask.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    init_logging();
    if config.apply_demo_defaults() {
        println!(
            "demo mode: access tokens last {}, renewed {} (+ up to {} jitter) before expiry; any --access-ttl / --renew-lead / --renew-jitter you set wins",
            humantime::format_duration(config.access_ttl),
            humantime::format_duration(config.renew_lead),
            humantime::format_duration(config.renew_jitter()),
        );
    }
    if let Err(e) = config.validate() {
        eprintln!("tokenpush: {e}");
        return ExitCode::FAILURE;
    }
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tokenpush: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts read this line to find the port.
    println!("tokenpush listening on http://{}", server.local_addr());
    match server.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenpush: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs at `RUST_LOG` (default `info`), but never below `info` for other crates, whatever
/// `RUST_LOG` says: at debug and trace, tungstenite, hyper, reqwest, redis and the like log
/// whole frames, URIs and bodies, which carry tokens, tickets and passwords.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let ours = |target: &str| target == "tokenpush" || target.starts_with("tokenpush::");
    let cap = filter_fn(move |m| *m.level() <= tracing::Level::INFO || ours(m.target()));
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with(
            tracing_subscriber::fmt::layer()
                // Colour codes only for a person at a terminal, never in a log file.
                .with_ansi(std::io::stdout().is_terminal())
                .with_filter(cap),
        )
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! The `tokenpush` binary: parses the CLI, sets up logging, and serves (or hashes a password).

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use tokenpush::config::{Cli, Command, Config};
use tokenpush::Server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Serve) | None => serve(cli.config),
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
async fn serve(config: Config) -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

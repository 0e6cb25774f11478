//! The livehub binary: configuration, tracing, bind, serve; or, with
//! `livehub token`, print a token and exit.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use livehub::auth::DevTokens;
use livehub::config::{Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = livehub::Config::parse();
    if let Some(Command::Token(request)) = &config.command {
        // Only the token on standard output, so `TOKEN=$(livehub token ...)`
        // works; exit code 2, as clap's for a usage error, when it cannot.
        return Ok(match livehub::auth::sign_token(&config.auth, request) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        });
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,surrealdb=warn"));
    match config.log_format {
        // Colours for a terminal only: a file or a pipe gets plain text.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(filter)
            .init(),
        // One JSON object per line, with the request's span fields.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init(),
    }
    let listener =
        livehub::listen(config.addr).map_err(|error| cannot_listen(config.addr, &error))?;
    let address = listener.local_addr()?;
    let data = config.data_location();
    let server = livehub::Server::build(config).await?;
    tracing::info!("livehub listening on http://{address}");
    tracing::info!("{data}");
    if let Some(tokens) = server.dev_tokens() {
        // On standard output, not in the log: it is meant for the person at
        // the terminal, and logs are for machines.
        println!("{}", banner(tokens, address));
    }
    server.serve(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Why the listener could not be bound, naming the setting to change.
fn cannot_listen(addr: SocketAddr, error: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let why = match error.kind() {
        ErrorKind::AddrInUse => {
            let mut other = addr;
            other.set_port(addr.port().checked_add(1).unwrap_or(8000));
            format!(
                "address already in use; is another livehub running? \
                 pick another port with --addr {other}"
            )
        }
        ErrorKind::AddrNotAvailable => "no interface of this machine has that address; \
             use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
            .to_owned(),
        ErrorKind::PermissionDenied => {
            let mut other = addr;
            other.set_port(8000);
            format!(
                "permission denied (ports below 1024 need privileges); \
                 pick another port with --addr {other}"
            )
        }
        _ => error.to_string(),
    };
    anyhow::anyhow!("cannot listen on {addr} (--addr / LIVEHUB_ADDR): {why}")
}

/// What a run without a configured key prints: its tokens, as lines to
/// paste into a shell, and how to sign tokens with a secret instead.
fn banner(tokens: &DevTokens, address: SocketAddr) -> String {
    // No `# comment` after the exports: zsh, by default, would pass it to
    // `export` as more names.
    format!(
        "\nNo --jwt-secret or --jwt-public-key set: this run signs its own tokens with a random secret,\n\
         valid until this process stops (24h at most). Paste these into the terminals you try it from\n\
         (TOKEN is an admin's; ANN_TOKEN a user's, sub \"ann\", name \"Ann\"):\n\n    \
         export TOKEN={admin}\n    \
         export ANN_TOKEN={user}\n\n\
         Try: curl -H \"Authorization: Bearer $TOKEN\" http://{address}/api/v1/collections\n\n\
         To sign tokens yourself, start livehub with a secret of your own (32 bytes or more)\n\
         and sign with the same one:\n\n    \
         export LIVEHUB_JWT_SECRET=$(openssl rand -hex 32)\n    \
         livehub token --sub bob --name Bob --ttl 1h\n",
        admin = tokens.admin,
        user = tokens.user,
    )
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

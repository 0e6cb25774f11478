//! The livehub binary: configuration, tracing, bind, serve.

use anyhow::Context;
use clap::Parser;
use livehub::config::LogFormat;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = livehub::Config::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,surrealdb=warn"));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        // One JSON object per line, with the request's span fields.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init(),
    }
    let listener =
        livehub::listen(config.addr).with_context(|| format!("binding {}", config.addr))?;
    let address = listener.local_addr()?;
    let server = livehub::Server::build(config).await?;
    tracing::info!("livehub listening on http://{address}");
    if let Some(token) = server.dev_token() {
        // On standard output, not in the log: it is meant for the person at
        // the terminal, and logs are for machines.
        println!(
            "\nNo --jwt-secret or --jwt-public-key set: this run signs its own tokens with a random secret.\n\
             Admin token for local use (valid 24h, until this process stops):\n\n    {token}\n\n\
             Try: curl -H \"Authorization: Bearer {token}\" http://{address}/api/v1/collections\n"
        );
    }
    server.serve(listener, shutdown_signal()).await
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

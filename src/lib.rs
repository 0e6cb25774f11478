//! livehub streams SurrealDB changes to HTTP clients as Server-Sent Events.
//!
//! This crate is the HTTP side: flags, tokens, proxies, the front that
//! serves streams on fresh connections, and one route module per resource.
//! What a stream is, and everything that knows SurrealDB, is the engine
//! (the `livehub-engine` crate, re-exported as [`engine`]).
//!
//! Layout (ARCHITECTURE.md has the map and the rules):
//!
//! * [`config`]: flags and environment, and the engine's [`engine::Settings`].
//! * [`auth`]: verifying tokens; [`proxies`]: whose `X-Forwarded-For` counts.
//! * `front`: the listener that serves streams itself.
//! * `routes`: the HTTP API, one module per resource.
//! * `error`: the one place engine errors become HTTP statuses, and the
//!   JSON shape of every error.
//! * `metrics`: `/metrics` and the admin's stats.

pub mod auth;
pub mod config;
mod error;
mod front;
mod metrics;
pub mod proxies;
mod routes;

/// The streaming core (the `livehub-engine` crate of this workspace).
pub use livehub_engine as engine;

// The engine's modules under their own names, as the HTTP side reads them.
use livehub_engine::{
    access, channels, clock, collection, connections, event, fields, filter, hub, identity, limits,
    pages, presence, revocations, rules, session, shape, sort, store,
};

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use config::Config;
pub use front::listen;

use crate::auth::Authenticator;
use crate::engine::Engine;

/// What every handler can reach. Cloning is one reference count: axum
/// clones the state for every extractor of every request, and a clone of
/// each service (a dozen counts, several shared by every request) cost 3%
/// of a loaded node's CPU.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`]: the engine (whose parts a handler
/// reaches as `state.store`, `state.hub`, through `Deref`) and what only
/// HTTP needs.
pub struct Services {
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Verifies tokens.
    pub auth: Arc<Authenticator>,
    /// Counters for `/metrics` and `/api/v1/stats`.
    pub metrics: Arc<metrics::Metrics>,
}

impl std::ops::Deref for Services {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// A server that has connected to its database and is ready to serve.
pub struct Server {
    state: AppState,
    /// Built (and checked) once, at start.
    cors: Option<tower_http::cors::CorsLayer>,
    dev_tokens: Option<auth::DevTokens>,
    /// The engine's feed and the rest, started by `serve`.
    background: engine::Background,
}

impl Server {
    /// Connects to the database and prepares the hub.
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        // SurrealDB reads process statistics with `sysinfo`, which by default
        // keeps a `/proc` file open for every process on the machine, up to
        // half the open-files limit: file descriptors a stream needs (a node
        // at the limit could not accept its last thousands of streams).
        sysinfo::set_open_files_limit(0);
        let (auth, dev_tokens) = Authenticator::from_settings(&config.auth)?;
        // Built here so a bad setting stops the start.
        let cors = routes::cors_layer(&config)?;
        let (engine, background) = Engine::open(config.engine_settings()).await?;
        Ok(Server {
            background,
            cors,
            state: AppState(Arc::new(Services {
                auth: Arc::new(auth),
                metrics: Arc::new(metrics::Metrics::new(engine.metrics.clone())),
                engine,
                config: Arc::new(config),
            })),
            dev_tokens,
        })
    }

    /// With no key configured: an admin token signed with this run's random
    /// secret, for local use.
    pub fn dev_token(&self) -> Option<&str> {
        self.dev_tokens.as_ref().map(|tokens| tokens.admin.as_str())
    }

    /// With no key configured: an admin's and a user's token signed with
    /// this run's random secret (what the binary prints at start).
    pub fn dev_tokens(&self) -> Option<&auth::DevTokens> {
        self.dev_tokens.as_ref()
    }

    /// The state handlers see (tests use its store to write as an outside
    /// client would).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` resolves, then ends every open
    /// stream and returns once connections have closed (or the grace period
    /// has passed).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let config = state.config.clone();
        let token = state.shutdown.clone();
        let running = self.background.start();
        // Samples the hub's counters once a second, for events-per-second.
        let sampler = {
            let (metrics, hub, stop) = (state.metrics.clone(), state.hub.clone(), token.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => metrics.sample(hub.stats()),
                    }
                }
            })
        };
        let router = routes::router(state, self.cors);
        let stop = token.clone();
        // Streams opened on a fresh connection are served by the front
        // itself; hyper gets every other connection.
        let front = front::Front::new(
            listener,
            router.clone(),
            config.write_timeout,
            token.clone(),
        )?;
        let front_tasks = front.tasks();
        // `tap_io` gives the connections their peer address as `ConnectInfo`.
        let listener = front.tap_io(|_| {});
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: ending open streams");
            stop.cancel();
        });
        // Done when hyper's connections and the front's have all ended.
        let served = async {
            let result = server.await.context("serving HTTP");
            front_tasks.close();
            front_tasks.wait().await;
            result
        };
        tokio::pin!(served);
        // Streams end at once on cancellation; the grace period bounds the
        // wait for anything else (a slow request, a stuck client).
        let result = tokio::select! {
            result = &mut served => result,
            _ = async { token.cancelled().await; tokio::time::sleep(config.shutdown_grace).await } => {
                tracing::warn!("connections still open after the grace period; exiting anyway");
                Ok(())
            }
        };
        sampler.abort();
        running.stop(config.shutdown_grace).await;
        result
    }
}

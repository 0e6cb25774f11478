//! livehub streams SurrealDB changes to HTTP clients as Server-Sent Events.
//!
//! A write (through the REST API, or by any SurrealDB client) commits to a
//! table with a changefeed; one feed per node tails the changefeed and turns
//! each change into an [`event::Event`] with a durable id; the hub fans it
//! out to the subscriptions whose collection and filter match; each
//! subscription's stream writes it to its client. A client that reconnects
//! with `Last-Event-ID` has the gap replayed from the changefeed first.
//!
//! Layout, in reading order (ARCHITECTURE.md has the map and the rules):
//!
//! * [`config`]: flags and environment.
//! * [`clock`]: changefeed stamps and times.
//! * [`identity`]: who is calling; [`auth`]: verifying tokens.
//! * [`collection`]: collection names, record keys and metadata.
//! * [`event`]: events, their audiences, ids and SSE encoding.
//! * [`store`]: the only SurrealQL: collections, records, changefeed reads.
//! * [`feed`]: the changefeed tailer and its watermark; `peers`: the
//!   other nodes' low stamps, so writes cross nodes without the settle
//!   window.
//! * [`hub`]: fan-out to subscriptions, grouped and indexed by filter;
//!   [`rulebook`]: every collection's rules as of the hub's cursor;
//!   [`revocations`]: sign-outs.
//! * [`session`]: one open stream: replay, then live events.
//! * [`filter`]: the filter language; [`rules`]: access rules;
//!   [`limits`]: limits on open streams.
//! * [`routes`]: the HTTP API, one module per resource.
//! * [`error`]: API errors and their JSON shape.

mod access;
pub mod auth;
mod channels;
pub mod clock;
pub mod collection;
pub mod config;
mod connections;
mod error;
pub mod event;
mod feed;
mod fields;
mod front;
mod peers;
/// The filter language (the `livehub-filter` crate of this workspace).
pub use livehub_filter as filter;
pub mod hub;
pub mod identity;
mod limits;
mod metrics;
mod pages;
mod presence;
pub mod proxies;
mod revocations;
mod routes;
mod rulebook;
pub mod rules;
mod session;
mod shape;
mod sort;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use front::listen;

use crate::auth::Authenticator;
use crate::feed::Feed;
use crate::hub::Hub;
use crate::limits::StreamLimits;
use crate::rulebook::RuleBook;
use crate::store::{Store, WriteTracker};

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

/// The services behind [`AppState`].
pub struct Services {
    pub store: Store,
    pub hub: Hub,
    pub config: Arc<Config>,
    /// Cancelled on shutdown: every open stream ends.
    pub shutdown: CancellationToken,
    /// Bounds how many streams read replays from the database at once.
    pub replays: Arc<tokio::sync::Semaphore>,
    /// Verifies tokens.
    pub auth: Arc<Authenticator>,
    /// Limits on open streams.
    pub limits: Arc<StreamLimits>,
    /// Counters for `/metrics` and `/api/v1/stats`.
    pub metrics: Arc<metrics::Metrics>,
    /// Who is online: streams count their user here.
    pub presence: presence::Presence,
    /// Who may see presence (`--presence-rule`, parsed once).
    pub presence_rule: presence::PresenceRule,
    /// Who may read and publish to which channels.
    pub channels: Arc<channels::ChannelRules>,
    /// How fast each publisher may publish to channels.
    pub publish_rate: Arc<channels::PublishRate>,
    /// This node's open streams that their clients may change.
    pub connections: connections::Connections,
}

/// A server that has connected to its database and is ready to serve.
pub struct Server {
    state: AppState,
    /// Built (and checked) once, at start.
    cors: Option<tower_http::cors::CorsLayer>,
    dev_token: Option<String>,
    presence_task: tokio::task::JoinHandle<()>,
    /// The other nodes on the same database server (none when embedded).
    peers: Option<peers::Peers>,
}

impl Server {
    /// Connects to the database and prepares the hub.
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        // SurrealDB reads process statistics with `sysinfo`, which by default
        // keeps a `/proc` file open for every process on the machine, up to
        // half the open-files limit: file descriptors a stream needs (a node
        // at the limit could not accept its last thousands of streams).
        sysinfo::set_open_files_limit(0);
        let (auth, dev_token) = Authenticator::from_settings(&config.auth)?;
        // Built here so a bad setting stops the start.
        let cors = routes::cors_layer(&config)?;
        let presence_rule = presence::PresenceRule::parse(&config.presence_rule)
            .map_err(|error| anyhow::anyhow!("--presence-rule: {error}"))?;
        let store = Store::connect(&config, WriteTracker::new()).await?;
        // Before anything can write: see `peers`.
        let peers = if config.embedded_db() || config.settle_window() >= peers::USEFUL_BELOW {
            None
        } else {
            let peers = peers::Peers::join(store.clone(), config.share_interval);
            Some(
                peers
                    .await
                    .context("joining the nodes that share the database")?,
            )
        };
        // The feed starts at the present: older changes reach clients by replay.
        let start = store
            .writes()
            .watermark(config.settle_window())
            .max(store.epoch());
        let rules = RuleBook::at(&store, start).await?;
        let hub = Hub::new(start, rules);
        for sign_out in store.sign_outs().await? {
            hub.revocations().note(&sign_out);
        }
        let shutdown = CancellationToken::new();
        let (presence, presence_task) = presence::Presence::start(
            store.clone(),
            config.presence_grace,
            config.presence_ttl,
            shutdown.clone(),
        );
        let channel_rules = channels::ChannelRules::parse(&config.channel_rules)?;
        Ok(Server {
            presence_task,
            peers,
            cors,
            state: AppState(Arc::new(Services {
                presence,
                presence_rule,
                channels: Arc::new(channel_rules),
                publish_rate: Arc::new(channels::PublishRate::new(config.publish_rate)),
                connections: connections::Connections::default(),
                store,
                hub,
                replays: Arc::new(tokio::sync::Semaphore::new(config.max_replays as usize)),
                auth: Arc::new(auth),
                limits: StreamLimits::new(
                    config.max_streams,
                    config.max_streams_per_user,
                    config.max_streams_per_ip,
                ),
                metrics: Arc::new(metrics::Metrics::default()),
                config: Arc::new(config),
                shutdown,
            })),
            dev_token,
        })
    }

    /// With no key configured: an admin token signed with this run's random
    /// secret, for local use.
    pub fn dev_token(&self) -> Option<&str> {
        self.dev_token.as_deref()
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
        let mut feed = tokio::spawn(supervise(
            Feed {
                store: state.store.clone(),
                hub: state.hub.clone(),
                poll_interval: config.poll_interval,
                settle: config.settle_window(),
                peers: self.peers.clone(),
            },
            token.clone(),
        ));
        // A server can go away: writes then fail at once (see `store::health`).
        let health = (!config.embedded_db())
            .then(|| tokio::spawn(state.store.clone().watch_health(token.clone())));
        // Stopped once nothing is served any more (writes may run until then).
        let stop_sharing = CancellationToken::new();
        let sharing = self
            .peers
            .map(|peers| tokio::spawn(peers.run(stop_sharing.clone())));
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
        // Streams end through the hub on shutdown (see `Hub::close`).
        let closing = {
            let (hub, stop) = (state.hub.clone(), token.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                hub.close();
            })
        };
        let router = routes::router(state, self.cors);
        let stop = token.clone();
        // Streams opened on a fresh connection are served by the front
        // itself; hyper gets every other connection.
        let listener = front::Front::new(
            listener,
            router.clone(),
            config.write_timeout,
            token.clone(),
        )?
        // `tap_io` gives the connections their peer address as `ConnectInfo`.
        .tap_io(|_| {});
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: ending open streams");
            stop.cancel();
        });
        let served = async { server.await.context("serving HTTP") };
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
        token.cancel();
        let _ = closing.await;
        sampler.abort();
        if let Some(health) = health {
            health.abort();
        }
        stop_sharing.cancel();
        // Present users leave now, rather than when their entries expire.
        let _ = tokio::time::timeout(config.shutdown_grace, self.presence_task).await;
        // The feed stops at its next await; a database read that hangs
        // must not keep the process alive.
        if tokio::time::timeout(config.shutdown_grace, &mut feed)
            .await
            .is_err()
        {
            feed.abort();
        }
        if let Some(sharing) = sharing {
            let _ = tokio::time::timeout(peers::SHARE_TTL * 2, sharing).await;
        }
        result
    }
}

/// Runs the feed until shutdown, restarting it (from the hub's cursor, so
/// nothing is skipped) if it ever panics: live delivery must not silently
/// stop while the server keeps answering.
async fn supervise(feed: Feed, shutdown: CancellationToken) {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match tokio::spawn(feed.clone().run(shutdown.clone())).await {
            Ok(()) => return,
            Err(error) if error.is_panic() => {
                tracing::error!(?backoff, "the feed panicked; restarting it from its cursor");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            Err(_) => return,
        }
    }
}

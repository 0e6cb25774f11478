//! livehub's streaming core, with no HTTP in it: the store (the only
//! SurrealQL), the changefeed tailer, the hub that fans events out, and the
//! streams that replay, go live and decide what each subscriber is sent.
//!
//! A write commits to a table with a changefeed; one [`feed::Feed`] per
//! node tails the changefeed and turns each change into an [`event::Event`]
//! with a durable id; the [`hub::Hub`] fans it out to the subscriptions
//! whose collection and filter match; each [`session::Session`] writes it
//! to its client, as SSE frames. A client that resumes from an event id has
//! the gap replayed from the changefeed first.
//!
//! The `livehub` crate turns HTTP requests into calls of this crate and
//! [`Error`]s into HTTP answers; this crate knows nothing of HTTP (its
//! `Cargo.toml` has no HTTP dependency, and CI checks that it stays so).
//!
//! Layout, in reading order (ARCHITECTURE.md has the map and the rules):
//!
//! * [`clock`]: changefeed stamps and times.
//! * [`identity`]: who is calling; [`rules`]: access rules;
//!   [`access`]: what a refusal says.
//! * [`collection`]: collection names, record keys and metadata.
//! * [`event`]: events, their audiences, ids and SSE encoding.
//! * [`store`]: the only SurrealQL: collections, records, changefeed reads.
//! * [`feed`]: the changefeed tailer; [`peers`]: the other nodes' low
//!   stamps, so writes cross nodes without the settle window.
//! * [`hub`]: fan-out to subscriptions, grouped and indexed by filter;
//!   [`rulebook`]: every collection's rules as of the hub's cursor;
//!   [`revocations`]: sign-outs.
//! * [`session`]: one open stream: replay, then live events;
//!   [`pages`]: change pages, the same events read on request.
//! * [`channels`], [`presence`], [`connections`], [`limits`]: the other
//!   things a stream takes part in.

pub mod access;
pub mod channels;
pub mod clock;
pub mod collection;
pub mod connections;
mod decide;
mod error;
pub mod event;
mod feed;
pub mod fields;
mod frame;
pub mod hub;
pub mod identity;
pub mod limits;
pub mod pages;
mod peers;
pub mod presence;
mod replay;
pub mod revocations;
mod rulebook;
pub mod rules;
pub mod session;
pub mod shape;
pub mod sort;
pub mod store;

/// The filter language (the `livehub-filter` crate of this workspace).
pub use livehub_filter as filter;

pub use error::Error;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelRules, PublishRate};
use crate::connections::Connections;
use crate::feed::Feed;
use crate::hub::Hub;
use crate::limits::StreamLimits;
use crate::presence::{Presence, PresenceRule};
use crate::rulebook::RuleBook;
use crate::store::{Database, Store, WriteTracker};

/// Everything the engine is set up with (the `livehub` crate builds it
/// from its flags).
#[derive(Clone, Debug)]
pub struct Settings {
    pub database: Database,
    pub streams: StreamSettings,
    /// How often the feed polls the changefeed for other writers' changes.
    pub poll_interval: Duration,
    /// How often this node shares its low stamp with the others (a
    /// database server with a settle window under [`peers::USEFUL_BELOW`]).
    pub share_interval: Duration,
    /// Streams that may read their replay from the database at once.
    pub max_replays: usize,
    pub max_streams: usize,
    pub max_streams_per_user: usize,
    pub max_streams_per_ip: usize,
    pub presence_grace: Duration,
    pub presence_ttl: Duration,
    /// Who may see presence (the `--presence-rule` syntax).
    pub presence_rule: String,
    /// Channel rules as JSON (the `--channel-rules` syntax).
    pub channel_rules: String,
    /// Messages per second per publisher (0: no limit).
    pub publish_rate: u32,
}

/// What each stream is set up with.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Between heartbeat comments on an idle stream.
    pub heartbeat: Duration,
    /// The reconnect delay a stream suggests in its `retry:` field.
    pub retry: Duration,
    /// Events, and bytes of events, queued for a stream before its client
    /// counts as too slow and is disconnected.
    pub buffer_events: usize,
    pub buffer_bytes: usize,
    /// Most records in one snapshot.
    pub max_snapshot: u64,
    /// The feed's settle window: how long it waits before delivering a
    /// change it did not write (a new stream drops what lies below it).
    pub settle: Duration,
}

/// Counts only a stream sees; `livehub` serves them at `/metrics`.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    /// Events sent to clients from a replay (resumes).
    pub replayed: Counter,
    /// Seconds from an event's commit to its being written to a stream.
    pub commit_to_send: Histogram,
}

impl Default for StreamMetrics {
    fn default() -> Self {
        StreamMetrics {
            replayed: Counter::default(),
            // 1 ms to about 16 s.
            commit_to_send: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

/// The engine of one node: cloning it is one reference count (every open
/// stream holds one).
#[derive(Clone)]
pub struct Engine(Arc<Parts>);

impl std::ops::Deref for Engine {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of an [`Engine`].
pub struct Parts {
    pub store: Store,
    pub hub: Hub,
    pub streams: StreamSettings,
    /// Cancelled on shutdown: every open stream ends.
    pub shutdown: CancellationToken,
    /// Bounds how many streams read replays from the database at once.
    pub replays: tokio::sync::Semaphore,
    /// Limits on open streams.
    pub limits: Arc<StreamLimits>,
    pub metrics: StreamMetrics,
    /// Who is online: streams count their user here.
    pub presence: Presence,
    /// Who may see presence (parsed once).
    pub presence_rule: PresenceRule,
    /// Who may read and publish to which channels.
    pub channels: ChannelRules,
    /// How fast each publisher may publish to channels.
    pub publish_rate: PublishRate,
    /// This node's open streams that their clients may change.
    pub connections: Connections,
}

/// The engine's background work, not yet started: the feed, the other
/// nodes and presence (see [`Background::start`]).
pub struct Background {
    engine: Engine,
    poll_interval: Duration,
    settle: Duration,
    embedded: bool,
    presence_task: JoinHandle<()>,
    /// The other nodes on the same database server (none when embedded).
    peers: Option<peers::Peers>,
}

impl Engine {
    /// Connects to the database and prepares the hub; nothing runs until
    /// [`Background::start`].
    pub async fn open(settings: Settings) -> anyhow::Result<(Engine, Background)> {
        let presence_rule = PresenceRule::parse(&settings.presence_rule)
            .map_err(|error| anyhow::anyhow!("--presence-rule: {error}"))?;
        let channels = ChannelRules::parse(&settings.channel_rules)?;
        let store = Store::connect(&settings.database, WriteTracker::new()).await?;
        let embedded = settings.database.is_embedded();
        let settle = settings.streams.settle;
        // Before anything can write: see `peers`.
        let peers = if embedded || settings.streams.settle >= peers::USEFUL_BELOW {
            None
        } else {
            let peers = peers::Peers::join(store.clone(), settings.share_interval);
            Some(
                peers
                    .await
                    .context("joining the nodes that share the database")?,
            )
        };
        // The feed starts at the present: older changes reach clients by replay.
        let start = store
            .writes()
            .watermark(settings.streams.settle)
            .max(store.epoch());
        let rules = RuleBook::at(&store, start).await?;
        let hub = Hub::new(start, rules);
        for sign_out in store.sign_outs().await? {
            hub.revocations().note(&sign_out);
        }
        let shutdown = CancellationToken::new();
        let (presence, presence_task) = Presence::start(
            store.clone(),
            settings.presence_grace,
            settings.presence_ttl,
            shutdown.clone(),
        );
        let engine = Engine(Arc::new(Parts {
            presence,
            presence_rule,
            channels,
            publish_rate: PublishRate::new(settings.publish_rate),
            connections: Connections::default(),
            store,
            hub,
            streams: settings.streams,
            replays: tokio::sync::Semaphore::new(settings.max_replays),
            limits: StreamLimits::new(
                settings.max_streams,
                settings.max_streams_per_user,
                settings.max_streams_per_ip,
            ),
            metrics: StreamMetrics::default(),
            shutdown,
        }));
        let background = Background {
            engine: engine.clone(),
            poll_interval: settings.poll_interval,
            settle,
            embedded,
            presence_task,
            peers,
        };
        Ok((engine, background))
    }
}

/// The engine's background tasks while they run (see [`Running::stop`]).
pub struct Running {
    engine: Engine,
    feed: JoinHandle<()>,
    health: Option<JoinHandle<()>>,
    closing: JoinHandle<()>,
    presence_task: JoinHandle<()>,
    stop_sharing: CancellationToken,
    sharing: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts the feed, the database health watch, sharing with the other
    /// nodes, and the end of every stream on shutdown.
    pub fn start(self) -> Running {
        let engine = self.engine;
        let token = engine.shutdown.clone();
        let feed = tokio::spawn(supervise(
            Feed {
                store: engine.store.clone(),
                hub: engine.hub.clone(),
                poll_interval: self.poll_interval,
                settle: self.settle,
                peers: self.peers.clone(),
            },
            token.clone(),
        ));
        // A server can go away: writes then fail at once (see `store::health`).
        let health = (!self.embedded)
            .then(|| tokio::spawn(engine.store.clone().watch_health(token.clone())));
        // Stopped once nothing is served any more (writes may run until then).
        let stop_sharing = CancellationToken::new();
        let sharing = self
            .peers
            .map(|peers| tokio::spawn(peers.run(stop_sharing.clone())));
        // Streams end through the hub on shutdown (see `Hub::close`).
        let closing = {
            let (hub, stop) = (engine.hub.clone(), token.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                hub.close();
            })
        };
        Running {
            engine,
            feed,
            health,
            closing,
            presence_task: self.presence_task,
            stop_sharing,
            sharing,
        }
    }
}

impl Running {
    /// Ends every stream, then stops the background tasks, waiting at most
    /// `grace` for each (a database read that hangs must not keep the
    /// process alive).
    pub async fn stop(mut self, grace: Duration) {
        self.engine.shutdown.cancel();
        let _ = self.closing.await;
        if let Some(health) = self.health {
            health.abort();
        }
        // Present users are handed over (they leave after the presence
        // grace period unless they come back elsewhere); a write, so
        // before the node leaves the others sharing the database.
        let _ = tokio::time::timeout(grace, self.presence_task).await;
        self.stop_sharing.cancel();
        // The feed stops at its next await.
        if tokio::time::timeout(grace, &mut self.feed).await.is_err() {
            self.feed.abort();
        }
        if let Some(sharing) = self.sharing {
            let _ = tokio::time::timeout(peers::LEASE_TTL * 8, sharing).await;
        }
    }
}

/// Runs the feed until shutdown, restarting it (from the hub's cursor, so
/// nothing is skipped) if it ever panics: live delivery must not silently
/// stop while the server keeps answering.
async fn supervise(feed: Feed, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match tokio::spawn(feed.clone().run(shutdown.clone())).await {
            Ok(()) => return,
            Err(error) if error.is_panic() => {
                tracing::error!(?backoff, "the feed panicked; restarting it from its cursor");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(_) => return,
        }
    }
}

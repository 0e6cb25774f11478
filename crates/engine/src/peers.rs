//! Nodes sharing one database tell each other how far their writes are
//! committed, so that a write through one node reaches the streams of the
//! others without waiting for the settle window.
//!
//! A node's feed may read up to its watermark: below every write it has in
//! flight (see `feed`). Another node's writes are invisible to that
//! tracker, which is what the settle window (`--settle`) guards against.
//! With peers, every node publishes its *low stamp*, `min(start of its
//! writes in flight, its clock)`, every `--share-interval` and whenever
//! one of its writes completes (one publication at a time), and the feed
//! also stays below the lowest low stamp of the other live nodes. That
//! bound is sound:
//!
//! * a low stamp stays true: the writes in flight started at or after it,
//!   and every later write starts after it was taken;
//! * the feed takes its own watermark (and so its clock) *before* reading
//!   the others' rows, and a node publishes its first row before it
//!   serves: a node whose row the read did not see starts its writes after
//!   that clock reading.
//!
//! A node that dies stops refreshing its row, which expires after
//! [`SHARE_TTL`]; until then the others hold back at its last low stamp. A
//! node that stops cleanly deletes its row. Writers that are not livehub
//! nodes publish nothing: they still need the settle window, so the speed
//! up is for deployments where only livehub writes (`--settle 0`), and
//! nodes share only when the window is short ([`USEFUL_BELOW`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Stamp;
use crate::store::{Store, StoreError};

/// Nodes share low stamps only with a settle window shorter than this:
/// with a longer one, every change waits longer for the window than it
/// would for the others' low stamps, and each share is a write to the
/// database (100 a second per node at the default interval; two idle
/// nodes sharing cost a debug-built server a quarter of a core here).
pub(crate) const USEFUL_BELOW: Duration = Duration::from_millis(100);

/// How long a node's row outlives its last refresh: how long a dead node
/// can hold the others back. Short, since the row says little about a
/// dead node: a write it had in flight is committed or not by the server
/// within moments of the connection closing.
pub(crate) const SHARE_TTL: Duration = Duration::from_secs(3);

/// This node's place among the nodes sharing the database. Cloning is
/// shallow.
#[derive(Clone)]
pub(crate) struct Peers {
    store: Store,
    node: Arc<str>,
    interval: Duration,
}

impl Peers {
    /// Joins the nodes sharing `store`'s database: publishes this node's
    /// first low stamp, so that no write of this node can start before the
    /// others know of it.
    pub(crate) async fn join(store: Store, interval: Duration) -> Result<Peers, StoreError> {
        let peers = Peers {
            node: store.node().clone(),
            store,
            interval,
        };
        peers.publish().await?;
        Ok(peers)
    }

    /// How long the feed waits to look again when the others held it back.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    async fn publish(&self) -> Result<(), StoreError> {
        let low = self.store.writes().watermark(Duration::ZERO);
        self.store.share_low_stamp(&self.node, low, SHARE_TTL).await
    }

    /// The lowest low stamp of the other live nodes (none if this node is
    /// alone). Read *after* the feed takes its own watermark.
    pub(crate) async fn low_stamp(&self) -> Result<Option<Stamp>, StoreError> {
        self.store.peers_low_stamp(&self.node).await
    }

    /// Publishes this node's low stamp every interval until `stop` (which
    /// comes when the node no longer serves), then deletes its row once its
    /// last writes have finished.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let shutdown = stop;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            // On every tick, and as soon as a write completes: the others
            // deliver that write once they read a low stamp above it.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.store.writes().completed_for_peers() => {}
            }
            let published = tokio::select! {
                _ = shutdown.cancelled() => break,
                published = self.publish() => published,
            };
            match published {
                Ok(()) if failing => {
                    tracing::info!("sharing this node's low stamp works again");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    tracing::warn!(%error, "sharing this node's low stamp failed; other nodes hold back until it works");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        // A write still running may commit below the last low stamp: keep
        // the row (refreshed) until none is left, or let it expire.
        let deadline = tokio::time::Instant::now() + SHARE_TTL;
        while !self.store.writes().is_idle() {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            let _ = self.publish().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let goodbye = self.store.forget_node(&self.node);
        if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(2), goodbye).await {
            tracing::warn!(%error, "could not remove this node's row; it expires by itself");
        }
    }
}

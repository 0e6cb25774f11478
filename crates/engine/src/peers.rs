//! Nodes sharing one database tell each other how far their writes are
//! committed, so that a write through one node reaches the streams of the
//! others without waiting for the settle window.
//!
//! A node's feed may read up to its watermark: below every write it has in
//! flight (see `feed`). Another node's writes are invisible to that
//! tracker, which is what the settle window (`--settle`) guards against.
//! With peers, every node keeps a row that is one of:
//!
//! * *held*: a low stamp, `min(start of its writes in flight, its clock)`,
//!   refreshed every `--share-interval` and whenever one of its writes
//!   completes (one publication at a time), valid for [`LEASE_TTL`];
//! * *idle*: no write in flight, and none until the row is held again. A
//!   node goes idle after [`IDLE_AFTER`] without a write, and a write on
//!   an idle node first publishes a held row and waits for it.
//!
//! The feed also stays below the lowest low stamp of the others' held rows
//! that have not run out. That bound is sound:
//!
//! * a low stamp stays true: the writes in flight started at or after it,
//!   and every later write starts after it was taken;
//! * the feed takes its own watermark (and so its clock) *before* reading
//!   the others' rows. A node whose held row the read did not see (idle,
//!   new, or gone) starts its next write only once a held row is
//!   committed, so after that read and after that clock reading;
//! * a write starts only while its node's held row has a margin left to
//!   run (`LEASE_MARGIN`), and the node refreshes it every
//!   interval: the row runs out under a write in flight only if the
//!   database did not answer this node for that long (it says so in a
//!   warning, and the others' audit counts what they then got late).
//!
//! So an idle node holds nobody back, and a node that dies while writing
//! holds the others back until its row runs out: [`LEASE_TTL`], not the
//! seconds a timer-driven row needed. A node that stops cleanly deletes
//! its row. Writers that are not livehub nodes publish nothing: they still
//! need the settle window, so the speed up is for deployments where only
//! livehub writes (`--settle 0`), and nodes share only when the window is
//! short ([`USEFUL_BELOW`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Stamp;
pub(crate) use crate::store::LEASE_TTL;
use crate::store::{Store, StoreError};

/// Nodes share low stamps only with a settle window shorter than this:
/// with a longer one, every change waits longer for the window than it
/// would for the others' low stamps, and each share is a write to the
/// database (100 a second per writing node at the default interval).
pub(crate) const USEFUL_BELOW: Duration = Duration::from_millis(100);

/// How long a node goes without a write before its row says idle. Short,
/// since a held row of a node that is not writing still holds the others
/// back by up to an interval; not shorter, since the first write after it
/// waits for a held row to be published.
pub(crate) const IDLE_AFTER: Duration = Duration::from_millis(50);

/// This node's place among the nodes sharing the database. Cloning is
/// shallow.
#[derive(Clone)]
pub(crate) struct Peers {
    store: Store,
    node: Arc<str>,
    interval: Duration,
}

impl Peers {
    /// Joins the nodes sharing `store`'s database: from now on no write of
    /// this node starts before the others can know of it.
    pub(crate) async fn join(store: Store, interval: Duration) -> Result<Peers, StoreError> {
        store.join_peers().await?;
        Ok(Peers {
            node: store.node().clone(),
            store,
            interval,
        })
    }

    /// How long the feed waits to look again when the others held it back.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// The lowest low stamp of the other nodes (none if none holds one).
    /// Read *after* the feed takes its own watermark.
    pub(crate) async fn low_stamp(&self) -> Result<Option<Stamp>, StoreError> {
        self.store.peers_low_stamp(&self.node).await
    }

    /// Refreshes this node's row every interval, and as soon as a write
    /// completes, until `stop` (which comes when the node no longer
    /// serves); then removes it once its last writes have finished.
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
                published = self.store.refresh_row(IDLE_AFTER) => published,
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
        // the row (refreshed) until none is left, or let it run out.
        let deadline = tokio::time::Instant::now() + LEASE_TTL * 4;
        loop {
            match self.store.leave_peers().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not remove this node's row; it runs out by itself");
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            let _ = self.store.refresh_row(Duration::MAX).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

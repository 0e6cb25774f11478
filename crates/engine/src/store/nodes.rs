//! The nodes sharing this database, and how far each one's writes are
//! committed: each node keeps a row that is either *held* (a low stamp: no
//! write of its still to commit has a lower stamp; and an expiry) or
//! *idle* (nothing in flight, and no write before the row says otherwise),
//! so that the others may deliver its writes without waiting for the
//! settle window (see `peers`).
//!
//! Every publication of this node's row takes one lock, so the row the
//! others read is always the last one this node decided on.

use std::time::Duration;

use super::schema::NODES_TABLE;
use super::tracker::WriteGuard;
use super::{Store, StoreError};
use crate::clock::unix_ms_now;

/// How long a held row outlives its last refresh: how long a node that
/// dies while writing holds the others back. A node refreshes it every
/// `--share-interval` (10 ms by default), so it runs out only for a node
/// that is gone or cannot reach the database; and a write starts only
/// while the row has `LEASE_MARGIN` left.
pub(crate) const LEASE_TTL: Duration = Duration::from_millis(400);

/// Idle rows of nodes gone this long are removed when a node joins.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);

/// How many times a write tries to publish a held row before giving up
/// (each try that came back too late to write under).
const LEASE_TRIES: u32 = 3;

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Joins the nodes sharing the database: from now on a write first
    /// publishes a held row. Publishes an idle row, and removes the rows
    /// of nodes long gone.
    pub(crate) async fn join_peers(&self) -> Result<(), StoreError> {
        let _turn = self.publishing.lock().await;
        self.writes.share();
        self.db
            .query(format!(
                "DELETE {NODES_TABLE} WHERE expires < $before;
                 UPSERT type::record('{NODES_TABLE}', $node) SET low = NONE, expires = $now RETURN NONE"
            ))
            .bind(("before", unix_ms_now() - ms(FORGOTTEN_AFTER)))
            .bind(("node", self.node.to_string()))
            .bind(("now", unix_ms_now()))
            .await?
            .check()?;
        Ok(())
    }

    /// Registers a write about to start, first publishing a held row if
    /// this node's row is idle or about to run out.
    pub(super) async fn begin_write(&self) -> Result<WriteGuard, StoreError> {
        for _ in 0..LEASE_TRIES {
            if let Some(guard) = self.writes.try_begin() {
                return Ok(guard);
            }
            let _turn = self.publishing.lock().await;
            // Another write may have published one while this one waited.
            if let Some(guard) = self.writes.try_begin() {
                return Ok(guard);
            }
            self.publish_held().await?;
        }
        self.writes.try_begin().ok_or(StoreError::Unavailable)
    }

    /// Refreshes this node's row: held with its current low stamp, or idle
    /// once no write has been in flight for `quiet`; nothing if it is idle.
    pub(crate) async fn refresh_row(&self, quiet: Duration) -> Result<(), StoreError> {
        let _turn = self.publishing.lock().await;
        if self.writes.is_leased_idle() {
            return Ok(());
        }
        if self.writes.go_idle(quiet) {
            // Should this fail, the held row stays until it runs out:
            // the others wait longer, and the next write publishes again.
            return self.publish_idle().await;
        }
        self.publish_held().await
    }

    /// Removes this node's row, so that the others stop waiting for it,
    /// if no write is in flight (false if one is: try again).
    pub(crate) async fn leave_peers(&self) -> Result<bool, StoreError> {
        let _turn = self.publishing.lock().await;
        if !self.writes.is_idle() {
            return Ok(false);
        }
        // A write from now on publishes a held row again.
        self.writes.share();
        self.db
            .query(format!("DELETE type::record('{NODES_TABLE}', $node)"))
            .bind(("node", self.node.to_string()))
            .await?
            .check()?;
        Ok(true)
    }

    /// Publishes a held row with this node's low stamp (`min(start of its
    /// writes in flight, its clock)`). Called with `publishing` locked.
    async fn publish_held(&self) -> Result<(), StoreError> {
        let low = self.writes.watermark(Duration::ZERO);
        let until = unix_ms_now().saturating_add(ms(LEASE_TTL));
        self.db
            .query(format!(
                "UPSERT type::record('{NODES_TABLE}', $node) SET low = $low, expires = $until RETURN NONE"
            ))
            .bind(("node", self.node.to_string()))
            .bind(("low", low.0 as i64))
            .bind(("until", until))
            .await?
            .check()?;
        if let Some(lapsed) = self.writes.hold_lease(until) {
            tracing::warn!(
                lapsed_ms_ago = unix_ms_now() - lapsed,
                "this node's row ran out with writes in flight (the database was slow to answer); other nodes may deliver them late"
            );
        }
        Ok(())
    }

    /// Publishes an idle row. Called with `publishing` locked, after
    /// `go_idle`.
    async fn publish_idle(&self) -> Result<(), StoreError> {
        self.db
            .query(format!(
                "UPSERT type::record('{NODES_TABLE}', $node) SET low = NONE, expires = $now RETURN NONE"
            ))
            .bind(("node", self.node.to_string()))
            .bind(("now", unix_ms_now()))
            .await?
            .check()?;
        Ok(())
    }

    /// The lowest low stamp of the other nodes' held rows that have not
    /// run out, if there are any (idle rows promise no write below
    /// anything read after them).
    pub(crate) async fn peers_low_stamp(
        &self,
        node: &str,
    ) -> Result<Option<crate::clock::Stamp>, StoreError> {
        let lows: Vec<i64> = self
            .db
            .query(format!(
                "SELECT VALUE low FROM {NODES_TABLE}
                 WHERE low != NONE AND expires >= $now AND id != type::record('{NODES_TABLE}', $node)"
            ))
            .bind(("node", node.to_owned()))
            .bind(("now", unix_ms_now()))
            .await?
            .check()?
            .take(0)?;
        Ok(lows
            .into_iter()
            .min()
            .map(|low| crate::clock::Stamp(low.max(0) as u64)))
    }
}

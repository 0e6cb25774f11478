//! The nodes sharing this database, and how far each one's writes are
//! committed: each node keeps a row with its *low stamp* (no write of its
//! still to commit has a lower stamp) and an expiry, so that the others
//! may deliver its writes without waiting for the settle window (see
//! `peers`).

use std::time::Duration;

use super::schema::NODES_TABLE;
use super::{Store, StoreError};
use crate::clock::{Stamp, unix_ms_now};

impl Store {
    /// Publishes this node's low stamp, valid for `ttl` unless published
    /// again. Not a tracked write: the table has no changefeed.
    pub(crate) async fn share_low_stamp(
        &self,
        node: &str,
        low: Stamp,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires =
            unix_ms_now().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.db
            .query(format!(
                "UPSERT type::record('{NODES_TABLE}', $node) SET low = $low, expires = $expires RETURN NONE"
            ))
            .bind(("node", node.to_owned()))
            .bind(("low", low.0 as i64))
            .bind(("expires", expires))
            .await?
            .check()?;
        Ok(())
    }

    /// The lowest low stamp of the other live nodes, if there are any.
    pub(crate) async fn peers_low_stamp(&self, node: &str) -> Result<Option<Stamp>, StoreError> {
        let lows: Vec<i64> = self
            .db
            .query(format!(
                "SELECT VALUE low FROM {NODES_TABLE}
                 WHERE expires >= $now AND id != type::record('{NODES_TABLE}', $node)"
            ))
            .bind(("node", node.to_owned()))
            .bind(("now", unix_ms_now()))
            .await?
            .check()?
            .take(0)?;
        Ok(lows.into_iter().min().map(|low| Stamp(low.max(0) as u64)))
    }

    /// Removes this node's row, so that the others stop waiting for it.
    pub(crate) async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        self.db
            .query(format!("DELETE type::record('{NODES_TABLE}', $node)"))
            .bind(("node", node.to_owned()))
            .await?
            .check()?;
        Ok(())
    }
}
